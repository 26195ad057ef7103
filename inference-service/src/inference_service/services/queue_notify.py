"""Wake-ups for queue waiters: one Redis pub/sub listener per process.

Scripts publish a queue's name (``backend|model``) on ``<prefix>:released`` whenever a
slot or a place in the queue frees up. :class:`ReleaseNotifier` turns each message into an
``asyncio.Event`` per queue name. A waiter takes the *current* event before it polls Redis
and waits on it afterwards, so a release that lands between the poll and the wait is not
missed: the message sets the old event and installs a fresh one for the next round.

Each wake-up is also counted per queue (:meth:`ReleaseNotifier.releases`): a waiter that
was ``n``-th in line cannot be admitted before ``n - 1`` more releases, so it may skip the
Redis round trip on earlier wake-ups (see ``RedisAdmissionQueue._wait_for_slot``).

Pub/sub is only an accelerator: if the listener is down (Redis restarting) waiters fall
back to polling, and the listener reconnects with a capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class ReleaseNotifier:
    """Maps release messages on ``channel`` to per-queue ``asyncio.Event`` objects."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self._events: dict[str, asyncio.Event] = {}
        self._releases: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def event(self, name: str) -> asyncio.Event:
        """The event the next release of queue ``name`` will set."""
        current = self._events.get(name)
        if current is None:
            current = self._events[name] = asyncio.Event()
        return current

    def releases(self, name: str) -> int:
        """How many release messages queue ``name`` has had. Scripts also publish when a
        waiter is admitted (positions moved): an over-count only costs an early poll."""
        return self._releases.get(name, 0)

    def wake(self, name: str, *, count: bool = True) -> None:
        """Wake every local waiter of queue ``name``. A local release wakes them at once
        with ``count=False``: its pub/sub message follows and is the one counted."""
        if count:
            self._releases[name] = self._releases.get(name, 0) + 1
        current = self._events.pop(name, None)
        if current is not None:
            current.set()

    def wake_all(self) -> None:
        for name in list(self._events):
            self.wake(name)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="queue-release-listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.connected.set()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message["data"]
                        self.wake(data.decode() if isinstance(data, bytes) else str(data))
            except (RedisError, OSError) as exc:
                self.connected.clear()
                self.wake_all()  # let waiters poll now rather than trust a dead channel
                logger.warning("queue release listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
