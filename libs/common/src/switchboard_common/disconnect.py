"""Stop streaming to a client that has gone: :class:`DisconnectWatch`.

A streaming response (SSE tokens, a proxied NDJSON stream) spends most of its life waiting
for the next chunk, not writing, so it must learn of a disconnect from ``receive``
(``http.disconnect``), not from a failed write. Starlette does this by running the stream
and a ``receive`` listener as two tasks; on the time-to-first-token path those task
switches are measurable. This watch runs the stream in the caller's own task and starts
one listener only once the first chunk is out (:meth:`start`); when the client leaves, the
listener cancels the streaming task. The caller then catches the ``CancelledError`` and
asks :meth:`stop` whether the watch caused it::

    watch = DisconnectWatch(receive)
    try:
        async for chunk in chunks:
            await send(...)
            watch.start()
    except asyncio.CancelledError:
        if watch.stop():  # the client left: not an error, the stream is over
            return
        raise  # cancelled from elsewhere (shutdown)
    watch.stop()

Before :meth:`start`, a disconnect is noticed at the first chunk (as a Starlette handler
that has not started its response notices nothing either).
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive


class DisconnectWatch:
    __slots__ = ("_receive", "_task", "_watcher", "client_gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Future[None] | None = None
        self.client_gone = False

    def start(self) -> None:
        """Listen for the disconnect from now on (idempotent)."""
        if self._watcher is None and self._task is not None:
            self._watcher = asyncio.ensure_future(wait_for_disconnect(self._receive))
            self._watcher.add_done_callback(self._on_disconnect)

    def _on_disconnect(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None and self._task is not None:
            self.client_gone = True
            self._task.cancel()

    def stop(self) -> bool:
        """Stop listening; True when the client left, in which case the cancellation it
        caused is taken back (the task goes on, e.g. to release what it holds). False when
        another cancellation (shutdown) is still pending: the caller must re-raise."""
        task, self._task = self._task, None  # a callback already scheduled now does nothing
        watcher = self._watcher
        if watcher is not None:
            watcher.remove_done_callback(self._on_disconnect)
            watcher.cancel()
        if not self.client_gone or task is None:
            return self.client_gone
        return task.uncancel() == 0 if task.cancelling() else True


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once ``receive`` reports ``http.disconnect`` (request body messages are
    skipped)."""
    while (await receive())["type"] != "http.disconnect":
        pass
