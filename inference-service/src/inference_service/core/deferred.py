"""``Deferred``: work that runs while the current task waits, or when first needed.

The streaming hot path has two round trips before a first token: the admission queue's Redis
call and the Ollama request. CPU work that does not depend on their answers (building the
Ollama payload, opening a span, updating gauges) costs the same wherever it runs, but only
adds to the time to first token when it runs *between* them. ``Deferred(fn)`` schedules
``fn`` with ``loop.call_soon``: it runs as soon as the current task next gives the loop
control — while the Redis reply (or the Ollama head) is in flight — unless :meth:`result`
or :meth:`flush` needs it earlier, in which case it runs there. Either way it runs exactly
once, in the order the caller sees.

An ``Exception`` raised by ``fn`` is kept and re-raised by :meth:`result`, in the task that
needs the value, rather than reported by the loop's exception handler; :meth:`flush` only
runs ``fn`` and leaves any exception for :meth:`result`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_PENDING = object()


class Deferred(Generic[T]):
    """``fn()`` run on the loop's next turn or on first need, exactly once."""

    __slots__ = ("_error", "_fn", "_handle", "_value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn: Callable[[], T] | None = fn
        self._value: object = _PENDING
        self._error: BaseException | None = None
        self._handle = asyncio.get_running_loop().call_soon(self.flush)

    @property
    def done(self) -> bool:
        return self._fn is None

    def flush(self) -> None:
        """Run ``fn`` now unless it already ran (the scheduled turn then does nothing)."""
        fn, self._fn = self._fn, None
        if fn is None:
            return
        self._handle.cancel()
        try:
            self._value = fn()
        except Exception as exc:  # re-raised by result(), in the task that needs it
            self._error = exc

    def result(self) -> T:
        """``fn``'s value (running it now if it has not run yet); its exception if it raised."""
        self.flush()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
