"""A lean async Redis client for hot-path Lua calls: an asyncio Protocol over a tiny RESP2
codec (:mod:`switchboard_common.lean_resp`).

Why: the inference service's admission queue makes one EVALSHA before every generation's
first token, so the client's per-call cost is in every stream's time to first token. On
this 2-core machine (uvloop, local redis-server, median of 500-1000 sequential calls):

    redis-py asyncio ``register_script`` call    ~0.35 ms per EVALSHA round trip
                                                 (0.23 ms median in a later run, uninstrumented)
    raw asyncio Protocol, same EVALSHA           ~0.10 ms
    this client, same EVALSHA (10 args)          ~0.10 ms (p99 0.27 ms vs redis-py's 0.42)

Nearly all of the difference is redis-py's per-command machinery (pool checkout, stream
reader, parser objects, retry wrapper). This client does per call: one encode, one
``transport.write``, one parse of the reply, one timer, and no task creation.

Scope, deliberately small (like :mod:`switchboard_common.lean_http`): ``redis://`` URLs
only (:meth:`LeanRedis.supports`; callers keep redis-py for TLS, unix sockets or query
options), RESP2, one command in flight per connection (no pipelining, no pub/sub), a
keep-alive pool of idle connections, and no retries: a failed call raises and its
connection is dropped.

Replies decode as redis-py's do with ``decode_responses=False``, so a swap is invisible:
``:int`` → int, ``$bulk`` and ``+status`` → bytes (``$-1`` → None), ``*array`` → list
(``*-1`` → None), an error reply → the redis-py exception it maps to (raised at the top
level, an exception instance inside an array, as redis-py does).

Errors are redis-py's classes, so existing ``except RedisError`` code keeps working::

    RedisError
    ├── ConnectionError   connect refused / unreachable / connect timeout, or the
    │                     connection closed before the reply was complete
    ├── TimeoutError      no complete reply within ``timeout_s`` (the connection is closed)
    ├── ResponseError     an error reply (NoScriptError, ReadOnlyError, … as redis-py maps
    │                     them); the connection stays usable
    └── InvalidResponse   bytes that are not RESP2 (the connection is closed)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias, cast
from urllib.parse import unquote, urlsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchboard_common.lean_resp import Arg, Incomplete, encode_command, parse_reply

__all__ = ["Arg", "LeanRedis", "LeanScript", "PendingReply", "Script", "encode_command"]
#: What :meth:`LeanRedis.script` and redis-py's ``register_script`` both return, so a caller
#: can take either: ``await script(keys=[…], args=[…])``.
Script: TypeAlias = Callable[..., Awaitable[Any]]

CLOSED_BY_SERVER = "Connection closed by server."  # redis-py's message for the same event


class RedisConnection(asyncio.Protocol):
    """One TCP connection to Redis, one command at a time."""

    __slots__ = ("_buffer", "_need", "_waiter", "closed", "loop", "transport")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._waiter: asyncio.Future[Any] | None = None
        self._buffer = bytearray()  # the start of a reply that came in pieces
        self._need = 0

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # bytes nobody asked for (a reply to a command whose caller is gone): the
            # request/reply pairing is lost, so the connection cannot be trusted
            self.close()
            return
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._need:
                return
            data = bytes(self._buffer)
        try:
            reply, end = parse_reply(data, 0)
        except Incomplete as incomplete:
            if not self._buffer:
                self._buffer += data
            self._need = incomplete.need
            return
        except InvalidResponse as exc:
            waiter.set_exception(exc)
            self.close()
            return
        self._buffer.clear()
        self._need = 0
        if end != len(data):
            waiter.set_exception(InvalidResponse("Protocol Error: bytes after the reply"))
            self.close()
            return
        waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(RedisConnectionError(CLOSED_BY_SERVER))

    # --- use ------------------------------------------------------------------------------
    async def request(self, payload: bytes, timeout_s: float) -> Any:
        """Send one command and wait for its reply (an error reply is returned, not
        raised, so the caller can still pool the connection). On a timeout the
        connection is closed; on cancellation the caller must close it."""
        waiter, timer = self.send(payload, timeout_s)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def send(
        self, payload: bytes, timeout_s: float
    ) -> tuple[asyncio.Future[Any], asyncio.TimerHandle]:
        """Write one command now; its reply (or timeout) completes the returned future.
        The caller cancels the timer and clears ``_waiter`` once it has the reply."""
        if self.closed or self.transport is None:
            raise RedisConnectionError(CLOSED_BY_SERVER)
        waiter = self._waiter = self.loop.create_future()
        # A plain timer, not asyncio.timeout(): no task cancel/uncancel dance per call.
        timer = self.loop.call_later(timeout_s, self._time_out, waiter, timeout_s)
        self.transport.write(payload)
        return waiter, timer

    def _time_out(self, waiter: asyncio.Future[Any], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(RedisTimeoutError(f"No reply from Redis within {timeout_s:g}s"))
            self.close()  # its reply may still come: never reuse it

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanRedis:
    """Keep-alive connections to one Redis database; see the module docstring for scope.

    Many coroutines may call at once: each takes an idle connection or opens a new one
    (no lock, no queue); at most ``max_idle`` are kept once released.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 2.0,
        max_idle: int = 16,
    ) -> None:
        if not self.supports(url):
            raise ValueError("LeanRedis takes redis://[user:password@]host[:port][/db] only")
        parts = urlsplit(url)
        self.host = unquote(parts.hostname or "")
        self.port = parts.port or 6379
        self.db = int(parts.path.strip("/") or 0)
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._handshake: list[bytes] = []  # sent on every new connection, before use
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if username or password:
            credentials = (username, password or "") if username else (password or "",)
            self._handshake.append(encode_command(("AUTH", *credentials)))
        if self.db:
            self._handshake.append(encode_command(("SELECT", self.db)))
        self._idle: deque[RedisConnection] = deque()
        self._closed = False

    @classmethod
    def supports(cls, url: str) -> bool:
        """True for ``redis://[user:password@]host[:port][/db]``; False for rediss://,
        unix://, query options (``?protocol=3``, ``?socket_timeout=…``) or anything this
        client would not honour; such callers keep redis-py."""
        try:
            parts = urlsplit(url)
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            return False
        db = parts.path.strip("/")
        return (
            parts.scheme == "redis"
            and bool(parts.hostname)
            and port_ok
            and not parts.query
            and not parts.fragment
            and "/" not in db
            and (db == "" or db.isdecimal())
        )

    def script(self, source: str) -> LeanScript:
        return LeanScript(self, source)

    async def execute(self, *args: Arg) -> Any:
        """Run one command; its reply decoded as described in the module docstring."""
        payload = encode_command(args)
        conn = self._idle_connection() or await self._connect()
        try:
            reply = await conn.request(payload, self.timeout_s)
        except BaseException:
            # timeout, lost connection, or a cancelled caller whose reply may still
            # arrive: in every case this connection is done
            conn.close()
            raise
        return self._settle(conn, reply)

    def send_now(self, *args: Arg) -> PendingReply | None:
        """Write one command at once, on an idle connection, without yielding to the loop
        (None when no connection is idle: use :meth:`execute`). For a caller with CPU
        work to do while the command travels: it ``await``s :meth:`PendingReply.reply`
        later — always, since the connection is in use until then."""
        conn = self._idle_connection()
        if conn is None:
            return None
        waiter, timer = conn.send(encode_command(args), self.timeout_s)
        return PendingReply(self, conn, waiter, timer)

    def _settle(self, conn: RedisConnection, reply: Any) -> Any:
        """Pool ``conn`` again and return ``reply``, or raise the error it is."""
        if isinstance(reply, RedisError):
            if isinstance(reply, RedisConnectionError):  # e.g. LOADING, max clients reached
                conn.close()
            self._release(conn)
            raise reply
        self._release(conn)
        return reply

    def close(self) -> None:
        """Close idle connections; connections in use close when their call ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

    # --- pool -----------------------------------------------------------------------------
    def _idle_connection(self) -> RedisConnection | None:
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the warmest socket
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: RedisConnection) -> None:
        if not conn.closed and not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> RedisConnection:
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: RedisConnection(loop), self.host, self.port
                )
        except TimeoutError as exc:  # asyncio's (builtins), not redis-py's
            raise RedisConnectionError(
                f"Timeout connecting to {where} after {self.connect_timeout_s:g}s"
            ) from exc
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to {where}: {exc}") from exc
        try:
            for command in self._handshake:
                reply = await conn.request(command, self.timeout_s)
                if isinstance(reply, RedisError):
                    raise reply
        except BaseException:
            conn.close()
            raise
        return conn


class PendingReply:
    """A command :meth:`LeanRedis.send_now` already wrote; :meth:`reply` waits for its
    answer, with :meth:`LeanRedis.execute`'s outcomes (decoded reply, or the error)."""

    __slots__ = ("_client", "_conn", "_timer", "_waiter")

    def __init__(
        self,
        client: LeanRedis,
        conn: RedisConnection,
        waiter: asyncio.Future[Any],
        timer: asyncio.TimerHandle,
    ) -> None:
        self._client = client
        self._conn = conn
        self._waiter = waiter
        self._timer = timer

    async def reply(self) -> Any:
        conn = self._conn
        try:
            reply = await self._waiter
        except BaseException:
            conn.close()  # as in execute(): timed out, lost, or a cancelled caller
            raise
        finally:
            self._timer.cancel()
            conn._waiter = None
        return self._client._settle(conn, reply)


class LeanScript:
    """A Lua script run by EVALSHA, loaded on demand: like redis-py's ``Script``."""

    __slots__ = ("client", "sha", "source")

    def __init__(self, client: LeanRedis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Not in this server's script cache (restart, SCRIPT FLUSH, a failover):
            # load it once and retry, as redis-py does; the server's sha wins.
            sha = await self.client.execute("SCRIPT", "LOAD", self.source)
            self.sha = sha.decode()
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)

    def send_now(self, keys: Sequence[str], args: Sequence[Arg]) -> PendingReply | None:
        """EVALSHA written at once (:meth:`LeanRedis.send_now`); None when no connection
        is idle. Await :meth:`reply` for the result."""
        return self.client.send_now("EVALSHA", self.sha, len(keys), *keys, *args)

    async def reply(self, pending: PendingReply, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The result of a :meth:`send_now` call (loading the script and running it again
        when the server did not have it, like :meth:`__call__`)."""
        try:
            return await pending.reply()
        except NoScriptError:
            return await self(keys, args)
