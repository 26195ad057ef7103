"""Header rewriting between client and upstream.

Request (client → upstream): hop-by-hop headers (RFC 9110 §7.6.1) and any header the
client names in ``Connection`` are dropped; ``Host`` becomes the upstream's; the gateway
sets ``X-Request-ID`` and overwrites ``X-Forwarded-For/-Proto/-Host`` (it is the edge:
values a client sends there are not trusted); a client's ``X-Priority`` is replaced by the
one ``core/priority.py`` computes (inference) or dropped (elsewhere). Response (upstream →
client): hop-by-hop headers are dropped and the gateway's ``X-Request-ID`` replaces the
upstream's.
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
        # other spellings of "who/where is the client": the gateway is the edge, so a
        # client's value is a lie a service might believe (RFC 7239, nginx, proxies)
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"traceparent",
        b"tracestate",
        b"content-length",  # the proxy frames the body itself
        b"expect",  # the gateway's server answers 100-continue; the body is sent at once
        b"x-switchboard-identity",  # identity is the gateway's to vouch for, never a client's
        b"x-switchboard-signature",
        b"x-switchboard-token-reservation",  # the gateway's token-budget reservation
        b"x-priority",  # computed per caller by core/priority.py (inference routes only)
    }
)
# The client's own credentials: consumed by the gateway, not handed to services.
CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
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

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_length: int | None = None
    chunked: bool = False
    traceparent: str | None = None
    tracestate: str | None = None


_DROPPED = HOP_BY_HOP | GATEWAY_SET
_DROPPED_AUTHENTICATED = _DROPPED | CREDENTIALS


def upstream_request_headers(
    scope: Scope,
    request_id: str,
    *,
    identity: list[tuple[bytes, bytes]] | None = None,
    websocket: bool = False,
) -> UpstreamRequestHeaders:
    """Headers for the upstream. With ``identity`` (an authenticated route) the client's
    credentials are replaced by the gateway-signed identity headers."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = _DROPPED if identity is None else _DROPPED_AUTHENTICATED
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
        headers.append((name, value))
    client = scope.get("client")
    headers.append((b"x-request-id", request_id.encode()))
    headers.append((b"x-forwarded-for", client[0].encode() if client else b"unknown"))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host:
        headers.append((b"x-forwarded-host", host))
    if identity:
        headers.extend(identity)
    return out


def client_response_headers(
    raw: list[tuple[bytes, bytes]], request_id: bytes
) -> tuple[list[tuple[bytes, bytes]], bool, int | None]:
    """Response headers for the client, whether the body is a stream, and its length.

    ``raw`` names must already be lower-case (the upstream client lower-cases them).
    """
    headers: list[tuple[bytes, bytes]] = []
    streaming = unbuffered = False
    length: int | None = None
    for name, value in raw:
        if name in HOP_BY_HOP or name in RESPONSE_REPLACED:
            continue
        if name == b"content-length":
            length = int(value)
        elif name == b"content-type" and value.startswith(STREAMING_TYPES):
            streaming = True
        elif name == b"x-accel-buffering":
            unbuffered = value.strip().lower() == b"no"
            if not unbuffered:
                continue  # a stream is never buffered by a proxy in front: "no" below
        headers.append((name, value))
    headers.append((b"x-request-id", request_id))
    if streaming and not unbuffered:  # once: the inference service sends it itself
        headers.append((b"x-accel-buffering", b"no"))
    return headers, streaming, length
