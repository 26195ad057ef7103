"""Write coalescing: a known-length response goes out in one transport write; a streamed
response sends its head at once. Drives uvicorn's real protocol with a recording transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from switchboard_common.http_protocol import CoalescingHttpToolsProtocol, coalescing_protocol


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None: ...


async def drive(
    app: Any, request: bytes, transport: RecordingTransport | None = None
) -> RecordingTransport:
    config = Config(app, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="off")
    config.load()
    protocol = CoalescingHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = transport or RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if protocol.cycle is not None and protocol.cycle.response_complete:
            break
    protocol.connection_lost(None)
    return transport


async def fixed_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def streaming_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"one", "more_body": True})
    await send({"type": "http.response.body", "body": b"two", "more_body": False})


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_known_length_response_is_one_write() -> None:
    transport = await drive(fixed_app, GET)
    assert len(transport.writes) == 1
    data = transport.writes[0]
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nhello")


async def slow_stream_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.2)  # the first chunk is not ready yet
    await send({"type": "http.response.body", "body": b"one", "more_body": False})


async def test_streamed_head_goes_out_with_a_ready_first_chunk() -> None:
    transport = await drive(streaming_app, GET)
    first = transport.writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in first
    assert first.endswith(b"\r\n\r\n3\r\none\r\n")  # head and first chunk: one write
    assert b"".join(transport.writes[1:]) == b"3\r\ntwo\r\n0\r\n\r\n"


async def test_streamed_head_is_not_held_for_a_slow_first_chunk() -> None:
    transport = RecordingTransport()

    async def received_early() -> list[bytes]:  # what the client has 0.1 s in
        await asyncio.sleep(0.1)
        return list(transport.writes)

    early = asyncio.create_task(received_early())
    await drive(slow_stream_app, GET, transport)
    assert len(await early) == 1 and (await early)[0].endswith(b"\r\n\r\n")  # the head, at once
    assert b"".join(transport.writes[1:]) == b"3\r\none\r\n0\r\n\r\n"


async def abandoning_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("the stream broke before its first chunk")


async def test_a_head_held_for_a_first_chunk_that_never_comes_still_goes_out() -> None:
    transport = await drive(abandoning_app, GET)
    assert transport.writes and transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed  # then uvicorn cuts the connection: an incomplete response


async def test_connection_close_is_applied_after_the_write() -> None:
    transport = await drive(fixed_app, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"".join(transport.writes).endswith(b"hello")
    assert transport.closed


def test_uvicorn_internals_are_as_expected() -> None:
    # If this fails after a uvicorn upgrade, coalescing silently turned itself off: look at
    # switchboard_common/http_protocol.py before upgrading.
    assert coalescing_protocol() is CoalescingHttpToolsProtocol


@pytest.mark.parametrize("method", [b"HEAD"])
async def test_head_response_has_no_body(method: bytes) -> None:
    transport = await drive(fixed_app, method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\n")
