"""RESP2, the Redis wire format, for :mod:`switchboard_common.lean_redis`: one reply parsed
from a buffer (:func:`parse_reply`) and one command encoded (:func:`encode_command`), with
redis-py's reply types and exceptions so the lean client is a drop-in for its callers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from redis._parsers.base import BaseParser
from redis.exceptions import DataError, InvalidResponse, RedisError

Arg: TypeAlias = bytes | str | int | float


class Incomplete(Exception):
    """The buffer ends inside a reply; ``need`` is the total length it must reach first
    (0 when unknown), so a large bulk reply is not re-parsed on every chunk."""

    def __init__(self, need: int) -> None:
        self.need = need


# An error reply as the redis-py exception it maps to (``NOSCRIPT`` → NoScriptError,
# ``ERR …`` → ResponseError, …) through redis-py's own table, so classes and messages match
# exactly what the same call through redis-py raises. (Untyped upstream: typed here.)
parse_error: Callable[[str], RedisError] = BaseParser.parse_error


def parse_reply(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply starting at ``pos``: ``(value, position after it)``.

    Raises ``Incomplete`` when ``buf`` ends first, InvalidResponse on anything else.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete(0)
    kind = buf[pos : pos + 1]
    try:
        if kind == b"$":
            length = int(buf[pos + 1 : end])
            if length < 0:
                return None, end + 2
            stop = end + 2 + length
            if len(buf) < stop + 2:
                raise Incomplete(stop + 2)
            if buf[stop : stop + 2] != b"\r\n":
                raise InvalidResponse(f"Protocol Error: bulk of {length} bytes not terminated")
            return buf[end + 2 : stop], stop + 2
        if kind == b":":
            return int(buf[pos + 1 : end]), end + 2
        if kind == b"*":
            count = int(buf[pos + 1 : end])
            if count < 0:
                return None, end + 2
            items: list[Any] = []
            pos = end + 2
            for _ in range(count):
                item, pos = parse_reply(buf, pos)
                items.append(item)
            return items, pos
        if kind == b"+":
            return buf[pos + 1 : end], end + 2
        if kind == b"-":
            return parse_error(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    except ValueError as exc:
        raise InvalidResponse(f"Protocol Error: {buf[pos:end]!r}") from exc
    raise InvalidResponse(f"Protocol Error: {buf[pos:end]!r}")


def encode_command(args: Sequence[Arg]) -> bytes:
    """A RESP array of bulk strings, encoded as redis-py's Encoder does (no bools)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool) or not isinstance(arg, int | float):
            raise DataError(
                f"Invalid input of type: '{type(arg).__name__}'. "
                "Convert to a bytes, string, int or float first."
            )
        else:
            data = repr(arg).encode()
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)
