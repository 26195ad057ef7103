"""WebSocket proxy: one upstream WebSocket per client WebSocket, frames pumped both ways.

The upstream connection is opened before the client's handshake is accepted, so the
subprotocol the upstream picks is the one the client gets, and an upstream that is down
turns into an HTTP 503 problem at the handshake (when the server supports the WebSocket
denial-response extension) or a close with code 1011. An upstream that answers the
handshake with a 4xx (e.g. 403: no scope) is relayed as that status.

Limits, per socket: a message over ``max_message_bytes`` either way closes both sides with
1009; no data frame either way for ``idle_timeout_s`` closes both sides with 1001 (pings
do not count: they prove the peer is alive, not that the session is in use). Per replica,
a caller may hold at most ``max_per_principal`` sockets (429 at the handshake).

Close codes a client sees (docs/realtime.md has the table): the upstream's own code,
relayed (1000, 1008, 4000-4999, …); 1012 when the upstream went away or restarts (1001,
1012: reconnect, another replica will serve); 1011 when the upstream died without a close
frame or failed; 1009 for a message over the limit; 1001 for the idle timeout. Codes that
must never be sent on the wire (1005, 1006, 1015) are translated both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import aiohttp
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from gateway.core.headers import upstream_request_headers
from gateway.core.responses import deny_websocket
from gateway.services.upstreams import UpstreamPool
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway.ws")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005  # "no code in the close frame": reported, never sent
CLOSE_ABNORMAL = 1006  # "connection dropped without a close frame": reported, never sent
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013
# RFC 6455 §7.4: codes an endpoint may put in a close frame.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
# How long closing the upstream may wait for its close reply (aiohttp's default is 10 s).
UPSTREAM_CLOSE_TIMEOUT_S = 2.0
_MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code


@dataclass(frozen=True, slots=True)
class Ending:
    """How a session ends: the close for the client (None: it is gone) and the code the
    upstream gets (None: it already closed)."""

    client: tuple[int, str] | None
    upstream: int | None


class WebSocketProxy:
    def __init__(
        self,
        pool: UpstreamPool,
        *,
        max_message_bytes: int,
        idle_timeout_s: float = 300.0,
        max_per_principal: int = 0,
    ) -> None:
        self.pool = pool
        self.max_message_bytes = max_message_bytes
        self.idle_timeout_s = idle_timeout_s
        self.max_per_principal = max_per_principal
        # open sockets per principal on this replica; a dict, not Redis: a crashed replica
        # must not leave phantom sockets counted against a user
        self._open: Counter[str] = Counter()

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        identity: list[tuple[bytes, bytes]] | None = None,
        principal: str | None = None,
        budget_probe: Callable[[], Awaitable[float | None]] | None = None,
    ) -> None:
        """Proxy one WebSocket. ``principal``: the caller's id, for the per-caller cap
        (None on public routes, which are not capped). ``budget_probe``: run before each
        client message on a token-budgeted socket; an exhausted budget closes it (1013)."""
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        request_id = scope.get("switchboard.request_id") or request_id_from_headers(
            scope["headers"]
        )
        key = principal if self.max_per_principal > 0 else None
        if key is not None and self._open[key] >= self.max_per_principal:
            await deny_websocket(
                scope,
                send,
                429,
                f"At most {self.max_per_principal} WebSockets may be open per caller; "
                "close one before opening another.",
                instance=scope["path"],
                request_id=request_id,
                headers=[(b"retry-after", b"1")],
                extensions={"limit": self.max_per_principal},
            )
            return
        if key is not None:
            self._open[key] += 1  # counted while connecting too: a burst cannot slip past
        try:
            upstream = await self._connect(scope, send, service, identity, request_id)
            if upstream is None:
                return
            try:
                await send(
                    {
                        "type": "websocket.accept",
                        "subprotocol": upstream.protocol,
                        "headers": [(b"x-request-id", request_id.encode())],
                    }
                )
            except (OSError, RuntimeError):  # the client left during the upstream handshake
                await upstream.close(code=CLOSE_GOING_AWAY)
                return
            session = _Session(receive, send, upstream, self.max_message_bytes, budget_probe)
            await session.run(self.idle_timeout_s)
        finally:
            if key is not None:
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]

    async def _connect(
        self,
        scope: Scope,
        send: Send,
        service: str,
        identity: list[tuple[bytes, bytes]] | None,
        request_id: str,
    ) -> aiohttp.ClientWebSocketResponse | None:
        """The upstream socket, or None once the client's handshake has been refused."""
        req = upstream_request_headers(scope, request_id, identity=identity, websocket=True)
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = _without_access_token(scope.get("query_string", b""))
        if query:
            path += "?" + query
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers]

        async def connect(origin: str) -> aiohttp.ClientWebSocketResponse:
            return await self.pool.ws_session.ws_connect(
                URL(origin.replace("http", "ws", 1) + path, encoded=True),
                protocols=tuple(scope.get("subprotocols", ())),
                headers=headers,
                # aiohttp refuses a message of exactly max_msg_size; ours is inclusive
                max_msg_size=self.max_message_bytes + 1,
                autoping=True,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_close=UPSTREAM_CLOSE_TIMEOUT_S),
            )

        try:
            # a refused connect counts against that instance's breaker and tries another
            return await self.pool.attempt(service, connect)
        except aiohttp.WSServerHandshakeError as exc:
            if 400 <= exc.status < 500:
                # the service itself said no (no identity, no scope, unknown path): say so
                await deny_websocket(
                    scope,
                    send,
                    exc.status,
                    f"The {service} service refused the WebSocket handshake.",
                    instance=scope["path"],
                    request_id=request_id,
                )
                return None
            logger.warning("websocket upstream %s answered %s", service, exc.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("websocket upstream %s unavailable: %s", service, type(exc).__name__)
        await deny_websocket(
            scope,
            send,
            503,
            f"The {service} service is unavailable for WebSocket connections. Retry shortly.",
            instance=scope["path"],
            request_id=request_id,
            headers=[(b"retry-after", b"1")],
        )
        return None


class _Session:
    """One accepted client socket and its upstream: two pumps and an idle watch; the first
    to finish decides how both sides are closed."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        upstream: aiohttp.ClientWebSocketResponse,
        max_message_bytes: int,
        budget_probe: Callable[[], Awaitable[float | None]] | None = None,
    ) -> None:
        self.receive = receive
        self.send = send
        self.upstream = upstream
        self.max_bytes = max_message_bytes
        self.budget_probe = budget_probe
        self.loop = asyncio.get_running_loop()
        self.last_frame = self.loop.time()

    async def run(self, idle_timeout_s: float) -> None:
        tasks = [
            asyncio.ensure_future(self._client_to_upstream()),
            asyncio.ensure_future(self._upstream_to_client()),
            asyncio.ensure_future(self._idle_watch(idle_timeout_s)),
        ]
        ending = Ending(client=None, upstream=CLOSE_GOING_AWAY)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # the pumps' order in ``tasks`` breaks ties: what the client did is reported first
            finished = next(t for t in tasks if t in done)
            if not finished.cancelled() and finished.exception() is None:
                ending = finished.result()
            else:
                logger.warning("websocket pump failed", exc_info=finished.exception())
                ending = Ending((CLOSE_INTERNAL_ERROR, "gateway error"), CLOSE_GOING_AWAY)
        finally:
            # Closing the upstream first also wakes a pump blocked in upstream.receive()
            # (aiohttp's supported way to interrupt it); the client's close goes out after.
            if ending.upstream is not None and not self.upstream.closed:
                with contextlib.suppress(Exception):
                    await self.upstream.close(code=ending.upstream)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not self.upstream.closed:
                with contextlib.suppress(Exception):
                    await self.upstream.close()
            if ending.client is not None:
                code, reason = ending.client
                with contextlib.suppress(Exception):  # the client may be gone already
                    await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def _client_to_upstream(self) -> Ending:
        while True:
            message: Message = await self.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                self.last_frame = self.loop.time()
                if self.budget_probe is not None:
                    # each message may start a generation: the token budget must have
                    # something left, as at the handshake (docs/rate-limits.md)
                    wait_s = await self.budget_probe()
                    if wait_s is not None:
                        reason = f"token budget exhausted; retry in {math.ceil(wait_s)} s"
                        return Ending((CLOSE_TRY_AGAIN_LATER, reason), CLOSE_GOING_AWAY)
                text: str | None = message.get("text")
                try:
                    if text is not None:
                        if _text_size(text, self.max_bytes) > self.max_bytes:
                            return self._too_big("message")
                        await self.upstream.send_str(text)
                    else:
                        data: bytes = message.get("bytes") or b""
                        if len(data) > self.max_bytes:
                            return self._too_big("message")
                        await self.upstream.send_bytes(data)
                except (aiohttp.ClientError, ConnectionError):
                    return Ending((CLOSE_INTERNAL_ERROR, "upstream connection lost"), None)
            elif kind == "websocket.disconnect":
                return Ending(client=None, upstream=_code_for_upstream(message.get("code")))

    async def _upstream_to_client(self) -> Ending:
        while True:
            msg = await self.upstream.receive()
            kind = msg.type
            if kind is aiohttp.WSMsgType.TEXT:
                self.last_frame = self.loop.time()
                if not await self._send({"type": "websocket.send", "text": msg.data}):
                    return Ending(client=None, upstream=CLOSE_GOING_AWAY)
            elif kind is aiohttp.WSMsgType.BINARY:
                self.last_frame = self.loop.time()
                if not await self._send({"type": "websocket.send", "bytes": msg.data}):
                    return Ending(client=None, upstream=CLOSE_GOING_AWAY)
            elif kind is aiohttp.WSMsgType.CLOSE:  # the upstream closed; aiohttp replied
                return Ending(client=_code_for_client(msg.data, msg.extra or ""), upstream=None)
            elif kind is aiohttp.WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, aiohttp.WebSocketError) and error.code == CLOSE_TOO_BIG:
                    return self._too_big("upstream message")
                logger.warning("websocket upstream error: %s", type(error).__name__)
                return Ending((CLOSE_INTERNAL_ERROR, "upstream error"), CLOSE_INTERNAL_ERROR)
            else:  # CLOSED: the connection dropped without a close frame (process died)
                return Ending((CLOSE_INTERNAL_ERROR, "upstream connection lost"), None)

    async def _idle_watch(self, timeout_s: float) -> Ending:
        while True:
            left = self.last_frame + timeout_s - self.loop.time()
            if left <= 0:
                return Ending((CLOSE_GOING_AWAY, "idle timeout"), CLOSE_GOING_AWAY)
            await asyncio.sleep(left)

    async def _send(self, message: Message) -> bool:
        """Send to the client; False when it is gone."""
        try:
            await self.send(message)
        except (OSError, RuntimeError):  # uvicorn: ClientDisconnected / send after close
            return False
        return True

    def _too_big(self, what: str) -> Ending:
        reason = f"{what} too big (limit {self.max_bytes} bytes)"
        return Ending((CLOSE_TOO_BIG, reason), CLOSE_TOO_BIG)


def _text_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, encoding it only when its length alone cannot decide."""
    if len(text) * 4 <= limit:  # at most 4 bytes per character
        return len(text)
    return len(text.encode())


def _code_for_upstream(code: int | None) -> int:
    """The close code to send upstream when the client closed with ``code``."""
    if code is None or code == CLOSE_NO_STATUS:
        return CLOSE_NORMAL
    if code in _SENDABLE or 3000 <= code <= 4999:
        return code
    return CLOSE_GOING_AWAY  # 1006 (dropped), 1015, …: the client went away


def _code_for_client(code: int | None, reason: str) -> tuple[int, str]:
    """The close the client gets when the upstream closed with ``code``."""
    reason = reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")
    if code is None or code == CLOSE_NO_STATUS:
        return CLOSE_NORMAL, reason
    if code in (CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART):
        # the service instance is stopping: reconnecting reaches another one
        return CLOSE_SERVICE_RESTART, reason or "upstream restarting; reconnect"
    if code in _SENDABLE or 3000 <= code <= 4999:
        return code, reason
    return CLOSE_INTERNAL_ERROR, "upstream connection lost"


def _without_access_token(query: bytes) -> str:
    """The query string minus a browser's ``access_token`` (the gateway consumed it).

    Parsed with the same decoder that found the token, so no spelling of the name
    (``access%5Ftoken``) carries a credential upstream."""
    text = query.decode("latin-1")
    pairs = parse_qsl(text, keep_blank_values=True)
    if all(key != "access_token" for key, _ in pairs):
        return text
    return urlencode([(k, v) for k, v in pairs if k != "access_token"])
