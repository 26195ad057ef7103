"""Tell the gateway what a reserved generation actually used, so it can settle the budget.

The gateway pre-charges a generation's estimated tokens in the caller's token budget and
forwards the reservation as ``X-Switchboard-Token-Reservation``.
:class:`TokenReservationMiddleware` puts that reservation in a context variable for the
request; :func:`charge_reserved_usage` (called wherever usage is recorded: the ledger, and
the response cache for hits) queues ``{reservation, seq, prompt_tokens,
completion_tokens}``; :class:`SettlementReporter` posts it, HMAC-signed
(``switchboard_common.internal_calls``), to ``{INFERENCE_GATEWAY_URL}/gateway/internal/usage``.

Never in the client's way: an HTTP request's reports are queued only once its response has
been sent (a WebSocket's as each reply ends — the connection may last for hours); a bounded
queue and a few worker tasks send them. A worker takes every report queued at that moment
(up to 64) into one POST (``UsageSettlementBatch``): under load the gateway gets one signed
call per batch instead of one per generation; a lone report goes alone, as before. A gateway
that predates batches answers a batch with 422 (or 404/405); the reporter then sends its
reports one by one, and tries a batch again ``batch_retry_s`` (5 minutes) later, so a
gateway upgraded meanwhile gets batches without a restart here. When the queue is full, or
the gateway cannot be reached after a retry, the report is dropped and counted
(``switchboard_inference_token_budget_reports_total{outcome}``) — the gateway's estimate
then stands until it leaves the window. Settlement is idempotent on the gateway, so a retry
that was in fact received twice changes nothing.

A cache hit reports its cached usage too: the caller received those tokens, and a budget a
repeated prompt could bypass would be no budget (the usage ledger counts them the same way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_common import HttpLimits, HttpTimeouts, create_http_client
from switchboard_common.internal_calls import (
    MAX_RESERVATION_CHARS,
    MAX_SETTLEMENT_BATCH,
    TOKEN_RESERVATION_HEADER,
    USAGE_SETTLEMENT_PATH,
    UsageSettlement,
    UsageSettlementBatch,
    UsageSettlementBatchResult,
    sign_internal_call,
)
from switchboard_common.lean_http import UpstreamClient, UpstreamError

logger = logging.getLogger("switchboard.inference.token_settlement")

REPORTS = Counter(
    "switchboard_inference_token_budget_reports_total",
    "Usage reports for the gateway's token budgets, by outcome (sent; failed: the gateway "
    "did not take it; dropped: the queue was full).",
    ("outcome",),
)
_HEADER = TOKEN_RESERVATION_HEADER.lower().encode()


@dataclass(slots=True)
class _Reserved:
    """The current request's reservation, and the reports it made so far."""

    reporter: SettlementReporter
    reservation: str
    immediate: bool  # WebSocket: send each report at once, not when the response ends
    seq: int = 0
    held: list[UsageSettlement] = field(default_factory=list)


_current: ContextVar[_Reserved | None] = ContextVar("switchboard_token_reservation", default=None)


def charge_reserved_usage(prompt_tokens: int, completion_tokens: int) -> None:
    """Report one generation's usage when the current request carries a reservation."""
    reserved = _current.get()
    if reserved is None:
        return
    report = UsageSettlement(
        reservation=reserved.reservation,
        seq=reserved.seq,
        prompt_tokens=max(0, prompt_tokens),
        completion_tokens=max(0, completion_tokens),
    )
    reserved.seq += 1
    if reserved.immediate:
        reserved.reporter.submit(report)
    else:
        reserved.held.append(report)


class SettlementReporter:
    """A bounded queue of usage reports and the workers that post them to the gateway."""

    def __init__(
        self,
        gateway_url: str,
        secret: SecretStr,
        *,
        max_pending: int = 10_000,
        workers: int = 4,
        timeout_s: float = 2.0,
        retry_delay_s: float = 0.2,
        batch_retry_s: float = 300.0,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.batch_retry_s = batch_retry_s
        self.secret = secret
        self.workers = workers
        self.timeout_s = timeout_s
        self.retry_delay_s = retry_delay_s
        self._queue: asyncio.Queue[UsageSettlement] = asyncio.Queue(maxsize=max_pending)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        # plain-HTTP gateways get the lean client: a report per generation through httpx
        # (and its span) cost the service ~1 ms of CPU each, next to other requests' work
        url = urlsplit(self.gateway_url)
        self._lean = (
            UpstreamClient(
                url.hostname,
                url.port or 80,
                connect_timeout_s=timeout_s,
                keepalive_s=30.0,
                max_idle=workers,
            )
            if url.scheme == "http" and url.hostname and not url.path.strip("/")
            else None
        )
        self._last_warning = 0.0
        self._no_batches_until = float("-inf")  # the gateway turned a batch down: not before

    @property
    def batches(self) -> bool:
        """Whether queued reports go in batches now (see the module docstring)."""
        return asyncio.get_running_loop().time() >= self._no_batches_until

    @property
    def enabled(self) -> bool:
        return bool(self.gateway_url)

    def submit(self, report: UsageSettlement) -> None:
        """Queue a report; never waits (a full queue drops it)."""
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(report)
        except asyncio.QueueFull:
            REPORTS.labels("dropped").inc()
            self._warn("usage report dropped: queue full")
            return
        if not self._tasks:  # started on first use, inside the serving event loop
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait (bounded) until queued reports were handled; for shutdown and tests."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._queue.join()

    async def aclose(self) -> None:
        await self.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._lean is not None:
            self._lean.close()

    async def _work(self) -> None:
        while True:
            reports = [await self._queue.get()]
            batching = self.batches
            while batching and len(reports) < MAX_SETTLEMENT_BATCH and not self._queue.empty():
                reports.append(self._queue.get_nowait())  # what queued up meanwhile
            try:
                sent = await self._post_batch(reports) if len(reports) > 1 else None
                if sent is None:  # a lone report, or a gateway that takes no batches
                    sent = [await self._post(report) for report in reports]
                for ok in sent:
                    REPORTS.labels("sent" if ok else "failed").inc()
            except Exception:  # a worker must outlive any one report
                REPORTS.labels("failed").inc(len(reports))
                logger.exception("usage report failed")
            finally:
                for _ in reports:
                    self._queue.task_done()

    async def _post_batch(self, reports: list[UsageSettlement]) -> list[bool] | None:
        """Send ``reports`` as one batch: which the gateway took; None when it does not
        take batches (they are then sent one by one, now and for ``batch_retry_s``)."""
        body = UsageSettlementBatch(reports=reports).model_dump_json().encode()
        status, answer = await self._deliver(body)
        if status in (404, 405, 422):
            self._no_batches_until = asyncio.get_running_loop().time() + self.batch_retry_s
            logger.info("the gateway takes no batched usage reports; sending them one by one")
            return None
        if status != 200 or answer is None:
            if status:  # answered and refused (a batch never answered was warned about)
                self._warn(f"gateway refused a batch of usage reports: {status}")
            return [False] * len(reports)
        try:
            results = UsageSettlementBatchResult.model_validate_json(answer).results
        except ValueError:
            self._warn("the gateway's answer to a batch of usage reports was not understood")
            return [False] * len(reports)
        if "invalid" in results:
            self._warn("gateway refused a usage report: invalid reservation")
        return [r != "invalid" for r in results] + [False] * (len(reports) - len(results))

    async def _send(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST one signed body; the gateway's status and answer (transport errors raise)."""
        if self._lean is not None:
            fields = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            return await self._lean.request(
                "POST", USAGE_SETTLEMENT_PATH.encode(), fields, body, self.timeout_s
            )
        if self._client is None:
            self._client = create_http_client(
                self.gateway_url,
                timeouts=HttpTimeouts(
                    connect_s=self.timeout_s,
                    read_s=self.timeout_s,
                    write_s=self.timeout_s,
                    pool_s=self.timeout_s,
                ),
                limits=HttpLimits(
                    max_connections=self.workers, max_keepalive_connections=self.workers
                ),
            )
        answer = await self._client.post(USAGE_SETTLEMENT_PATH, content=body, headers=headers)
        return answer.status_code, answer.content

    async def _post(self, report: UsageSettlement) -> bool:
        status, _ = await self._deliver(report.model_dump_json().encode())
        if 400 <= status < 500:
            self._warn(f"gateway refused a usage report: {status}")
        return 200 <= status < 300

    async def _deliver(self, body: bytes) -> tuple[int, bytes | None]:
        """POST a signed body, retried once on a transport error or a 5xx (settlement is
        idempotent: a retry cannot double-charge); 0 when it was never answered."""
        failure = ""
        for attempt in range(2):
            headers = sign_internal_call(self.secret, USAGE_SETTLEMENT_PATH, body)
            headers["content-type"] = "application/json"
            try:
                status, answer = await self._send(body, headers)
            except (httpx.HTTPError, UpstreamError, OSError) as exc:
                failure = type(exc).__name__
            else:
                if status < 500:
                    return status, answer
                failure = f"HTTP {status}"
            if attempt == 0:
                await asyncio.sleep(self.retry_delay_s)
        self._warn(f"usage report not delivered to {self.gateway_url}: {failure}")
        return 0, None

    def _warn(self, message: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_warning > 10:  # at most one warning per 10 s
            self._last_warning = now
            logger.warning(message)


class TokenReservationMiddleware:
    """Exposes a request's ``X-Switchboard-Token-Reservation`` to
    :func:`charge_reserved_usage` and hands the reports to the reporter once the response
    has been sent (HTTP) or as they come (WebSocket)."""

    def __init__(self, app: ASGIApp, reporter: SettlementReporter) -> None:
        self.app = app
        self.reporter = reporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reservation = _reservation(scope) if scope["type"] in ("http", "websocket") else None
        if reservation is None or not self.reporter.enabled:
            await self.app(scope, receive, send)
            return
        reserved = _Reserved(self.reporter, reservation, immediate=scope["type"] == "websocket")
        token = _current.set(reserved)
        status = 0

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            _current.reset(token)
            for report in reserved.held:  # usage recorded even if the client went away
                self.reporter.submit(report)
            if scope["type"] == "http" and reserved.seq == 0 and status >= 400:
                # refused or failed before any generation (422, 404, 503 …): give the
                # caller's estimate back instead of leaving it charged for the window
                self.reporter.submit(
                    UsageSettlement(reservation=reservation, prompt_tokens=0, completion_tokens=0)
                )


def _reservation(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER:
            text = value.decode("latin-1").strip()
            return text if 0 < len(text) <= MAX_RESERVATION_CHARS else None
    return None
