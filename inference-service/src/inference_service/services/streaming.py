"""Stream plumbing shared by the routes: queue-position events and priming.

``with_positions`` runs a generation and interleaves ``("queued", {"position": n})`` events
(from the admission gate's ``on_position`` callback) with ``("chunk", ollama_chunk)``.
``prime`` pulls the first item before the HTTP response starts, so errors that happen
before any output (unknown model, backend down, validation) become a proper status code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from inference_service.services.admission import PositionCallback

T = TypeVar("T")
Event = tuple[str, dict[str, Any]]


async def with_positions(
    start: Callable[[PositionCallback], AsyncIterator[dict[str, Any]]],
) -> AsyncIterator[Event]:
    """Chunks of ``start(on_position)``, preceded by ``queued`` events while waiting."""
    positions: asyncio.Queue[int] = asyncio.Queue()

    async def on_position(position: int) -> None:
        positions.put_nowait(position)

    chunks = start(on_position)
    first: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(anext(chunks))
    try:
        while not first.done():
            waiter: asyncio.Future[int] = asyncio.ensure_future(positions.get())
            pending: set[asyncio.Future[Any]] = {first, waiter}
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                yield "queued", {"position": waiter.result()}
            else:
                waiter.cancel()
        while not positions.empty():  # updates that raced with the first chunk
            yield "queued", {"position": positions.get_nowait()}
        try:
            chunk = first.result()
        except StopAsyncIteration:
            return
        yield "chunk", chunk
        async for chunk in chunks:
            yield "chunk", chunk
    finally:
        if not first.done():
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
        await chunks.aclose()  # type: ignore[attr-defined]


async def prime(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """Await the first item now (errors raise here), then iterate the rest lazily."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        first_missing = True
    else:
        first_missing = False

    async def chained() -> AsyncIterator[T]:
        try:
            if not first_missing:
                yield first
            async for item in items:
                yield item
        finally:
            await items.aclose()  # type: ignore[attr-defined]

    return chained()
