"""Header rewriting between client and upstream.

Request (client → upstream): hop-by-hop headers (RFC 9110 §7.6.1) and any header the
client names in ``Connection`` are dropped; ``Host`` becomes the upstream's; the gateway
sets ``X-Request-ID`` and overwrites ``X-Forwarded-For/-Proto/-Host`` (it is the edge:
values a client sends there are not trusted). Response (upstream → client): hop-by-hop
headers are dropped and the gateway's ``X-Request-ID`` replaces the upstream's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.types import Scope

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the gateway itself on the way upstream; never copied from the client as they are.
GATEWAY_SET = frozenset(
    {
        b"host",
        b"x-request-id",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"traceparent",
        b"tracestate",
    }
)
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"content-length",
    }
)
# The gateway's server adds its own Date; the request id is the gateway's.
RESPONSE_REPLACED = frozenset({b"x-request-id", b"date", b"server"})
STREAMING_TYPES = (b"text/event-stream", b"application/x-ndjson")


@dataclass(slots=True)
class UpstreamRequestHeaders:
    """What the proxy needs from the client's headers, gathered in one pass."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    content_length: int | None = None
    chunked: bool = False
    traceparent: str | None = None
    tracestate: str | None = None


def upstream_request_headers(
    scope: Scope, request_id: str, *, websocket: bool = False
) -> UpstreamRequestHeaders:
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = HOP_BY_HOP | GATEWAY_SET
    if websocket:
        dropped = dropped | WEBSOCKET_HANDSHAKE
    named_in_connection: set[bytes] = set()
    host = b""
    out = UpstreamRequestHeaders()
    for name, value in raw:
        if name == b"connection":
            named_in_connection.update(t.strip().lower() for t in value.split(b","))
        elif name == b"host":
            host = value
        elif name == b"content-length":
            try:
                out.content_length = int(value)
            except ValueError:
                out.content_length = -1
        elif name == b"transfer-encoding":
            out.chunked = b"chunked" in value.lower()
        elif name == b"traceparent":
            out.traceparent = value.decode("latin-1")
        elif name == b"tracestate":
            out.tracestate = value.decode("latin-1")
    headers = out.headers
    for name, value in raw:
        if name in dropped or name in named_in_connection:
            continue
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    client = scope.get("client")
    headers.append(("x-request-id", request_id))
    headers.append(("x-forwarded-for", client[0] if client else "unknown"))
    headers.append(("x-forwarded-proto", scope.get("scheme", "http")))
    if host:
        headers.append(("x-forwarded-host", host.decode("latin-1")))
    return out


def client_response_headers(
    raw: tuple[tuple[bytes, bytes], ...], request_id: bytes
) -> tuple[list[tuple[bytes, bytes]], bool, int | None]:
    """Response headers for the client, whether the body is a stream, and its length."""
    headers: list[tuple[bytes, bytes]] = []
    streaming = False
    length: int | None = None
    for name, value in raw:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in RESPONSE_REPLACED:
            continue
        if lname == b"content-length":
            length = int(value)
        elif lname == b"content-type" and value.startswith(STREAMING_TYPES):
            streaming = True
        headers.append((lname, value))
    headers.append((b"x-request-id", request_id))
    if streaming:
        headers.append((b"x-accel-buffering", b"no"))
    return headers, streaming, length
