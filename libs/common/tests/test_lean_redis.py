"""The lean Redis client against a real redis-server (replies checked against redis-py's)
and against scripted TCP servers (silence, replies in pieces, a connection cut mid-reply)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    DataError,
    InvalidResponse,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchboard_common.lean_redis import LeanRedis, encode_command
from switchboard_devtools.ports import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def lean(redis_url: str) -> AsyncIterator[LeanRedis]:
    client = LeanRedis(redis_url, timeout_s=5)
    yield client
    client.close()


@pytest.fixture
async def reference(redis_url: str) -> AsyncIterator[Redis]:
    """redis-py on the same database: the behaviour the lean client must match."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """A scripted TCP server on a free loopback port (the OS picks it: no race)."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()


async def read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """One RESP command as the client sent it; None at EOF."""
    header = await reader.readline()
    if not header:
        return None
    args = []
    for _ in range(int(header[1:])):
        length = int((await reader.readline())[1:])
        args.append((await reader.readexactly(length + 2))[:-2])
    return args


# --- replies, against the real server and redis-py -------------------------------------------

REPLIES: list[tuple[str, list[str], list[Any], Any]] = [
    ("return 42", [], [], 42),
    ("return -7", [], [], -7),
    ("return ARGV[1]", [], ["héllo"], "héllo".encode()),
    ("return ''", [], [], b""),
    ("return nil", [], [], None),
    ("return redis.status_reply('FINE')", [], [], b"FINE"),
    ("return {}", [], [], []),
    (
        "return {1, 'two', {3, false, {'deep'}}, false}",
        [],
        [],
        [1, b"two", [3, None, [b"deep"]], None],
    ),
    ("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])", ["k"], ["v"], b"v"),
    ("return redis.call('GET', KEYS[1])", ["missing"], [], None),
    # argument encoding: ints and floats as their repr, bytes as is, str as UTF-8
    (
        "return ARGV",
        [],
        [1, -2, 1.5, 1e20, b"\x00\xff\r\n", "é"],
        [b"1", b"-2", b"1.5", b"1e+20", b"\x00\xff\r\n", "é".encode()],
    ),
]


@pytest.mark.parametrize(("source", "keys", "args", "expected"), REPLIES)
async def test_script_replies_match_redis_py(
    lean: LeanRedis, reference: Redis, source: str, keys: list[str], args: list[Any], expected: Any
) -> None:
    got = await lean.script(source)(keys, args)
    assert got == expected
    assert got == await reference.register_script(source)(keys, args)


async def test_sha_and_a_plain_command_match_redis_py(lean: LeanRedis, reference: Redis) -> None:
    source = "return 1"
    assert lean.script(source).sha == reference.register_script(source).sha
    assert await lean.execute("PING") == b"PONG"  # raw: no redis-py response callbacks
    with pytest.raises(DataError):
        await lean.execute("ECHO", True)  # type: ignore[arg-type]  # bools refused, as redis-py


async def test_noscript_loads_the_script_once_and_retries(
    lean: LeanRedis, reference: Redis
) -> None:
    script = lean.script("return 'loaded:' .. ARGV[1]")
    assert await script([], ["a"]) == b"loaded:a"  # not in the cache yet: NOSCRIPT, load, retry
    await reference.script_flush()
    assert await reference.script_exists(script.sha) == [False]
    assert await script([], ["b"]) == b"loaded:b"
    assert await reference.script_exists(script.sha) == [True]
    assert await script([], ["c"]) == b"loaded:c"


async def test_error_reply_raises_and_the_connection_stays_usable(
    lean: LeanRedis, reference: Redis
) -> None:
    client_id = await lean.execute("CLIENT", "ID")
    for source, keys in [
        ("return redis.error_reply('boom')", []),
        ("return redis.call('INCR', KEYS[1])", ["text"]),  # a Lua runtime error
    ]:
        await reference.set("text", "not a number")
        with pytest.raises(ResponseError) as lean_error:
            await lean.script(source)(keys, [])
        with pytest.raises(ResponseError) as reference_error:
            await reference.register_script(source)(keys, [])
        assert type(lean_error.value) is type(reference_error.value)
        assert str(lean_error.value) == str(reference_error.value)
    assert await lean.execute("CLIENT", "ID") == client_id  # the same connection, reused
    # an error nested in an array is a value, not raised (as redis-py)
    nested = "return {1, redis.error_reply('inner')}"
    one, error = await lean.script(nested)([], [])
    [_, reference_error_value] = await reference.register_script(nested)([], [])
    assert one == 1 and isinstance(error, ResponseError)
    assert str(error) == str(reference_error_value) == "inner"


async def test_concurrent_calls_get_their_own_replies_and_idle_connections_are_capped(
    redis_url: str, reference: Redis
) -> None:
    client = LeanRedis(redis_url, max_idle=4)
    echo = client.script("return ARGV[1]")
    db = redis_url.rsplit("/", 1)[1]
    # other tests' service processes may hold EVALSHA connections on this db too
    others = await evalsha_clients(reference, db)
    try:
        replies = await asyncio.gather(*(echo([], [f"caller-{i}"]) for i in range(50)))
        assert replies == [f"caller-{i}".encode() for i in range(50)]
        await wait_for_clients(reference, db, 4, others)  # the extras were closed on release
        client.close()
        await wait_for_clients(reference, db, 0, others)
    finally:
        client.close()


async def evalsha_clients(reference: Redis, db: str) -> set[str]:
    """Ids of the server's connections on ``db`` whose last command was EVALSHA."""
    listing = await reference.execute_command("CLIENT", "LIST")
    lines = listing.decode().splitlines() if isinstance(listing, bytes) else []
    return {
        line.split(" ", 1)[0] for line in lines if f" db={db} " in line and "cmd=evalsha" in line
    }


async def wait_for_clients(reference: Redis, db: str, expected: int, others: set[str]) -> None:
    """Until the server lists ``expected`` EVALSHA connections on ``db`` besides ``others``."""
    count = -1
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        count = len(await evalsha_clients(reference, db) - others)
        if count == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} EVALSHA connections open, expected {expected}")


async def test_db_in_the_url_is_honoured(lean: LeanRedis, reference: Redis, redis_url: str) -> None:
    await lean.script("return redis.call('SET', KEYS[1], ARGV[1])")(["where"], ["here"])
    await lean.execute("SET", "plain", b"also")
    assert await reference.mget("where", "plain") == [b"here", b"also"]  # redis-py on db N
    info = (await lean.execute("CLIENT", "INFO")).decode()
    assert f" db={redis_url.rsplit('/', 1)[1]} " in info


async def test_username_and_password_in_the_url_authenticate(
    reference: Redis, redis_url: str
) -> None:
    user, password = f"lean-{uuid.uuid4().hex[:8]}", "s3cret:/@"
    await reference.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    host_and_db = redis_url.removeprefix("redis://")
    good = LeanRedis(f"redis://{user}:s3cret%3A%2F%40@{host_and_db}")
    bad = LeanRedis(f"redis://{user}:wrong@{host_and_db}")
    try:
        assert await good.execute("ACL", "WHOAMI") == user.encode()
        with pytest.raises(AuthenticationError):
            await bad.execute("PING")
    finally:
        good.close()
        bad.close()
        await reference.execute_command("ACL", "DELUSER", user)


# --- failures ----------------------------------------------------------------------------


async def test_connect_refused_is_a_connection_error_fast() -> None:
    client = LeanRedis(f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")
    assert time.monotonic() - start < 1


async def test_no_reply_is_a_timeout_and_that_connection_is_dropped(serve) -> None:  # type: ignore[no-untyped-def]
    opened, closed = 0, 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal opened, closed
        opened += 1
        while await read_command(reader) is not None:
            pass  # never answers
        closed += 1

    client = LeanRedis(f"redis://127.0.0.1:{await serve(silent)}", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        await client.execute("PING")
    assert 0.25 < time.monotonic() - start < 1.5
    with pytest.raises(RedisTimeoutError):
        await client.execute("PING")
    await asyncio.sleep(0.05)
    assert (opened, closed) == (2, 2)  # each timed-out connection closed, none reused
    client.close()


async def test_a_cancelled_call_closes_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_command(reader) is not None:
            pass
        closed.set()

    client = LeanRedis(f"redis://127.0.0.1:{await serve(silent)}", timeout_s=5)
    call = asyncio.ensure_future(client.execute("PING"))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(closed.wait(), 1)
    client.close()


async def test_after_a_cancelled_call_the_next_call_gets_its_own_reply(
    lean: LeanRedis, reference: Redis
) -> None:
    waiting = asyncio.ensure_future(lean.execute("BLPOP", "wakeup", 2))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # Were the blocked connection pooled, ECHO would queue behind BLPOP on it and get the
    # BLPOP's reply once the push below wakes it (unsolicited bytes alone close it).
    echo = asyncio.ensure_future(lean.execute("ECHO", "mine"))
    await asyncio.sleep(0.02)
    await reference.rpush("wakeup", "late")
    assert await echo == b"mine"
    assert await lean.execute("ECHO", "again") == b"again"


NESTED = b"*4\r\n:1\r\n$5\r\nhello\r\n*2\r\n$-1\r\n+OK\r\n*-1\r\n"
BIG = b"x" * 300_000


async def test_replies_in_pieces_are_parsed(serve) -> None:  # type: ignore[no-untyped-def]
    connections = 0

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while (command := await read_command(reader)) is not None:
            if command == [b"NESTED"]:  # byte by byte
                pieces = [NESTED[i : i + 1] for i in range(len(NESTED))]
            elif command == [b"BIG"]:  # a large bulk in uneven chunks
                reply = b"$%d\r\n%s\r\n" % (len(BIG), BIG)
                pieces = [reply[i : i + 7_000] for i in range(0, len(reply), 7_000)]
            else:  # the CRLF after a bulk, and the one after a header, split off
                pieces = [b"$3\r", b"\nab", b"c\r", b"\n"]
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.001)

    client = LeanRedis(f"redis://127.0.0.1:{await serve(trickle)}")
    assert await client.execute("NESTED") == [1, b"hello", [None, b"OK"], None]
    assert await client.execute("BIG") == BIG
    assert await client.execute("SPLIT") == b"abc"
    assert await client.execute("NESTED") == [1, b"hello", [None, b"OK"], None]
    assert connections == 1  # every reply complete: the one connection reused throughout
    client.close()


async def test_connection_cut_mid_reply_or_garbage_is_an_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def faulty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        command = await read_command(reader)
        if command == [b"CUT"]:
            writer.write(b"*2\r\n$10\r\nabc")
        elif command == [b"GARBAGE"]:
            writer.write(b"?what\r\n")
        else:
            writer.write(b"+PONG\r\n")
            await read_command(reader)
        await writer.drain()
        writer.close()

    client = LeanRedis(f"redis://127.0.0.1:{await serve(faulty)}")
    with pytest.raises(RedisConnectionError):
        await client.execute("CUT")
    with pytest.raises(InvalidResponse):
        await client.execute("GARBAGE")
    assert await client.execute("PING") == b"PONG"  # a fresh connection, not a failed one
    client.close()


# --- the rest -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "supported"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://redis", True),
        ("redis://redis:6380/", True),
        ("redis://user:pa%40ss@redis:6379/15", True),
        ("redis://:password@redis/2", True),
        ("rediss://redis:6379/0", False),
        ("unix:///run/redis.sock", False),
        ("redis://redis:6379/0?protocol=3", False),
        ("redis://redis:6379/zero", False),
        ("redis://redis:99999/0", False),
        ("redis:///0", False),
        ("http://redis:6379/0", False),
    ],
)
def test_supports(url: str, supported: bool) -> None:
    assert LeanRedis.supports(url) is supported
    if not supported:
        with pytest.raises(ValueError, match="redis://"):
            LeanRedis(url)


def test_a_command_is_one_resp_array() -> None:
    assert encode_command(["SET", b"k", 1]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"


def test_works_on_uvloop(redis_url: str) -> None:
    """The services run on uvloop, whose transports differ from asyncio's."""

    async def calls() -> list[Any]:
        client = LeanRedis(redis_url)
        try:
            echo = client.script("return {ARGV[1], tonumber(ARGV[1]) * 2}")
            return await asyncio.gather(*(echo([], [i]) for i in range(20)))
        finally:
            client.close()

    # in a thread of its own: uvloop.run must not replace this thread's (pytest's) loop
    with ThreadPoolExecutor(1) as pool:
        replies = pool.submit(uvloop.run, calls()).result(timeout=10)
    assert replies == [[str(i).encode(), 2 * i] for i in range(20)]


async def test_send_now_writes_at_once_and_reply_settles_like_execute(
    lean: LeanRedis, reference: Redis
) -> None:
    script = lean.script("return redis.call('INCR', KEYS[1])")
    assert script.send_now(["lean:sent"], []) is None  # no idle connection yet
    await reference.delete("lean:sent")
    assert await script(["lean:sent"], []) == 1
    pending = script.send_now(["lean:sent"], [])
    assert pending is not None
    await asyncio.sleep(0.05)  # not awaited yet: Redis already ran it
    assert await reference.get("lean:sent") == b"2"
    assert await script.reply(pending, ["lean:sent"], []) == 2
    assert await lean.execute("PING") == b"PONG"  # the connection went back to the pool
    await reference.set("lean:no-int", "a")
    failing = lean.send_now("INCR", "lean:no-int")  # an error reply raises, as in execute()
    assert failing is not None
    with pytest.raises(ResponseError):
        await failing.reply()


async def test_send_now_reloads_a_script_the_server_lost(lean: LeanRedis, reference: Redis) -> None:
    script = lean.script("return 'again:' .. ARGV[1]")
    assert await script([], ["a"]) == b"again:a"
    await reference.script_flush()
    pending = script.send_now([], ["b"])
    assert pending is not None
    assert await script.reply(pending, [], ["b"]) == b"again:b"
