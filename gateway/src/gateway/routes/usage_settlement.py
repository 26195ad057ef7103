"""``POST /gateway/internal/usage``: a service reports what a reserved generation used.

The inference service calls it when a generation that carried an
``X-Switchboard-Token-Reservation`` has finished; the gateway then replaces that
reservation's estimate with the actual tokens in the caller's token budget
(``TokenBudget.settle``). Only calls signed with ``SWITCHBOARD_INTERNAL_SECRET``
(``switchboard_common.internal_calls``) are accepted — a client that reaches this path
through the gateway's public port gets 401 like anyone without the secret. Not in the
public OpenAPI document: it is no client's business.
"""

import asyncio

from fastapi import APIRouter, Request
from pydantic import ValidationError

from gateway.dependencies import SettingsDep
from gateway.services.token_budget import BudgetUnavailable, InvalidReservation, TokenBudget
from switchboard_common import (
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableContent,
)
from switchboard_common.internal_calls import (
    CALL_SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    USAGE_SETTLEMENT_PATH,
    InvalidInternalCall,
    UsageSettlement,
    UsageSettlementResult,
    verify_internal_call,
)

router = APIRouter(tags=["gateway"])

# A report is ~150 bytes. The route is on the public port and its body is read before the
# signature can be checked, so bound both its size and how long it may take to arrive.
MAX_REPORT_BYTES = 4096
REPORT_READ_TIMEOUT_S = 5.0


async def _read_report(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > MAX_REPORT_BYTES:
        raise PayloadTooLarge(
            f"A usage report is a JSON body of at most {MAX_REPORT_BYTES} bytes with a "
            "Content-Length."
        )
    try:
        async with asyncio.timeout(REPORT_READ_TIMEOUT_S):
            return await request.body()
    except TimeoutError:
        raise RequestTimeout(
            f"The usage report did not arrive within {REPORT_READ_TIMEOUT_S:g} s."
        ) from None


@router.post(USAGE_SETTLEMENT_PATH, include_in_schema=False)
async def settle_usage(request: Request, settings: SettingsDep) -> UsageSettlementResult:
    body = await _read_report(request)  # the MAC covers the raw bytes: check it first
    try:
        verify_internal_call(
            settings.internal_secret,
            USAGE_SETTLEMENT_PATH,
            body,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(CALL_SIGNATURE_HEADER),
        )
    except InvalidInternalCall as exc:
        raise Unauthorized(f"Internal calls only: {exc}") from exc
    try:
        report = UsageSettlement.model_validate_json(body)
    except ValidationError as exc:
        raise UnprocessableContent(
            "Not a usage report.", errors=exc.errors(include_url=False, include_context=False)
        ) from exc
    budget: TokenBudget = request.app.state.token_budget
    try:
        settled = await budget.settle(report)
    except InvalidReservation as exc:
        raise UnprocessableContent(str(exc)) from exc
    except BudgetUnavailable as exc:
        raise ServiceUnavailable(
            "Token budgets cannot be settled right now (Redis unavailable).", retry_after=1
        ) from exc
    return UsageSettlementResult(settled=settled)
