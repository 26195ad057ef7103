"""Streams sent ahead of their checks (``core/speculation.py``): the held send and the
ledger (unit), then real processes — gateways, a real Redis and a generation upstream —
showing a stream reach the upstream while Redis is paused, its answer held until Redis
decides, and a stream that another replica's spending made over budget cut and charged
nothing."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from joserfc import jwt
from joserfc.jwk import OKPKey
from starlette.types import Message

from gateway.core.security import Decision
from gateway.core.speculation import AdmissionRefused, AheadLedger, HeldSend
from gateway.core.token_limits import wants_stream
from switchboard_common.internal_calls import (
    USAGE_SETTLEMENT_PATH,
    UsageSettlement,
    sign_internal_call,
)
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.fixtures.redis import RedisServer

# --- unit ----------------------------------------------------------------------------------


def test_streams_are_what_the_body_asks_for() -> None:
    assert wants_stream("/inference/chat", {"stream": True})
    assert not wants_stream("/inference/chat", {"stream": False})
    assert not wants_stream("/inference/chat", {})  # native and /v1: not streamed by default
    assert not wants_stream("/v1/chat/completions", {"stream": "yes"})
    assert wants_stream("/api/chat", {})  # Ollama's wire format streams by default
    assert not wants_stream("/api/chat", {"stream": False})


async def test_held_send_waits_for_the_decision_and_adds_its_headers() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    pending: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
    held = HeldSend(send, pending)
    start = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1")]}
    task = asyncio.ensure_future(held(start))
    await asyncio.sleep(0.01)
    assert not sent and not task.done()  # nothing before the checks answered
    pending.set_result(Decision(response_headers=[(b"ratelimit-limit", b"5")]))
    await task
    await held({"type": "http.response.body", "body": b"x", "more_body": False})
    assert sent[0]["headers"] == [(b"a", b"1"), (b"ratelimit-limit", b"5")]
    assert start["headers"] == [(b"a", b"1")]  # the proxy's message is not changed in place
    assert sent[1]["body"] == b"x"


async def test_held_send_refused_sends_nothing() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    pending: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
    pending.set_result(Decision(status=429, detail="no"))
    with pytest.raises(AdmissionRefused) as refused:
        await HeldSend(send, pending)({"type": "http.response.start", "status": 200})
    assert refused.value.decision.status == 429 and not sent


def test_the_ledger_bounds_what_goes_ahead_by_the_room_last_seen() -> None:
    ledger = AheadLedger()
    assert ledger.fits("r", 2, "b", 100, 60)
    assert not ledger.fits("r", 0, "b", 100, 60)  # no rate-limit room known
    assert not ledger.fits("r", 2, "b", 50, 60)  # the estimate does not fit the budget
    done = ledger.add("r", "b", 60)  # counted at once, before its checks even start
    assert not ledger.fits("r", 2, "b", 100, 60)  # 60 + 60 tokens > 100
    assert ledger.fits("r", 2, "b", 120, 60)
    assert not ledger.fits("r", 1, "b", 1000, 1)  # one slot, already out ahead
    done()
    assert ledger.requests == {} and ledger.tokens == {}  # counted back when answered


# --- through real processes ----------------------------------------------------------------

KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "ahead-test", "alg": "Ed25519"})
SECRET = secrets.token_urlsafe(24)
BUDGET = 400  # tokens per minute
NUM_PREDICT = 50


def bearer(sub: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": "switchboard-auth", "aud": "switchboard", "sub": sub, "sid": "s",
        "scope": "inference", "tier": "free", "role": "user", "username": f"user-{sub}",
        "iat": now, "nbf": now, "exp": now + 900, "jti": secrets.token_hex(4),
    }  # fmt: skip
    head = {"alg": "Ed25519", "typ": "at+jwt", "kid": "ahead-test"}
    return {"Authorization": "Bearer " + jwt.encode(head, claims, KEY, algorithms=["Ed25519"])}


def body(content: str, stream: bool = True) -> dict[str, object]:
    """Estimated at ceil(len(content) / 4) + NUM_PREDICT tokens."""
    return {"model": "m", "messages": [{"role": "user", "content": content}],
            "options": {"num_predict": NUM_PREDICT}, "stream": stream}  # fmt: skip


@dataclass
class Stack:
    gateways: list[str]
    upstream: str
    redis: redis.Redis

    def seen(self) -> dict[str, object]:
        resp = httpx.get(self.upstream + "/inference/_seen", timeout=5)
        resp.raise_for_status()
        result: dict[str, object] = resp.json()
        return result

    def arrival(self, content: str) -> float:
        requests = self.seen()["requests"]
        assert isinstance(requests, list)
        found = [r["arrived"] for r in requests if r["content"] == content]
        assert len(found) == 1, (content, requests)
        return float(found[0])


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Iterator[Stack]:
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    module_spawn(
        "generation",
        module_argv("tests.support.generation_upstream"),
        env={"GENERATION_PORT": str(port),
             "GENERATION_JWKS": json.dumps({"keys": [KEY.as_dict(private=False)]})},
        ready_url=upstream + "/ready",
    )  # fmt: skip
    gateways = []
    for i in range(2):
        gw_port = free_port()
        url = f"http://127.0.0.1:{gw_port}"
        module_spawn(
            f"gateway{i}",
            module_argv("gateway"),
            env={
                "GATEWAY_PORT": str(gw_port),
                **{f"GATEWAY_{s}_URL": upstream for s in ("AUTH", "INFERENCE", "MEMORY")},
                "GATEWAY_REDIS_URL": redis_server.url(11),
                "GATEWAY_RATE_LIMITS": "default=1000/minute",
                "GATEWAY_RATE_LIMIT_TIMEOUT_S": "5",  # a paused Redis is waited for
                "GATEWAY_TOKEN_LIMITS": f"default={BUDGET}/minute",
                "GATEWAY_COMPLETION_CACHE_ENABLED": "false",
                "SWITCHBOARD_INTERNAL_SECRET": SECRET,
            },
            ready_url=url + "/ready",
        )
        gateways.append(url)
    client = redis.Redis.from_url(redis_server.url(11))
    yield Stack(gateways, upstream, client)
    client.close()


def stream(gateway: str, headers: dict[str, str], content: str) -> tuple[httpx.Response, float]:
    """A streamed chat; the response (read whole) and when its head arrived (monotonic)."""
    with httpx.stream("POST", gateway + "/inference/chat", json=body(content),
                      headers=headers, timeout=15) as resp:  # fmt: skip
        head_at = time.monotonic()
        resp.read()
    return resp, head_at


def test_a_stream_goes_upstream_while_redis_decides(stack: Stack) -> None:
    """With Redis paused for 0.8 s, a streamed chat from a caller with room reaches the
    upstream at once, and its answer (with the limit headers) waits for Redis; a chat that
    is not streamed waits for Redis before it goes anywhere."""
    gateway, ann = stack.gateways[0], bearer("ann-" + secrets.token_hex(3))
    first, _ = stream(gateway, ann, "warm")  # checked first: the room is not known yet
    assert first.status_code == 200, first.text
    pause_s = 0.8
    for content, streamed in ((f"ahead-{secrets.token_hex(3)}", True),
                              (f"waits-{secrets.token_hex(3)}", False)):  # fmt: skip
        stack.redis.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "ALL")
        sent = time.monotonic()
        resp = httpx.post(gateway + "/inference/chat", json=body(content, streamed),
                          headers=ann, timeout=15)  # fmt: skip
        answered = time.monotonic()
        assert resp.status_code == 200, resp.text
        assert resp.headers["ratelimit-limit"] == "1000"  # the checks' headers are there
        assert "x-ratelimit-remaining-tokens" in resp.headers
        assert answered - sent >= pause_s * 0.9  # the answer waited for Redis
        arrived = stack.arrival(content) - sent
        if streamed:
            assert arrived < pause_s / 2, arrived  # … but the request went ahead
        else:
            assert arrived >= pause_s * 0.9, arrived  # checked first, as before


def test_a_stream_refused_after_going_ahead_is_cut_and_charges_nothing(stack: Stack) -> None:
    """Replica 0 last saw room for the user; replica 1 then spends the budget. The next
    stream to replica 0 goes ahead, Redis refuses it: the client gets the 429 (nothing of
    the stream), the upstream's stream is cancelled, and the reservation it was sent with
    is settled at zero, so a usage report for it charges nothing."""
    first_gw, second_gw = stack.gateways
    user = "bob-" + secrets.token_hex(3)
    bob = bearer(user)
    used_key = f"gw:tb:{{u:{user}}}:t"
    ok, _ = stream(first_gw, bob, "a" * 40)  # 10 + 50 tokens; replica 0 sees 340 left
    assert ok.status_code == 200
    while True:  # replica 1 spends the rest
        spent, _ = stream(second_gw, bob, "b" * 40)
        if spent.status_code == 429:
            break
        assert spent.status_code == 200
    used = int(stack.redis.get(used_key) or 0)
    cancelled = stack.seen()["cancelled"]
    content = "c" * 40
    refused, _ = stream(first_gw, bob, content)
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Token budget of 400 tokens" in refused.json()["detail"]
    assert "event: token" not in refused.text
    stack.arrival(content)  # it did go ahead …
    requests = stack.seen()["requests"]
    assert isinstance(requests, list)
    reservation = next(r["reservation"] for r in requests if r["content"] == content)
    deadline = time.monotonic() + 5
    while stack.seen()["cancelled"] == cancelled:  # … and was cut
        assert time.monotonic() < deadline, "the upstream stream was not cancelled"
        time.sleep(0.05)
    report = UsageSettlement(reservation=reservation, prompt_tokens=10, completion_tokens=5)
    data = report.model_dump_json().encode()
    signed = sign_internal_call(SECRET, USAGE_SETTLEMENT_PATH, data)
    settled = httpx.post(first_gw + USAGE_SETTLEMENT_PATH, content=data, headers=signed, timeout=5)
    assert settled.status_code == 200 and settled.json() == {"settled": False}
    assert int(stack.redis.get(used_key) or 0) == used  # charged nothing
