"""The instances of one service: round-robin over those whose circuit breaker is closed.

Health is passive: no polling, only the outcome of real requests. Each instance has a
circuit breaker::

    closed ──N consecutive failures──▶ open ──cooldown over──▶ half-open
       ▲                                ▲                        │ exactly one request
       └──────── probe answered ────────┼──── probe failed ──────┘ (the probe) goes through

A *failure* is a transport failure before the response head: connect refused or timed
out, connection reset or closed before any response byte, no response head within the
read timeout. An HTTP answer of any status, 5xx included, is a success: the instance is
up and speaking HTTP, and its 502/503/504 are about *its* dependencies (Ollama, Chroma,
its queue), which every instance shares, so ejecting it would turn a partial outage into
a full one.

When every instance is open, :meth:`Balancer.pick` returns ``None`` and the proxy answers
503 at once with ``Retry-After`` = the time until the first cooldown ends, instead of
making each client wait on an instance that just failed N times in a row.

The hot path (a closed instance) costs one list index and one comparison; the clock is
read only while some breaker is not closed.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

from gateway.core.monitoring import UPSTREAM_BREAKER_OPENED, UPSTREAM_BREAKER_STATE
from switchboard_common.lean_http import UpstreamClient

logger = logging.getLogger("switchboard.gateway.balancer")

CLOSED, HALF_OPEN, OPEN = 0, 1, 2  # also the values of the breaker-state gauge
BreakerState = Literal["closed", "half_open", "open"]
STATE_NAMES: tuple[BreakerState, ...] = ("closed", "half_open", "open")


class Instance:
    """One instance of a service: its origin, its keep-alive client, its breaker."""

    __slots__ = (
        "_gauge",
        "client",
        "failures",
        "open_until",
        "origin",
        "probe_connected",
        "probing",
        "state",
    )

    def __init__(self, service: str, origin: str, client: UpstreamClient) -> None:
        self.origin = origin
        self.client = client
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.open_until = 0.0
        self.probing = False  # half-open: the one probe request is in flight
        self.probe_connected = False  # … and its connection is up (others may ride along)
        self._gauge = UPSTREAM_BREAKER_STATE.labels(service, origin)
        self._gauge.set(CLOSED)

    def _admit(self, now: float) -> bool:
        """Whether a non-closed instance takes this request (which then is the probe)."""
        if self.state == OPEN and now >= self.open_until:
            self._set_state(HALF_OPEN)
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            self.probe_connected = False
            return True
        return False

    def _clear_probe(self) -> None:
        self.probing = self.probe_connected = False

    def _set_state(self, state: int) -> None:
        self.state = state
        self._gauge.set(state)


class Balancer:
    """Round-robin over the instances of ``service``, skipping those whose breaker is open."""

    def __init__(
        self,
        service: str,
        instances: Sequence[Instance],
        *,
        failure_threshold: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not instances:
            raise ValueError(f"{service}: at least one instance is needed")
        self.service = service
        self.instances = tuple(instances)
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.clock = clock
        self._count = len(self.instances)
        self._next = 0
        self._peek_next = 0

    def pick(self) -> Instance | None:
        """The next instance in turn that takes traffic; ``None`` when all are open."""
        i = self._next
        inst = self.instances[i]
        if inst.state == CLOSED:  # the common case, kept to a few bytecodes
            self._next = i + 1 if i + 1 < self._count else 0
            return inst
        return self._pick_past_open(i)

    def _pick_past_open(self, i: int) -> Instance | None:
        instances = self.instances
        n = self._count
        now = 0.0
        for _ in range(n):
            inst = instances[i]
            i = i + 1 if i + 1 < n else 0
            if inst.state == CLOSED:
                self._next = i
                return inst
            if not now:
                now = self.clock()
            if inst._admit(now):
                self._next = i
                return inst
        # no closed instance and no probe to start: ride along with a probe that connected
        for inst in instances:
            if inst.state == HALF_OPEN and inst.probe_connected:
                return inst
        return None

    def pick_other(self, failed: Instance) -> Instance | None:
        """For a retry: the next instance that takes traffic, other than ``failed`` if any
        other does (with one instance, or all others open, ``failed`` itself when its
        breaker still lets requests through)."""
        first = self.pick()
        if first is not failed or len(self.instances) == 1:
            return first
        second = self.pick()
        if second is None:
            return failed
        if failed.state == HALF_OPEN:
            # that first pick made ``failed`` the half-open probe (it returned it, so no
            # other request held the probe): release it, or the instance stays half-open
            # with a probe that never reports, skipped by pick() for good
            failed._clear_probe()
        return second

    def peek(self) -> Instance:
        """An instance for a call outside the proxy (WebSocket, health relay): round-robin
        over closed breakers, else the one whose cooldown ends first. Changes no breaker
        state, so it never uses up a half-open probe."""
        instances = self.instances
        n = len(instances)
        for _ in range(n):
            inst = instances[self._peek_next]
            self._peek_next = (self._peek_next + 1) % n
            if inst.state == CLOSED:
                return inst
        return min(instances, key=lambda inst: inst.open_until)

    def connected(self, inst: Instance) -> None:
        """A request to a half-open instance got its TCP connection: the instance listens
        again, so requests nothing else can take may ride along while the probe runs."""
        if inst.probing:
            inst.probe_connected = True

    def succeeded(self, inst: Instance) -> None:
        """The instance answered (a response head arrived)."""
        inst.failures = 0
        if inst.state != CLOSED:
            inst._clear_probe()
            inst._set_state(CLOSED)
            logger.info("%s instance %s answers again: breaker closed", self.service, inst.origin)

    def failed(self, inst: Instance) -> None:
        """A transport failure before the response head."""
        inst.failures += 1
        if inst.state == HALF_OPEN or inst.failures >= self.failure_threshold:
            was_open = inst.state == OPEN
            inst._clear_probe()
            inst.open_until = self.clock() + self.open_s
            if not was_open:
                inst._set_state(OPEN)
                UPSTREAM_BREAKER_OPENED.labels(self.service, inst.origin).inc()
                logger.warning(
                    "%s instance %s failed %d times in a row: breaker open for %gs",
                    self.service,
                    inst.origin,
                    inst.failures,
                    self.open_s,
                )

    def abandoned(self, inst: Instance) -> None:
        """The request ended without a verdict (client left, body too large, cancelled):
        a half-open instance lets the next request probe instead."""
        inst._clear_probe()

    def retry_after_s(self) -> int:
        """Whole seconds until some instance takes a request again (at least 1)."""
        now = self.clock()
        soonest = min(inst.open_until for inst in self.instances)
        return max(1, math.ceil(soonest - now))

    def state(self) -> dict[str, BreakerState]:
        """Breaker state per instance origin, for health reports."""
        return {inst.origin: STATE_NAMES[inst.state] for inst in self.instances}


def backoff_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. Spreading retries over
    the whole window keeps many clients that failed together from retrying together."""
    return random.uniform(0.0, min(cap_s, base_s * 2 ** (attempt - 1)))  # noqa: S311 (not crypto)
