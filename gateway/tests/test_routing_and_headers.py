"""Unit tests: the route table and header rewriting."""

from __future__ import annotations

import pytest

from gateway.config import Settings
from gateway.core.headers import client_response_headers, upstream_request_headers
from gateway.core.route_table import RouteTable


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/auth/token", "auth"),
        ("/auth", "auth"),
        ("/inference/chat", "inference"),
        ("/code/analyze", "inference"),
        ("/v1/chat/completions", "inference"),
        ("/api/tags", "inference"),
        ("/knowledge/collections/x/query", "knowledge"),
        ("/memory/facts", "memory"),
        ("/authority/x", None),
        ("/health", None),
        ("/", None),
        ("/v2/models", None),
    ],
)
def test_route_table(path: str, service: str | None) -> None:
    assert RouteTable().resolve(path) == service


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"headers": headers, "client": ("10.1.2.3", 5000), "scheme": "https"}


def test_request_headers_rewritten() -> None:
    out = upstream_request_headers(
        scope(
            [
                (b"host", b"api.example.com"),
                (b"connection", b"keep-alive, x-private"),
                (b"x-private", b"1"),
                (b"te", b"trailers"),
                (b"transfer-encoding", b"chunked"),
                (b"x-forwarded-for", b"6.6.6.6"),
                (b"x-request-id", b"client-id"),
                (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
                (b"content-length", b"12"),
                (b"expect", b"100-continue"),
                (b"authorization", b"Bearer t"),
                (b"accept", b"application/json"),
            ]
        ),
        "rid-1",
    )
    names = [k for k, _ in out.headers]
    assert b"authorization" in names and b"accept" in names
    for dropped in (b"connection", b"x-private", b"te", b"transfer-encoding", b"host", b"expect"):
        assert dropped not in names
    assert (b"x-forwarded-for", b"10.1.2.3") in out.headers
    assert (b"x-forwarded-proto", b"https") in out.headers
    assert (b"x-forwarded-host", b"api.example.com") in out.headers
    assert (b"x-request-id", b"rid-1") in out.headers
    assert names.count(b"x-forwarded-for") == 1
    assert out.chunked and out.content_length == 12
    assert out.traceparent is not None and b"traceparent" not in names


def test_response_headers_rewritten() -> None:
    headers, streaming, length = client_response_headers(
        [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"connection", b"keep-alive"),
            (b"transfer-encoding", b"chunked"),
            (b"x-request-id", b"upstream-id"),
            (b"date", b"yesterday"),
            (b"x-custom", b"kept"),
        ],
        b"rid-2",
    )
    assert streaming and length is None
    assert (b"x-custom", b"kept") in headers
    assert (b"x-request-id", b"rid-2") in headers
    assert (b"x-accel-buffering", b"no") in headers
    names = [k for k, _ in headers]
    assert b"date" not in names and b"connection" not in names and names.count(b"x-request-id") == 1


@pytest.mark.parametrize("upstream", [b"no", b"NO", b"yes", None])
def test_a_stream_says_unbuffered_once(upstream: bytes | None) -> None:
    raw = [(b"content-type", b"text/event-stream")]
    if upstream is not None:
        raw.append((b"x-accel-buffering", upstream))
    headers, streaming, _ = client_response_headers(raw, b"rid-3")
    assert streaming
    values = [v.lower() for k, v in headers if k == b"x-accel-buffering"]
    assert values == [b"no"]


@pytest.mark.parametrize(
    "url", ["https://auth:8001", "http://auth:8001/prefix", "ftp://auth", "auth:8001"]
)
def test_upstream_url_must_be_plain_http_origin(url: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        Settings(auth_url=url)


def test_upstream_url_normalised() -> None:
    assert Settings(auth_url="http://auth/").auth_url == "http://auth:80"
