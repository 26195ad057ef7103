"""Admission beside the request: a streamed generation goes upstream while Redis decides.

A budgeted streamed generation (``"stream": true`` to a generation route) normally waits
for two Redis answers before it is forwarded: its request-rate lease and its token
reservation. Their round trips are the gateway's largest share of the stream's time to
first token (docs/benchmarks.md, S1). When this replica's last answers for the caller left
room for the request, the gateway forwards it at once and Redis decides while the
upstream works; the upstream's answer is held until the decision:

- admitted: the answer goes out with the RateLimit-* and token-budget headers, exactly as
  if the checks had come first;
- refused (another replica spent the room in the meantime): the client gets the same 429
  it would have got, the upstream connection is closed (the inference service cancels
  the generation, which it sees as a client that left) and the reservation is given back
  (settled at zero tokens, so a settlement the service sends later charges nothing).

Nothing reaches the client before the decision. What a refused request can cost is the
upstream's work until the close — bounded: a replica only forwards ahead while the room
it last saw covers every request it has forwarded ahead and not yet heard back about (one
request-rate slot and the token estimate each). A non-streamed request, a WebSocket, a
deterministic completion (the gateway's cache) and a caller not known to have room wait
for the answers first, as before. ``GATEWAY_SPECULATIVE_ADMISSION=false`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Scope, Send

from gateway.core.limits import LimitPolicy
from gateway.core.refusals import CHECK_FAILED
from gateway.core.security import Decision
from gateway.core.token_limits import TokenGate, parse_body
from gateway.services.rate_limit import RateLimiter

logger = logging.getLogger("switchboard.gateway")


class AdmissionRefused(Exception):
    """Raised by :class:`HeldSend` when the checks refused a request sent ahead: nothing
    was sent to the client; the dispatcher answers with ``decision`` (a 429)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.detail)
        self.decision = decision


class HeldSend:
    """The client's ``send`` for a request sent ahead of its checks: the first message
    waits for the checks' decision, then goes out with its response headers; a refusal
    raises :class:`AdmissionRefused` before anything is sent."""

    __slots__ = ("_decided", "_pending", "_send")

    def __init__(self, send: Send, pending: asyncio.Future[Decision]) -> None:
        self._send = send
        self._pending = pending
        self._decided = False

    async def __call__(self, message: Message) -> None:
        if not self._decided:
            decision = await asyncio.shield(self._pending)
            if decision.status:
                raise AdmissionRefused(decision)
            self._decided = True
            if message["type"] == "http.response.start" and decision.response_headers:
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), *decision.response_headers],
                }
        await self._send(message)


class AheadLedger:
    """What this replica has sent ahead of its checks and not yet heard back about, per
    rate-limit key (requests) and per budget key (estimated tokens)."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.tokens: dict[str, int] = {}

    def fits(self, rate_key: str, rate_room: int, budget_key: str, budget_room: int,
             estimate: int) -> bool:  # fmt: skip
        """Whether one more request of ``estimate`` tokens fits the room last seen, on top
        of what is already out ahead."""
        return (
            self.requests.get(rate_key, 0) < rate_room
            and self.tokens.get(budget_key, 0) + estimate <= budget_room
        )

    def add(self, rate_key: str, budget_key: str, estimate: int) -> Callable[[], None]:
        """Count one request as out ahead, from now (so the next request's :meth:`fits`
        sees it); call the returned function when its checks answered."""
        self.requests[rate_key] = self.requests.get(rate_key, 0) + 1
        self.tokens[budget_key] = self.tokens.get(budget_key, 0) + estimate

        def done() -> None:
            _take(self.requests, rate_key, 1)
            _take(self.tokens, budget_key, estimate)

        return done


def _take(counts: dict[str, int], key: str, amount: int) -> None:
    left = counts.get(key, 0) - amount
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class SendAhead:
    """Decides which requests go ahead of their checks, and runs the checks beside them."""

    def __init__(self, tokens: TokenGate, limits: LimitPolicy, limiter: RateLimiter) -> None:
        self.tokens = tokens
        self.limits = limits
        self.limiter = limiter
        self.ledger = AheadLedger()

    def start(
        self,
        scope: Scope,
        service: str,
        decision: Decision,
        rate: asyncio.Future[Decision],
        body: bytes,
        document: dict[str, Any] | None,
    ) -> tuple[Decision, asyncio.Future[Decision]] | None:
        """For a budgeted streamed generation whose room covers it: the decision to proxy
        with (its reservation header added) and the future of its checks, started now
        (``rate``: its rate-limit check, already running; ``document``: ``body`` parsed,
        if it was). None: the checks come first."""
        tokens = self.tokens
        rate_rule = self.limits.for_request(scope, service, decision.principal)
        if document is None:
            document = parse_body(body)
        cost = None if document is None else tokens.stream_cost(scope, decision, document)
        if rate_rule is None or cost is None:
            return None
        (rate_key, _), (budget, estimate) = rate_rule, cost
        rate_room, budget_room = self.limiter.room(rate_key), tokens.room(budget.key)
        if not self.ledger.fits(rate_key, rate_room, budget.key, budget_room, estimate):
            return None
        ahead = tokens.ahead(budget, estimate, decision)

        async def checks() -> Decision:
            try:
                try:
                    budgeted = await tokens.confirm(ahead, decision)
                finally:
                    limited = await rate
                if limited.status and not budgeted.status:
                    await tokens.give_back(ahead.decision)  # refused: nothing was spent
                return with_rate(budgeted, limited)
            except Exception:
                logger.exception("authorization failed for %s", scope["path"])
                await tokens.give_back(ahead.decision)
                return CHECK_FAILED

        done = self.ledger.add(rate_key, budget.key, estimate)
        pending = asyncio.ensure_future(checks())
        pending.add_done_callback(lambda _: done())  # answered, failed or cancelled
        return ahead.decision, pending


def with_rate(decision: Decision, limited: Decision) -> Decision:
    """``decision`` once its rate-limit check (run beside it) answered: the limit's 429
    first, else the decision with the RateLimit-* headers ahead of its own, as when the
    limit is checked first."""
    if limited.status:
        return limited
    return decision.but(response_headers=[*limited.response_headers, *decision.response_headers])
