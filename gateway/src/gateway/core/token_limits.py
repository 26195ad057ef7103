"""Which requests spend a token budget, under which key, and what they are estimated at.

Budgets (``GATEWAY_TOKEN_LIMITS``, per tier like the request limits) apply to generation
routes only — the ones whose cost is tokens: ``POST`` to :data:`GENERATION_PATHS`, and the
WebSocket chat at its handshake (which only needs *some* budget left; its generations are
charged as the inference service reports them). Keyed per principal (user, or API key),
across services; admins and public routes are not budgeted.

The estimate a generation is pre-charged at, from the request body when the gateway has it
whole (bodies up to 1 MiB with a Content-Length): ``ceil(prompt characters / 4)`` (text in
``messages[].content``, ``prompt``, ``system``, ``suffix``, ``code``) plus the completion it
may ask for (``max_tokens``, ``max_completion_tokens``, ``options.num_predict``), capped at
``GATEWAY_TOKEN_ESTIMATE_MAX_COMPLETION`` (which is also used when it asks for none). A
streamed or larger body is estimated from its Content-Length (``bytes / 4``) or, with none,
at the completion cap alone. The estimate only decides admission near the limit; what is
charged in the end is what the inference service reports.

A completion the gateway answers from its own cache (``services/completion_cache.py``) is
charged the usage stored with it, at admission, instead of an estimate: same window, same
429 when it does not fit, no settlement to wait for.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.types import Receive, Scope

from gateway.config import Settings
from gateway.core.security import Decision
from gateway.models.limits import Limit, limit_for, parse_limits
from gateway.services.request_body import buffer_body, content_length, disconnected
from gateway.services.token_budget import (
    BudgetUnavailable,
    InvalidReservation,
    Reservation,
    TokenBudget,
    TokenOutcome,
)
from switchboard_common.identity import Principal
from switchboard_common.internal_calls import TOKEN_RESERVATION_HEADER, UsageSettlement

GENERATION_PATHS = frozenset(
    {
        "/inference/chat",
        "/inference/generate",
        "/v1/chat/completions",
        "/v1/completions",
        "/api/chat",
        "/api/generate",
        "/code/analyze",
    }
)
WEBSOCKET_PATHS = frozenset({"/inference/ws"})
CHARS_PER_TOKEN = 4
_RESERVATION = TOKEN_RESERVATION_HEADER.lower().encode()


@dataclass(frozen=True, slots=True)
class TokenRule:
    key: str
    limit: Limit
    probe: bool  # a WebSocket handshake: check only, charge nothing yet


class TokenLimitPolicy:
    def __init__(self, settings: Settings) -> None:
        self.tiers = parse_limits(settings.token_limits)
        self.any_limited = any(self.tiers.values())
        self.max_completion = settings.token_estimate_max_completion

    def for_request(self, scope: Scope, principal: Principal | None) -> TokenRule | None:
        if not self.any_limited or principal is None or principal.role == "admin":
            return None
        path: str = scope["path"]
        if scope["type"] == "websocket":
            if path not in WEBSOCKET_PATHS:
                return None
            probe = True
        elif scope["method"] == "POST" and path in GENERATION_PATHS:
            probe = False
        else:
            return None
        # a tier listed as `0` is unlimited, not "use the default"
        limit = limit_for(self.tiers, principal.tier)
        if limit is None:
            return None
        # One budget per user, whichever credential it uses: a user's API keys (up to 100)
        # must not each bring a budget of their own.
        return TokenRule(f"u:{principal.sub}", limit, probe)

    def estimate(self, body: bytes | None, content_length: int | None, path: str = "") -> int:
        """Tokens to pre-charge: from the body when it was read, else from its size."""
        if body is None:
            prompt = (content_length or 0) // CHARS_PER_TOKEN
            return max(1, prompt + self.max_completion)
        document = parse_body(body)
        if document is None:
            return max(1, len(body) // CHARS_PER_TOKEN + self.max_completion)
        return self.estimate_document(document, path)

    def estimate_document(self, document: dict[str, Any], path: str) -> int:
        """The estimate of a body already parsed (a JSON object)."""
        prompt = -(-_prompt_chars(document) // CHARS_PER_TOKEN)
        return max(1, prompt + self._completion(document, path))

    def _completion(self, document: dict[str, Any], path: str) -> int:
        """The completion length the inference service will let the model produce, read
        from the field it reads (anything else is ignored by it, so it must be here too):
        ``/v1`` ``max_completion_tokens or max_tokens``; elsewhere ``options.num_predict``.
        Absent or "until the model stops" (-1/-2) counts as the cap."""
        if path.startswith("/v1/"):
            asked = document.get("max_completion_tokens") or document.get("max_tokens")
        else:
            options = document.get("options")
            asked = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 0:
            return min(asked, self.max_completion)
        return self.max_completion


def parse_body(body: bytes) -> dict[str, Any] | None:
    """A generation body as a JSON object; None when it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _text_chars(value: object) -> int:
    """Characters of text in a field that is a string, a list of strings, or a list of
    content parts (``{"type": "text", "text": …}``)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        total = 0
        for item in value:
            if isinstance(item, str):
                total += len(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                total += len(item["text"])
        return total
    return 0


def _prompt_chars(document: dict[str, Any]) -> int:
    total = sum(_text_chars(document.get(name)) for name in ("prompt", "system", "suffix", "code"))
    messages = document.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                total += _text_chars(message.get("content"))
    return total


BudgetProbe = Callable[[], Awaitable[float | None]]


@dataclass(frozen=True, slots=True)
class Ahead:
    """A streamed generation about to be sent ahead of its reservation (``core/speculation``):
    its reservation is made up front, so the header can go upstream before Redis answers."""

    rule: TokenRule
    estimate: int
    reservation: Reservation
    decision: Decision  # the caller's decision plus the reservation header to forward


_ROOM_KEYS = 50_000  # budget keys whose last-seen room this replica remembers


class TokenGate:
    """Admits a budgeted request (its reservation rides to the service with the identity
    headers, its budget headers to the client) or turns it into a 429."""

    def __init__(self, policy: TokenLimitPolicy, budget: TokenBudget) -> None:
        self.policy = policy
        self.budget = budget
        # tokens left in each budget as Redis last answered this replica (a hint: other
        # replicas spend the same budgets), for sending streams ahead of their checks
        self._room: dict[str, int] = {}

    def room(self, key: str) -> int:
        """Tokens left in budget ``key`` when Redis last answered (0: unknown)."""
        return self._room.get(key, 0)

    def stream_cost(
        self, scope: Scope, decision: Decision, document: dict[str, Any]
    ) -> tuple[TokenRule, int] | None:
        """The budget and estimate of a budgeted generation whose (parsed) body asks for a
        stream; None when the request is not one."""
        rule = self.rule(scope, decision)
        path: str = scope["path"]
        if rule is None or rule.probe or not wants_stream(path, document):
            return None
        return rule, self.policy.estimate_document(document, path)

    def ahead(self, rule: TokenRule, estimate: int, decision: Decision) -> Ahead:
        """A reservation made before Redis is asked (:meth:`confirm` asks), with the
        decision that forwards it."""
        reservation = self.budget.new_reservation(rule.key, rule.limit)
        sealed = self.budget.seal(reservation)
        identity = [*decision.identity, (_RESERVATION, sealed.encode())]
        return Ahead(rule, estimate, reservation, decision.but(identity=identity))

    async def confirm(self, ahead: Ahead, decision: Decision) -> Decision:
        """Ask Redis for the reservation of a request already sent ahead: ``decision``
        with the budget headers, or the 429. A refused reservation is marked settled at
        zero, so the usage the service may report for it later charges nothing."""
        outcome = await self.budget.reserve(
            ahead.rule.key, ahead.rule.limit, ahead.estimate, reservation=ahead.reservation
        )
        if not outcome.allowed:
            await self.give_back(ahead.decision)
        return self.decide(decision, ahead.rule, outcome, ahead.estimate)

    async def admit(
        self,
        scope: Scope,
        receive: Receive,
        decision: Decision,
        *,
        body: bytes | None = None,
        cost: int | None = None,
        document: dict[str, Any] | None = None,
    ) -> tuple[Decision, Receive]:
        """The decision, and the ``receive`` to proxy with: when the body was read here
        (to estimate from it) it is replayed to the proxy from memory.

        ``body``: the body already read by the caller (``buffer_body``; not read again),
        ``document``: that body parsed, when the caller parsed it (a JSON object).
        ``cost``: the request will be answered from the gateway's completion cache with this
        many tokens — charged as is, with no reservation to settle later (the cache hit is
        never proxied). Normally the cache charges a hit in its own lookup call
        (:meth:`decide` then turns that outcome into the decision); this is the fallback."""
        rule = self.rule(scope, decision)
        if rule is None:
            return decision, receive
        length = content_length(scope)
        if cost is not None:
            estimate = cost
        else:
            if body is None and not rule.probe:
                body, receive = await buffer_body(scope, receive)
                if receive is disconnected:  # nothing will be proxied: charge nothing
                    return decision, receive
            if document is not None:  # the caller parsed the body already
                estimate = self.policy.estimate_document(document, scope["path"])
            else:
                estimate = self.policy.estimate(body, length, scope["path"])
        outcome = await self.budget.reserve(rule.key, rule.limit, estimate, probe=rule.probe)
        if cost is not None:  # nothing goes upstream: no reservation to forward
            outcome = replace(outcome, reservation=None)
        return self.decide(decision, rule, outcome, estimate), receive

    async def give_back(self, decision: Decision) -> None:
        """Return the reservation ``decision`` forwards, if any (the request was refused
        after all, by its request-rate limit): settled at zero tokens."""
        for name, value in decision.identity:
            if name == _RESERVATION:
                report = UsageSettlement(
                    reservation=value.decode(), prompt_tokens=0, completion_tokens=0
                )
                with contextlib.suppress(InvalidReservation, BudgetUnavailable):
                    await self.budget.settle(report)
                return

    def probe_for(self, scope: Scope, decision: Decision) -> BudgetProbe | None:
        """For a budgeted WebSocket: a check to run before each message the client sends
        (some budget must be left, as at the handshake), returning None when it may go on,
        else the seconds until the window frees up. None: the socket is not budgeted."""
        rule = self.rule(scope, decision)
        if rule is None or not rule.probe:
            return None
        budget = self.budget

        async def probe() -> float | None:
            outcome = await budget.reserve(rule.key, rule.limit, 0, probe=True)
            return None if outcome.allowed else max(1.0, outcome.reset_s)

        return probe

    def rule(self, scope: Scope, decision: Decision) -> TokenRule | None:
        """The budget the request spends, if any."""
        return self.policy.for_request(scope, decision.principal)

    def decide(
        self, decision: Decision, rule: TokenRule, outcome: TokenOutcome, estimate: int
    ) -> Decision:
        """The decision once the budget answered: 429, or admitted with the budget headers
        (and the reservation to forward, when there is one)."""
        headers = [*decision.response_headers, *outcome.headers()]
        if outcome.limit:  # enforced: remember the room it left
            self._room.pop(rule.key, None)
            if len(self._room) >= _ROOM_KEYS:
                del self._room[next(iter(self._room))]  # the least recently answered
            self._room[rule.key] = max(0, outcome.remaining)
        if not outcome.allowed:
            wait = max(1, round(outcome.reset_s))
            left = max(0, outcome.remaining)
            # a WebSocket handshake needs just some budget left; a request, its estimate
            why = (
                "none left"
                if rule.probe
                else f"{left} left; this request is estimated at {estimate}"
            )
            extensions: dict[str, object] = {"token_limit": outcome.limit}
            if not rule.probe:
                extensions["estimated_tokens"] = estimate
            return Decision(
                status=429,
                detail=f"Token budget of {outcome.limit} tokens per {_window(rule.limit)} "
                f"reached ({why}); retry in {wait} s.",
                response_headers=headers,
                extensions=extensions,
            )
        identity = decision.identity
        if outcome.reservation is not None:
            # a new list: the signed identity headers are cached and shared between requests
            identity = [*identity, (_RESERVATION, outcome.reservation.encode())]
        return decision.but(identity=identity, response_headers=headers)


def _window(limit: Limit) -> str:
    return "minute" if limit.window_s == 60 else f"{limit.window_s:g} s"


def wants_stream(path: str, document: dict[str, Any]) -> bool:
    """Whether a generation body asks for a stream: ``"stream": true``, or no ``stream``
    field on the Ollama wire format (``/api/*``), whose default is to stream."""
    if "stream" not in document:
        return path.startswith("/api/")
    return document["stream"] is True
