"""WebSocket proxy: one upstream WebSocket per client WebSocket, frames pumped both ways.

The upstream connection is opened before the client's handshake is accepted, so the
subprotocol the upstream picks is the one the client gets, and an upstream that is down
turns into an HTTP 503 problem at the handshake (when the server supports the WebSocket
denial-response extension) or a close with code 1011. Close codes travel both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qsl, urlencode

import aiohttp
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.core.headers import upstream_request_headers
from gateway.core.responses import deny_websocket
from gateway.services.upstreams import UpstreamPool
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway.ws")

CLOSE_INTERNAL_ERROR = 1011
CLOSE_NORMAL = 1000


class WebSocketProxy:
    def __init__(self, pool: UpstreamPool, *, max_message_bytes: int) -> None:
        self.pool = pool
        self.max_message_bytes = max_message_bytes

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        identity: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        request_id = scope.get("switchboard.request_id") or request_id_from_headers(
            scope["headers"]
        )
        req = upstream_request_headers(scope, request_id, identity=identity, websocket=True)
        base = self.pool.base_url(service).replace("http", "ws", 1)
        target = base + (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = _without_access_token(scope.get("query_string", b""))
        if query:
            target += "?" + query
        try:
            upstream = await self.pool.ws_session.ws_connect(
                URL(target, encoded=True),
                protocols=tuple(scope.get("subprotocols", ())),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers],
                max_msg_size=self.max_message_bytes,
                autoping=True,
                heartbeat=None,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("websocket upstream %s unavailable: %s", service, type(exc).__name__)
            await _deny(scope, send, service, request_id)
            return

        await send(
            {
                "type": "websocket.accept",
                "subprotocol": upstream.protocol,
                "headers": [(b"x-request-id", request_id.encode())],
            }
        )
        to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
        to_client = asyncio.ensure_future(_upstream_to_client(upstream, send))
        try:
            _, pending = await asyncio.wait(
                {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            await upstream.close()


async def _client_to_upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await upstream.send_str(text)
            else:
                await upstream.send_bytes(message.get("bytes") or b"")
        elif kind == "websocket.disconnect":
            await upstream.close(code=message.get("code", CLOSE_NORMAL))
            return


async def _upstream_to_client(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    code = CLOSE_NORMAL
    reason = ""
    async for msg in upstream:
        if msg.type is aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        elif msg.type is aiohttp.WSMsgType.ERROR:
            code, reason = CLOSE_INTERNAL_ERROR, "upstream error"
            break
    if upstream.close_code is not None and code == CLOSE_NORMAL:
        code = upstream.close_code
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": code, "reason": reason})


async def _deny(scope: Scope, send: Send, service: str, request_id: str) -> None:
    await deny_websocket(
        scope,
        send,
        503,
        f"The {service} service is unavailable for WebSocket connections. Retry shortly.",
        instance=scope["path"],
        request_id=request_id,
        headers=[(b"retry-after", b"1")],
    )


def _without_access_token(query: bytes) -> str:
    """The query string minus a browser's ``access_token`` (the gateway consumed it).

    Parsed with the same decoder that found the token, so no spelling of the name
    (``access%5Ftoken``) carries a credential upstream."""
    text = query.decode("latin-1")
    pairs = parse_qsl(text, keep_blank_values=True)
    if all(key != "access_token" for key, _ in pairs):
        return text
    return urlencode([(k, v) for k, v in pairs if k != "access_token"])
