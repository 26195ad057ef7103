"""The gateway's top-level ASGI app: a prefix lookup decides who serves a request.

Proxied prefixes (``/auth``, ``/inference``, …) are authorized (``core/security.py``) and
go straight to the raw proxy; usage reports to ``routes/usage_settlement.py`` (raw ASGI
too); everything else (``/health``, ``/ready``, ``/metrics``, ``/docs``, ``/openapi.json``)
goes to the gateway's own FastAPI app. The lifespan goes to FastAPI, which starts the
upstream clients and the authenticator.

Client limits are checked here, before anything else runs: oversized or too many headers
→ 431 (uvicorn's httptools parser has no limit of its own); a request body that goes
silent for longer than ``body_timeout_s`` → 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.core.completion_cache import deterministic_document
from gateway.core.limits import LimitPolicy
from gateway.core.priority import PriorityPolicy
from gateway.core.refusals import CHECK_FAILED, body_timeout, refuse, refuse_http, refuse_websocket
from gateway.core.responses import send_unexpected_error
from gateway.core.route_table import RouteTable
from gateway.core.security import Authenticator, Decision
from gateway.core.speculation import AdmissionRefused, HeldSend, SendAhead, with_rate
from gateway.core.token_limits import TokenGate, parse_body
from gateway.services.completion_cache import CompletionCache, CompletionLookup
from gateway.services.http_proxy import HttpProxy
from gateway.services.rate_limit import RateLimiter
from gateway.services.request_body import BodyDeadline, ClientBodyTimeout, buffer_body
from gateway.services.response_cache import ResponseCache
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common.internal_calls import USAGE_SETTLEMENT_PATH
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway")


class GatewayApp:
    def __init__(
        self,
        api: FastAPI,
        table: RouteTable,
        auth: Authenticator,
        limits: LimitPolicy,
        limiter: RateLimiter,
        http_proxy: HttpProxy,
        ws_proxy: WebSocketProxy,
        tokens: TokenGate | None = None,
        *,
        max_header_bytes: int = 32 * 1024,
        max_header_count: int = 100,
        body_timeout_s: float = 30.0,
        priorities: PriorityPolicy | None = None,
        cache: ResponseCache | None = None,
        completions: CompletionCache | None = None,
        speculative: bool = True,
        settlement: ASGIApp | None = None,
    ) -> None:
        self.api = api
        self.table = table
        self.auth = auth
        self.limits = limits
        self.limiter = limiter
        self.http_proxy = http_proxy
        self.ws_proxy = ws_proxy
        self.tokens = tokens
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.body_timeout_s = body_timeout_s
        self.priorities = priorities
        self.cache = cache  # GET response cache (docs/caching.md); None: off
        self.completions = completions  # deterministic completions (L1); None: off
        # streams sent ahead of their checks (core/speculation.py); None: off
        self.ahead = SendAhead(tokens, limits, limiter) if speculative and tokens else None
        self.settlement = settlement  # the services' usage reports (one per generation)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            bad_head, has_body = self._bad_head(scope["headers"])
            if bad_head is not None:
                await refuse(scope, receive, send, bad_head)
                return
            service = self.table.resolve(scope["path"])
            if service is not None:
                if has_body and kind == "http":
                    # every body read below (token estimate, proxy) is bounded in time
                    receive = BodyDeadline(receive, self.body_timeout_s)
                request_id = request_id_from_headers(scope["headers"])
                scope["switchboard.request_id"] = request_id
                decision, receive, completion, pending = await self._admit(scope, receive, service)
                if kind == "http":
                    if pending is not None:  # sent ahead of its checks (core/speculation.py)
                        await self._proxy_ahead(scope, receive, send, service, decision, pending)
                    elif decision.status:
                        await refuse_http(scope, send, decision, request_id)
                    elif completion is not None and completion.hit is not None:
                        assert self.completions is not None
                        await self.completions.serve(
                            completion, scope, send, decision.response_headers
                        )
                    else:
                        await self._proxy_http(scope, receive, send, service, decision, completion)
                elif decision.status:
                    await refuse_websocket(scope, receive, send, decision, request_id)
                else:
                    principal = decision.principal.sub if decision.principal else None
                    probe = None if self.tokens is None else self.tokens.probe_for(scope, decision)
                    await self.ws_proxy(
                        scope, receive, send, service, decision.identity, principal, probe
                    )
                return
            if kind == "http" and self.settlement and scope["path"] == USAGE_SETTLEMENT_PATH:
                await self.settlement(scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def _admit(
        self, scope: Scope, receive: Receive, service: str
    ) -> tuple[Decision, Receive, CompletionLookup | None, asyncio.Future[Decision] | None]:
        """Every check before the request goes anywhere: who is calling and the priority,
        the request-rate limit, then for generation routes the completion cache (L1) and
        the token budget (both may read a small body; the receive handed back replays it).

        A budgeted POST from a caller with room asks Redis for its rate-limit lease and
        its token reservation at once, with the sequential outcome (a rate-limit 429 gives
        the reservation back); callers at or over a limit and deterministic completions
        are checked first. A streamed one is not held at all: the fourth value is then the
        future of its checks, and it is proxied at once, its answer held until they
        decide (``core/speculation.py``)."""
        completion: CompletionLookup | None = None
        rate: asyncio.Future[Decision] | None = None
        decision = Decision()
        try:
            decision = await self.identify(scope, service)
            if decision.status:
                return decision, receive, None, None
            if self._overlap(scope, service, decision):
                rate = asyncio.ensure_future(self._rate_limit(scope, service, decision))
            else:
                decision = await self._rate_limit(scope, service, decision)
            body: bytes | None = None
            document: dict[str, Any] | None = None  # the body parsed, when it was
            completions = self.completions
            if not decision.status and completions and completions.applies(scope):
                body, receive = await buffer_body(scope, receive)
                document = None if body is None else parse_body(body)  # parsed once, here
                deterministic = document is not None and deterministic_document(
                    scope["path"], document
                )
                if rate is not None and (body is None or deterministic):
                    decision, rate = with_rate(decision, await rate), None
                if not decision.status and deterministic and body is not None:
                    # a deterministic completion may be answered from the gateway's cache
                    # (docs/caching.md); a hit is charged in the lookup's own Redis call
                    decision, completion = await self._completion_lookup(
                        completions, scope, body, decision
                    )
                elif not decision.status and body is not None:
                    completions.bypass()
            ahead = self.ahead
            if rate is not None and completion is None and not decision.status and ahead:
                if body is None:
                    body, receive = await buffer_body(scope, receive)
                sent = body is not None and ahead.start(
                    scope, service, decision, rate, body, document
                )
                if sent:
                    rate = None  # the checks own it now
                    return sent[0], receive, None, sent[1]
            if completion is not None and completion.charged is not None:
                pass  # admitted or refused (429) by the lookup's own charge
            elif (
                not decision.status
                and self.tokens is not None
                and (scope["type"] == "websocket" or scope["method"] == "POST")
            ):
                # token budgets of generation routes (docs/rate-limits.md); a cache hit
                # is charged its stored usage instead of an estimate
                cost = None if completion is None else completion.tokens
                decision, receive = await self.tokens.admit(
                    scope, receive, decision, body=body, cost=cost, document=document
                )
            if rate is not None:
                limited, rate = await rate, None
                if limited.status and self.tokens is not None:
                    await self.tokens.give_back(decision)  # refused: nothing was spent
                decision = with_rate(decision, limited)
        except ClientBodyTimeout as exc:
            decision = body_timeout(exc)
        except Exception:
            logger.exception("authorization failed for %s", scope["path"])
            if self.tokens is not None:
                await self.tokens.give_back(decision)  # a reservation made before the error
            decision = CHECK_FAILED
        finally:
            if rate is not None:  # refused early (e.g. 408): let a granted lease be recorded
                with suppress(Exception):
                    await rate
        return decision, receive, completion, None

    async def _proxy_ahead(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        decision: Decision,
        pending: asyncio.Future[Decision],
    ) -> None:
        """Proxy a request sent ahead of its checks; its answer waits for them, and a
        refusal closes the upstream exchange and answers the 429 instead."""
        held = HeldSend(send, pending)  # it adds the response headers of the checks' decision
        try:
            await self._proxy_http(scope, receive, held, service, decision.but(response_headers=[]))
        except AdmissionRefused as refused:
            await refuse_http(scope, send, refused.decision, scope["switchboard.request_id"])
        finally:
            with suppress(Exception):
                await pending  # a client that left early: the checks still end (and count)

    def _overlap(self, scope: Scope, service: str, decision: Decision) -> bool:
        """Whether the rate-limit check may run beside the token reservation: a plain HTTP
        POST that spends a token budget, from a caller whose last check left room."""
        tokens = self.tokens
        if tokens is None or scope["type"] != "http" or scope["method"] != "POST":
            return False
        rule = self.limits.for_request(scope, service, decision.principal)
        if rule is None or not self.limiter.room(rule[0]):
            return False
        return tokens.rule(scope, decision) is not None

    def _bad_head(self, headers: list[tuple[bytes, bytes]]) -> tuple[Decision | None, bool]:
        """The refusal of a request head the gateway will not serve (None: it is fine), and
        whether a body follows the head (one pass over the headers for both).

        The HTTP parser already rejects broken framing (bare CR, duplicate Content-Length,
        Content-Length with Transfer-Encoding); these are the cases it lets through."""
        if len(headers) > self.max_header_count:
            detail = (
                f"The request has {len(headers)} header fields; at most "
                f"{self.max_header_count} are accepted."
            )
            return Decision(status=431, detail=detail), False
        size = hosts = 0
        final_coding = b""
        has_body = False
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                final_coding = value.rsplit(b",", 1)[-1].strip().lower()
                has_body = True
        if size > self.max_header_bytes:
            detail = (
                f"The request's headers total {size} bytes; at most {self.max_header_bytes} "
                "are accepted. Send large data in the body."
            )
            return Decision(status=431, detail=detail), False
        if hosts > 1:  # RFC 9112 §3.2: which one would a service believe?
            return Decision(status=400, detail="The request has more than one Host header."), False
        if final_coding and final_coding != b"chunked":
            # RFC 9112 §6.3: the body's length is unknowable; the connection must close
            refusal = Decision(
                status=400,
                detail="A request's Transfer-Encoding must end with 'chunked'.",
                response_headers=[(b"connection", b"close")],
            )
            return refusal, False
        return None, has_body

    async def check(self, scope: Scope, service: str) -> Decision:
        """What the request head alone decides: who is calling (401/403), the priority
        forwarded to inference (400 for a malformed ask) and the request-rate limit (429).
        Also the whole answer of ``/gateway/verify`` (forwardAuth)."""
        decision = await self.identify(scope, service)
        if not decision.status:
            decision = await self._rate_limit(scope, service, decision)
        return decision

    async def identify(self, scope: Scope, service: str) -> Decision:
        """Who is calling (401/403) and the priority forwarded to inference (400)."""
        decision = await self.auth.authorize(scope, service)
        if not decision.status and self.priorities is not None:
            decision = self.priorities.apply(scope, service, decision)
        return decision

    async def _completion_lookup(
        self, completions: CompletionCache, scope: Scope, body: bytes, decision: Decision
    ) -> tuple[Decision, CompletionLookup | None]:
        """Look the completion up (the body is replayed to the proxy after); a hit the
        caller has a budget for is charged by the same Redis call, and the decision
        carries the budget's answer (429 when spent)."""
        tokens = self.tokens
        rule = None if tokens is None else tokens.rule(scope, decision)
        budget = None if tokens is None or rule is None else tokens.budget
        completion = await completions.lookup(scope, body, budget, rule)
        if completion is None or completion.charged is None or tokens is None or rule is None:
            return decision, completion
        decision = tokens.decide(decision, rule, completion.charged, completion.tokens or 0)
        return decision, completion

    async def _rate_limit(self, scope: Scope, service: str, decision: Decision) -> Decision:
        """The decision, refused with 429 when the caller is over its limit; on success the
        RateLimit-* headers ride along to the response."""
        rule = self.limits.for_request(scope, service, decision.principal)
        if rule is None:
            return decision
        outcome = await self.limiter.hit(*rule)
        if outcome.allowed:
            return decision.but(response_headers=outcome.headers())
        return Decision(
            status=429,
            detail=f"Rate limit of {outcome.limit} requests reached for {service}; "
            f"retry in {max(1, round(outcome.reset_s))} s.",
            response_headers=outcome.headers(),
            extensions={"limit": outcome.limit},
        )

    async def _proxy_http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        decision: Decision,
        completion: CompletionLookup | None = None,
    ) -> None:
        started = False
        capture = None
        if completion is not None and self.completions is not None:  # a miss to keep
            capture = self.completions.capture(send, decision.response_headers)
            send = capture.send

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        identity = decision.identity if decision.principal is not None else None
        cache = self.cache
        plan = None if cache is None else cache.plan(scope["method"], scope["path"])
        try:
            if cache is None or plan is None:
                await self.http_proxy(
                    scope, receive, tracked_send, service, identity, decision.response_headers
                )
            else:  # the cache serves a hit itself, or proxies and stores / invalidates
                forward = partial(
                    self.http_proxy,
                    service=service,
                    identity=identity,
                    response_headers=decision.response_headers,
                )
                await cache.handle(
                    plan,
                    scope,
                    receive,
                    tracked_send,
                    forward,
                    service,
                    decision.principal,
                    decision.response_headers,
                )
        except AdmissionRefused:
            raise  # sent ahead and refused: nothing went out, the caller answers the 429
        except ClientBodyTimeout as exc:
            logger.info("client body timeout on %s %s", scope["method"], scope["path"])
            if not started:  # always the case today: the body is read before the answer
                await refuse_http(scope, send, body_timeout(exc), scope["switchboard.request_id"])
        except Exception:
            logger.exception("proxy error for %s %s", scope["method"], scope["path"])
            if started:
                raise
            await send_unexpected_error(scope, send)
        else:
            if capture is not None and completion is not None and self.completions is not None:
                await self.completions.keep(completion, capture)  # after the last byte went out

    @property
    def state(self) -> object:
        """The FastAPI app's state (settings, upstreams), for tests and tools."""
        return self.api.state
