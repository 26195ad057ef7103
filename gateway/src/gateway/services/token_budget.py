"""Token-per-minute budgets shared by every gateway replica: reserve, then settle.

``TokenBudget.reserve`` pre-charges a generation's *estimate* in the caller's window
(``token_budget_script.RESERVE``) and hands back a reservation id, which the gateway
forwards to the inference service. When the generation is done, the inference service
reports what it actually used (``POST /gateway/internal/usage``) and ``TokenBudget.settle``
replaces the estimate with it (``SETTLE``): atomically, once per reservation. Without a
report (the service crashed) the estimate stands until it leaves the window.

A reservation id carries what settlement needs without another lookup:
``<charge id>.<window ms>.<base64url of the budget key>.<MAC>``, sealed with
``SWITCHBOARD_INTERNAL_SECRET`` so a made-up one settles nothing. The gateway strips the
header from clients, and a settlement must itself be HMAC-signed by a service.

Like the request limiter it fails open: Redis erroring or slower than ``timeout_s`` lets the
request through unchecked (``switchboard_gateway_token_budget_decisions_total{outcome=
"fail_open"}``) and Redis is left alone for ``retry_s``; the reservation id still goes out,
so the usage reported later is charged once Redis is back. Unlike it there are no local
leases: a generation costs far more than a Redis round trip, and each reservation needs its
own id.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.models.limits import Limit
from gateway.services.redis_guard import RedisGuard
from gateway.services.token_budget_script import RESERVE, SETTLE
from switchboard_common.internal_calls import MAX_CALL_AGE_S, UsageSettlement
from switchboard_common.lean_redis import LeanRedis, Script

DECISIONS = Counter(
    "switchboard_gateway_token_budget_decisions_total",
    "Token-budget checks, by outcome (admitted, denied, fail_open).",
    ("outcome",),
)
CHARGED = Counter(
    "switchboard_gateway_token_budget_charged_tokens_total",
    "Tokens pre-charged as estimates when generations were admitted.",
)
SETTLED = Counter(
    "switchboard_gateway_token_budget_settled_tokens_total",
    "Tokens generations actually used, as settled from the inference service's reports.",
)
SETTLEMENTS = Counter(
    "switchboard_gateway_token_budget_settlements_total",
    "Usage reports received, by outcome (settled: replaced its estimate; charged: no "
    "estimate was in the window — a WebSocket reply, or one longer than the window; "
    "duplicate; invalid).",
    ("outcome",),
)


class InvalidReservation(ValueError):
    """A reservation id the gateway did not make."""


class BudgetUnavailable(Exception):
    """Redis could not be asked (settlement only: admission fails open instead)."""


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    allowed: bool
    limit: int  # 0: not enforced (Redis unavailable)
    remaining: int
    reset_s: float
    reservation: str | None = None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's names (``x-ratelimit-*-tokens``), which OpenAI SDKs and tools read."""
        if self.limit == 0:
            return []
        reset = max(1, int(-(-self.reset_s // 1)))  # whole seconds, rounded up
        headers = [
            (b"x-ratelimit-limit-tokens", str(self.limit).encode()),
            (b"x-ratelimit-remaining-tokens", str(max(0, self.remaining)).encode()),
            (b"x-ratelimit-reset-tokens", f"{reset}s".encode()),
        ]
        if not self.allowed:
            headers.append((b"retry-after", str(reset).encode()))
        return headers


@dataclass(frozen=True, slots=True)
class Reservation:
    charge_id: str
    window_ms: int
    key: str

    def seal(self, secret: bytes) -> str:
        """``<charge id>.<window ms>.<base64url key>.<MAC>``: the MAC makes a reservation
        that did not come from a gateway useless (e.g. one a client sends a service past a
        proxy that does not strip the header)."""
        key = base64.urlsafe_b64encode(self.key.encode()).rstrip(b"=").decode()
        body = f"{self.charge_id}.{self.window_ms}.{key}"
        return f"{body}.{_mac(secret, body)}"

    @classmethod
    def open(cls, value: str, secret: bytes) -> Reservation:
        """The reservation in a sealed value; :class:`InvalidReservation` otherwise."""
        body, _, mac = value.rpartition(".")
        if not hmac.compare_digest(_mac(secret, body).encode(), mac.encode("ascii", "replace")):
            raise InvalidReservation(f"not a reservation of this gateway: {value[:80]!r}")
        try:
            charge_id, window, key = body.split(".")
            raw = base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))
            reservation = cls(charge_id, int(window), raw.decode())
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidReservation(f"not a token reservation: {value[:80]!r}") from exc
        if not charge_id or not reservation.key or reservation.window_ms <= 0:
            raise InvalidReservation(f"not a token reservation: {value[:80]!r}")
        return reservation


def _mac(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]  # 128 bits


class TokenBudget:
    def __init__(
        self,
        redis: Redis,
        secret: bytes,
        *,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        prefix: str = "gw:tb:",
        lean: LeanRedis | None = None,
    ) -> None:
        self.redis = redis
        self.secret = secret
        script = lean.script if lean else redis.register_script  # as the request limiter
        self.reserve_script: Script = script(RESERVE)
        self.settle_script: Script = script(SETTLE)
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.guard = RedisGuard("token budgets not enforced", retry_s)

    def _keys(self, key: str) -> list[str]:
        # one hash tag per budget: the scripts' keys share a slot on a Redis Cluster
        base = f"{self.prefix}{{{key}}}:"
        return [base + "z", base + "h", base + "t", base + "s"]

    def reserve_keys(self, key: str) -> list[str]:
        """The keys of ``RESERVE`` for budget ``key``, for a script that embeds it (the
        completion cache charges a hit in its lookup's own call)."""
        return self._keys(key)[:3]

    @property
    def available(self) -> bool:
        """False while Redis is skipped after a failure (admission fails open then)."""
        return not self.guard.skipping()

    def charged(
        self, limit: Limit, admitted: int, remaining: int, reset_ms: int, charge: int
    ) -> TokenOutcome:
        """The outcome of a ``RESERVE`` run elsewhere that charged ``charge`` tokens at once,
        with nothing to settle (no reservation id)."""
        if not int(admitted):
            DECISIONS.labels("denied").inc()
            return TokenOutcome(False, limit.count, int(remaining), int(reset_ms) / 1000)
        DECISIONS.labels("admitted").inc()
        CHARGED.inc(charge)
        return TokenOutcome(True, limit.count, int(remaining), int(reset_ms) / 1000)

    def new_reservation(self, key: str, limit: Limit) -> Reservation:
        """A fresh reservation id for budget ``key`` (nothing is charged yet)."""
        return Reservation(secrets.token_urlsafe(12), int(limit.window_s * 1000), key)

    def seal(self, reservation: Reservation) -> str:
        """``reservation`` as the value of the header forwarded to the service."""
        return reservation.seal(self.secret)

    async def reserve(
        self,
        key: str,
        limit: Limit,
        estimate: int,
        *,
        probe: bool = False,
        reservation: Reservation | None = None,
    ) -> TokenOutcome:
        """Admit a generation estimated at ``estimate`` tokens, or refuse it (429).

        ``probe``: only check that some budget is left (a WebSocket handshake, whose
        generations are charged as they are reported); no estimate is charged.
        ``reservation``: made beforehand (:meth:`new_reservation`), when its header went
        upstream before this call; else a new one.
        """
        window_ms = int(limit.window_s * 1000)
        if reservation is None:
            reservation = self.new_reservation(key, limit)
        now = time.monotonic()
        if self.guard.skipping(now):
            return self._fail_open(reservation)
        need, charge = (1, 0) if probe else (max(1, estimate), max(1, estimate))
        try:
            async with asyncio.timeout(self.timeout_s):
                admitted, remaining, reset_ms = await self.reserve_script(
                    keys=self._keys(key)[:3],
                    args=[limit.count, window_ms, need, charge, reservation.charge_id],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.guard.failed(exc, now)
            return self._fail_open(reservation)
        reset_s = int(reset_ms) / 1000
        if not int(admitted):
            DECISIONS.labels("denied").inc()
            return TokenOutcome(False, limit.count, int(remaining), reset_s)
        DECISIONS.labels("admitted").inc()
        CHARGED.inc(charge)
        return TokenOutcome(
            True, limit.count, int(remaining), reset_s, reservation.seal(self.secret)
        )

    async def settle(self, report: UsageSettlement) -> bool:
        """Replace the reservation's estimate with the actual usage; False when this
        ``(reservation, seq)`` was settled before. Raises :class:`InvalidReservation`,
        :class:`BudgetUnavailable`."""
        try:
            reservation = Reservation.open(report.reservation, self.secret)
        except InvalidReservation:
            SETTLEMENTS.labels("invalid").inc()
            raise
        charge_id = reservation.charge_id + (f"#{report.seq}" if report.seq else "")
        keep_ms = max(reservation.window_ms, 2 * MAX_CALL_AGE_S * 1000)
        try:
            async with asyncio.timeout(max(self.timeout_s, 1.0)):
                settled, before = await self.settle_script(
                    keys=self._keys(reservation.key),
                    args=[charge_id, report.total_tokens, reservation.window_ms, keep_ms],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            raise BudgetUnavailable(type(exc).__name__) from exc
        if not int(settled):
            SETTLEMENTS.labels("duplicate").inc()
            return False
        SETTLEMENTS.labels("charged" if int(before) < 0 else "settled").inc()
        SETTLED.inc(report.total_tokens)
        return True

    def _fail_open(self, reservation: Reservation) -> TokenOutcome:
        """Admit without a check; the reservation still goes out, so the usage reported
        later is charged once Redis answers again."""
        DECISIONS.labels("fail_open").inc()
        return TokenOutcome(True, 0, 0, 0, reservation.seal(self.secret))
