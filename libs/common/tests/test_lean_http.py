"""The lean upstream client against a scripted TCP server (real sockets, every framing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from switchboard_common.lean_http import (
    MAX_BUFFERED,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
)
from switchboard_devtools.ports import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return head + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[UpstreamClient]]]:
    servers: list[asyncio.Server] = []
    clients: list[UpstreamClient] = []

    async def start(handler: Handler) -> UpstreamClient:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient("127.0.0.1", port, connect_timeout_s=1, keepalive_s=30)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.close()


async def exchange(client: UpstreamClient, body: bytes = b"", method: str = "GET") -> tuple:
    conn = client.idle_connection() or await client.connect()
    framing = b"content-length: %d\r\n" % len(body) if body else b""
    resp = conn.start(client.head(method, b"/x?y=1", [(b"x-test", b"1")], framing), body)
    await resp.read_headers(2)
    data = await resp.read(2)
    client.release(conn, resp)
    return resp.status, dict(resp.headers), data, conn


async def test_content_length_response_and_keepalive_reuse(serve) -> None:  # type: ignore[no-untyped-def]
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")
            await writer.drain()

    client = await serve(handler)
    status, headers, body, first = await exchange(client, b'{"a":1}', "POST")
    assert (status, body, headers[b"x-a"]) == (201, b"ok", b"b")
    _, _, _, second = await exchange(client)
    assert second is first  # the keep-alive connection was reused
    assert connections == 1
    assert seen[0].startswith(b"POST /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nx-test: 1\r\n" in seen[0] and seen[0].endswith(b'{"a":1}')


async def test_chunked_response_streams_in_pieces(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"one", b"two", b"three"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    await resp.read_headers(2)
    pieces = [p async for p in resp.iter_body(2)]
    assert pieces == [b"one", b"two", b"three"]
    assert resp.complete


async def test_close_delimited_body(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    status, _, body, conn = await exchange(client)
    assert (status, body) == (200, b"all of it")
    assert conn.closed  # not returned to the pool


async def test_refused_is_connect_error() -> None:
    client = UpstreamClient("127.0.0.1", free_port(), connect_timeout_s=1, keepalive_s=30)
    with pytest.raises(UpstreamConnectError):
        await client.connect()


async def test_silence_is_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    with pytest.raises(UpstreamTimeout):
        await resp.read_headers(0.2)


async def test_close_before_response_is_disconnected_before_response(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    with pytest.raises(UpstreamDisconnected) as info:
        await resp.read_headers(2)
    assert info.value.before_response


async def test_truncated_body_is_an_error_not_a_short_success(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    await resp.read_headers(2)
    with pytest.raises(UpstreamDisconnected) as info:
        await resp.read(2)
    assert not info.value.before_response


async def test_slow_reader_pauses_the_upstream(serve) -> None:  # type: ignore[no-untyped-def]
    total = 4 * MAX_BUFFERED

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    await resp.read_headers(2)
    await asyncio.sleep(0.3)  # let the upstream push as much as it can
    assert conn.reading_paused
    assert resp.buffered <= MAX_BUFFERED + 256 * 1024
    received = sum([len(p) async for p in resp.iter_body(2)])
    assert received == total
    assert not conn.reading_paused


async def test_stale_pooled_connection_is_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        await writer.drain()
        writer.close()  # server drops the keep-alive connection after one request

    client = await serve(handler)
    conn = await client.connect()
    resp = conn.start(client.head("GET", b"/", [], b""), b"")
    await resp.read_headers(2)
    await resp.read(2)
    conn.reusable = True  # pretend the server had promised keep-alive
    client.release(conn, resp)
    await asyncio.sleep(0.1)  # the server's FIN arrives
    assert client.idle_connection() is None


async def test_interim_1xx_answers_are_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x.css>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    client = await serve(handler)
    status, headers, body, _ = await exchange(client)
    assert (status, body) == (200, b"ok")
    assert b"link" not in headers


async def test_request_is_one_whole_exchange_and_survives_a_stale_connection(serve) -> None:  # type: ignore[no-untyped-def]
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        request = await read_request(reader)
        served += 1
        assert request.startswith(b"POST /usage HTTP/1.1\r\n") and request.endswith(b"{}")
        # answer, then drop the keep-alive connection: the next request finds it stale
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    assert await client.request("POST", b"/usage", [], b"{}", 2) == (202, b"done")
    await asyncio.sleep(0.05)  # the server has closed its side by now
    assert await client.request("POST", b"/usage", [], b"{}", 2) == (202, b"done")
    assert served == 2


async def test_request_on_a_silent_upstream_times_out(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    client = await serve(handler)
    with pytest.raises(UpstreamTimeout):
        await client.request("POST", b"/usage", [], b"{}", 0.2)
