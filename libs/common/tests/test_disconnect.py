"""DisconnectWatch: a client that leaves cancels the stream and only the stream; nothing
else is cancelled, before, after, or instead of it."""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard_common.disconnect import DisconnectWatch


class Client:
    """``receive`` of a client that disconnects when told to."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_a_client_that_leaves_ends_the_stream_and_the_task_goes_on() -> None:
    client, sent = Client(), []

    async def handler() -> str:
        watch = DisconnectWatch(client.receive)
        try:
            for i in range(100):
                sent.append(i)
                watch.start()
                if i == 2:
                    client.gone.set()
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if not watch.stop():
                raise
            await asyncio.sleep(0)  # the task is not cancelled any more: it can clean up
            return "client left"
        watch.stop()
        return "finished"

    assert await handler() == "client left"
    assert len(sent) <= 4


async def test_a_disconnect_as_the_stream_ends_cancels_nothing_after_it() -> None:
    client = Client()

    async def handler() -> str:
        watch = DisconnectWatch(client.receive)
        watch.start()
        await asyncio.sleep(0)  # the watcher is waiting on receive
        client.gone.set()  # the client leaves just as the stream ends: the watcher
        await asyncio.sleep(0)  # finishes, its callback is scheduled but has not run …
        watch.stop()  # … when the stream stops watching
        await asyncio.sleep(0.05)  # later work of the request (e.g. caching the answer)
        return "done"

    assert await handler() == "done"


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    client = Client()
    outcome: list[str] = []

    async def handler() -> None:
        watch = DisconnectWatch(client.receive)
        watch.start()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("re-raised" if not watch.stop() else "swallowed")
            raise

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    client.gone.set()
    await asyncio.sleep(0)  # the watcher finishes (its cancel of the task is on its way) …
    task.cancel()  # … and shutdown cancels the task at the same moment
    await asyncio.sleep(0.01)
    assert task.cancelled() and outcome == ["re-raised"]
