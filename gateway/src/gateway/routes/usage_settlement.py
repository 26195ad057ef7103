"""``POST /gateway/internal/usage``: a service reports what a reserved generation used.

The inference service calls it when a generation that carried an
``X-Switchboard-Token-Reservation`` has finished; the gateway then replaces that
reservation's estimate with the actual tokens in the caller's token budget
(``TokenBudget.settle``). Only calls signed with ``SWITCHBOARD_INTERNAL_SECRET``
(``switchboard_common.internal_calls``) are accepted — a client that reaches this path
through the gateway's public port gets 401 like anyone without the secret. Not in the
public OpenAPI document: it is no client's business.

The body is one report (``UsageSettlement``) or, when the service's reports queued up, a
batch of up to 64 (``UsageSettlementBatch``, settled concurrently, answered per report).

It is called once per budgeted generation (or batch), so it is served as raw ASGI by the dispatcher
(``core/dispatch.py``) rather than through FastAPI's routing, dependency solving, response
validation and the OpenTelemetry middleware, which were most of its cost. It still runs
inside the app's user middleware (request ids, body limit, metrics) and a server span of
its own, and its refusals are rendered by the app's exception handlers: its answers, logs,
metrics and traces look as they did.
"""

import asyncio

from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.services.token_budget import BudgetUnavailable, InvalidReservation, TokenBudget
from switchboard_common import (
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableContent,
)
from switchboard_common.app import user_middleware_around
from switchboard_common.asgi_body import ClientDisconnected, read_body
from switchboard_common.body_limit import declared_length
from switchboard_common.exception_handlers import respond_with_app_handler
from switchboard_common.internal_calls import (
    CALL_SIGNATURE_HEADER,
    MAX_SETTLEMENT_BATCH,
    TIMESTAMP_HEADER,
    USAGE_SETTLEMENT_PATH,
    InvalidInternalCall,
    SettlementOutcome,
    UsageSettlement,
    UsageSettlementBatch,
    UsageSettlementBatchResult,
    UsageSettlementResult,
    verify_internal_call,
)
from switchboard_common.server_span import server_span

# A report is ~150-500 bytes. The route is on the public port and its body is read before
# the signature can be checked, so bound both its size and how long it may take to arrive.
MAX_REPORT_BYTES = 1024 * MAX_SETTLEMENT_BATCH
REPORT_READ_TIMEOUT_S = 5.0
_BODY: TypeAdapter[UsageSettlement | UsageSettlementBatch] = TypeAdapter(
    UsageSettlement | UsageSettlementBatch
)
_JSON = (b"content-type", b"application/json")


class _Route:
    """What Starlette's router would have put in ``scope["route"]``, for the metrics label."""

    path = USAGE_SETTLEMENT_PATH


class UsageSettlementEndpoint:
    """``USAGE_SETTLEMENT_PATH`` as an ASGI app (see the module docstring); ``api`` is the
    gateway's FastAPI app, whose state, middleware and exception handlers it uses."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self.inner: ASGIApp | None = None  # built on first use, once every middleware is in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner is None:
            self.inner = user_middleware_around(self.api, self._serve)
        scope["app"] = self.api  # as Starlette sets it (the exception handlers' request)
        scope["route"] = _Route  # metrics label it with the route, as before
        with server_span(scope, USAGE_SETTLEMENT_PATH, send) as traced_send:
            await self.inner(scope, receive, traced_send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["method"] != "POST":
                raise HTTPException(405, headers={"Allow": "POST"})
            result = await self._settle(scope, receive)
        except ClientDisconnected:
            return  # nobody to answer; nothing was settled
        except Exception as exc:  # rendered as FastAPI would: problem+json (500 logged)
            await respond_with_app_handler(self.api, exc, scope, receive, send)
            return
        body = result.model_dump_json().encode()
        length = (b"content-length", str(len(body)).encode())
        await send({"type": "http.response.start", "status": 200, "headers": [_JSON, length]})
        await send({"type": "http.response.body", "body": body})

    async def _settle(self, scope: Scope, receive: Receive) -> BaseModel:
        declared = declared_length(scope)
        if declared is None or not 0 <= declared <= MAX_REPORT_BYTES:
            raise PayloadTooLarge(
                f"A usage report is a JSON body of at most {MAX_REPORT_BYTES} bytes with a "
                "Content-Length."
            )
        try:
            async with asyncio.timeout(REPORT_READ_TIMEOUT_S):
                body = await read_body(receive)
        except TimeoutError:
            raise RequestTimeout(
                f"The usage report did not arrive within {REPORT_READ_TIMEOUT_S:g} s."
            ) from None
        headers = Headers(scope=scope)
        try:  # the MAC covers the raw bytes: checked before anything is parsed
            verify_internal_call(
                self.api.state.settings.internal_secret,
                USAGE_SETTLEMENT_PATH,
                body,
                headers.get(TIMESTAMP_HEADER),
                headers.get(CALL_SIGNATURE_HEADER),
            )
        except InvalidInternalCall as exc:
            raise Unauthorized(f"Internal calls only: {exc}") from exc
        try:
            parsed = _BODY.validate_json(body)
        except ValidationError as exc:
            raise UnprocessableContent(
                "Not a usage report (or a batch of them).",
                errors=exc.errors(include_url=False, include_context=False),
            ) from exc
        budget: TokenBudget = self.api.state.token_budget
        try:
            if isinstance(parsed, UsageSettlementBatch):
                return await _settle_batch(budget, parsed.reports)
            return UsageSettlementResult(settled=await budget.settle(parsed))
        except InvalidReservation as exc:
            raise UnprocessableContent(str(exc)) from exc
        except BudgetUnavailable as exc:
            raise ServiceUnavailable(
                "Token budgets cannot be settled right now (Redis unavailable).", retry_after=1
            ) from exc


async def _settle_batch(
    budget: TokenBudget, reports: list[UsageSettlement]
) -> UsageSettlementBatchResult:
    """Settle every report at once; one Redis failure fails the batch (503: the sender
    retries it whole, and the reports settled meanwhile are duplicates then)."""
    outcomes = await asyncio.gather(*(budget.settle(r) for r in reports), return_exceptions=True)
    results: list[SettlementOutcome] = []
    for outcome in outcomes:
        if isinstance(outcome, InvalidReservation):
            results.append("invalid")
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            results.append("settled" if outcome else "duplicate")
    return UsageSettlementBatchResult(results=results)
