"""Getting a response head for a proxied request from one of a service's instances.

Per attempt: take a pooled connection (or connect), send the request, wait for the
response head while watching for the client leaving. The outcome is recorded on the
instance's circuit breaker (``balancer.py``): a head is a success, a transport failure
before it a failure.

Retries (see docs/resilience.md), all before any response byte reached the client:

- a pooled connection the upstream had already closed is replayed once on the same
  instance (not a failure: keep-alive races are normal);
- an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) whose body is in memory is sent
  again to another instance, after a full-jitter backoff, up to ``GATEWAY_RETRY_ATTEMPTS``
  times, when it failed to connect or was dropped before the head. A read timeout is not
  retried: waiting that long again would only double the client's wait, and the first
  instance may still be working on it. POST and PATCH are never retried, nor a streamed
  body (it was consumed by the first attempt).

What is left is an :class:`UpstreamFailure` carrying the problem to answer with:
refused → 503 (Retry-After 1), timeout → 504, other → 502, every breaker open → 503 with
Retry-After = the time until the first cooldown ends.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive

from gateway.config import Settings
from gateway.core.monitoring import UPSTREAM_ERRORS, UPSTREAM_RETRIES
from gateway.services.balancer import HALF_OPEN, Balancer, Instance, backoff_s
from gateway.services.request_body import RequestBodyStream
from switchboard_common.asgi_body import ClientDisconnected
from switchboard_common.disconnect import wait_for_disconnect
from switchboard_common.lean_http import (
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)

logger = logging.getLogger("switchboard.gateway.proxy")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class UpstreamFailure(Exception):
    """A failure before the response started, carrying the problem to answer with."""

    def __init__(self, status: int, kind: str, detail: str, retry_after: int | None) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after


class Exchanger:
    def __init__(self, settings: Settings) -> None:
        self.read_timeout = settings.read_timeout_s
        self.retry_attempts = settings.retry_attempts
        self.backoff_base_s = settings.retry_backoff_base_s
        self.backoff_cap_s = settings.retry_backoff_cap_s

    async def exchange(
        self,
        balancer: Balancer,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        stream: RequestBodyStream | None,
        length: int | None,
        receive: Receive,
        request_id: str,
    ) -> tuple[Instance, UpstreamConnection, UpstreamResponse]:
        """Send the request and wait for the response head.

        Raises :class:`UpstreamFailure`, or ``ClientDisconnected`` / ``BodyTooLarge`` from
        reading the client's body.
        """
        inst = balancer.pick()
        replayable = stream is None and method in IDEMPOTENT
        retries_left = self.retry_attempts if replayable else 0
        while True:
            if inst is None:
                raise _all_open(balancer)
            client = inst.client
            conn = client.idle_connection()
            reused = conn is not None
            try:
                if conn is None:
                    conn = await client.connect()
                    if inst.state == HALF_OPEN:
                        balancer.connected(inst)
                if stream is None:
                    framing = b"content-length: %d\r\n" % len(body) if length is not None else b""
                    resp = conn.start(client.head(method, target, headers, framing), body)
                else:
                    chunked = b"transfer-encoding: chunked\r\n"
                    resp = conn.start(client.head(method, target, headers, chunked), b"")
                    await self._send_body(conn, resp, stream)
                await self._await_head(conn, resp, receive)
            except UpstreamError as exc:
                if conn is not None:
                    conn.close()
                stale = reused and _stale(exc)  # the upstream had closed the pooled socket
                if stale and replayable:
                    replayable = False  # once more, on a fresh connection
                    continue
                if not stale:  # a keep-alive race says nothing about the instance's health
                    balancer.failed(inst)
                failure = _as_failure(exc, balancer.service)
                UPSTREAM_ERRORS.labels(balancer.service, failure.kind).inc()
                if retries_left and not isinstance(exc, UpstreamTimeout):
                    attempt = self.retry_attempts - retries_left + 1
                    retries_left -= 1
                    inst = await self._before_retry(balancer, inst, attempt, failure, request_id)
                    if inst is not None:
                        continue
                logger.warning(
                    "upstream %s failed: %s",
                    balancer.service,
                    failure.kind,
                    extra={"request_id": request_id},
                )
                raise failure from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                balancer.abandoned(inst)  # client left, body too large, cancelled: no verdict
                raise
            if inst.failures or inst.state:  # two attribute reads on the common path
                balancer.succeeded(inst)
            return inst, conn, resp

    async def _before_retry(
        self,
        balancer: Balancer,
        failed: Instance,
        attempt: int,
        failure: UpstreamFailure,
        request_id: str,
    ) -> Instance | None:
        UPSTREAM_RETRIES.labels(balancer.service).inc()
        logger.info(
            "upstream %s instance %s failed (%s); retry %d",
            balancer.service,
            failed.origin,
            failure.kind,
            attempt,
            extra={"request_id": request_id},
        )
        await asyncio.sleep(backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s))
        return balancer.pick_other(failed)

    async def _send_body(
        self, conn: UpstreamConnection, resp: UpstreamResponse, stream: RequestBodyStream
    ) -> None:
        try:
            async for chunk in stream:
                await conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk), self.read_timeout)
            await conn.write(b"0\r\n\r\n", self.read_timeout)
        except UpstreamDisconnected:
            if not resp.headers_done:
                raise
            # the upstream answered before taking the whole body (e.g. its own 413) and
            # closed: relay that answer rather than a 502

    async def _await_head(
        self, conn: UpstreamConnection, resp: UpstreamResponse, receive: Receive
    ) -> None:
        """Wait for the response head; a client that leaves meanwhile cancels the upstream.

        Most answers come within a few milliseconds, so the disconnect watcher (a task) is
        only started for the slow ones.
        """
        quick = min(0.05, self.read_timeout)
        try:
            await resp.read_headers(quick)
            return
        except UpstreamTimeout:
            if quick >= self.read_timeout:
                raise
        head = asyncio.ensure_future(resp.read_headers(self.read_timeout - quick))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        done, _ = await asyncio.wait({head, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if head in done:
            watcher.cancel()
            head.result()
            return
        head.cancel()
        conn.close()  # the upstream sees the cancel
        raise ClientDisconnected


def _stale(exc: UpstreamError) -> bool:
    return isinstance(exc, UpstreamDisconnected) and exc.before_response


def _all_open(balancer: Balancer) -> UpstreamFailure:
    """Every instance's breaker is open: fail fast rather than wait on instances that just
    failed many times in a row, and say when to come back."""
    service = balancer.service
    UPSTREAM_ERRORS.labels(service, "breaker_open").inc()
    wait_s = balancer.retry_after_s()
    return UpstreamFailure(
        503,
        "breaker_open",
        f"The {service} service is unavailable: its instances failed repeatedly and get no "
        f"requests for now. Retry in {wait_s}s.",
        wait_s,
    )


def _as_failure(exc: UpstreamError, service: str) -> UpstreamFailure:
    if isinstance(exc, UpstreamConnectError):
        return UpstreamFailure(
            503,
            "refused",
            f"The {service} service is unavailable (cannot connect: {exc}). "
            "Retry shortly; if it persists, check that the service is running.",
            1,
        )
    if isinstance(exc, UpstreamTimeout):
        return UpstreamFailure(
            504,
            "timeout",
            f"The {service} service did not answer in time. Retry later, or raise "
            "GATEWAY_READ_TIMEOUT_S if its requests are legitimately slow.",
            None,
        )
    return UpstreamFailure(
        502, "disconnected", f"The {service} service closed the connection early.", None
    )
