"""Token budgets: which requests, what estimate, and the Redis window (real Redis) —
exact across replicas, settled once, failing open; the settlement route in a real gateway."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from gateway.config import Settings
from gateway.core.token_limits import TokenLimitPolicy
from gateway.models.limits import Limit
from gateway.routes.usage_settlement import MAX_REPORT_BYTES
from gateway.services.token_budget import (
    DECISIONS,
    BudgetUnavailable,
    InvalidReservation,
    Reservation,
    TokenBudget,
    TokenOutcome,
    _mac,
)
from switchboard_common import create_redis
from switchboard_common.identity import Principal
from switchboard_common.internal_calls import (
    MAX_SETTLEMENT_BATCH,
    USAGE_SETTLEMENT_PATH,
    InvalidInternalCall,
    UsageSettlement,
    UsageSettlementBatch,
    sign_internal_call,
    verify_internal_call,
)
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.fixtures.redis import RedisServer

SECRET = b"test-internal-secret"


def user(tier: str = "free", role: str = "user", api_key_id: str | None = None) -> Principal:
    return Principal(sub="u1", username="ann", tier=tier, role=role, api_key_id=api_key_id)


def http(path: str, method: str = "POST") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "headers": []}


@pytest.fixture
def policy() -> TokenLimitPolicy:
    settings = Settings(token_limits="default=1000/minute,pro=0", token_estimate_max_completion=100)
    return TokenLimitPolicy(settings)


# --- policy: which requests, which key ---------------------------------------------------


def test_only_generation_routes_of_non_admin_principals_are_budgeted(
    policy: TokenLimitPolicy,
) -> None:
    rule = policy.for_request(http("/v1/chat/completions"), user())
    assert rule is not None and rule.key == "u:u1" and rule.limit == Limit(1000, 60)
    assert not rule.probe
    keyed = policy.for_request(http("/api/generate"), user(api_key_id="k9"))
    assert keyed is not None and keyed.key == "u:u1"  # a user's API keys share its budget
    assert policy.for_request(http("/inference/models", "GET"), user()) is None
    assert policy.for_request(http("/inference/embed"), user()) is None
    assert policy.for_request(http("/inference/chat", "GET"), user()) is None
    assert policy.for_request(http("/inference/chat"), user(role="admin")) is None
    assert policy.for_request(http("/inference/chat"), None) is None  # public: none
    assert policy.for_request(http("/inference/chat"), user(tier="pro")) is None  # 0: unlimited
    ws = policy.for_request({"type": "websocket", "path": "/inference/ws"}, user())
    assert ws is not None and ws.probe


def test_estimate_from_the_body(policy: TokenLimitPolicy) -> None:
    chat: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    assert policy.estimate(json.dumps(chat).encode(), None) == 100 + 100  # cap: none asked
    # each route's own length field, as the inference service reads it; others are ignored
    v1 = "/v1/chat/completions"
    chat["max_tokens"] = 7
    assert policy.estimate(json.dumps(chat).encode(), None, v1) == 100 + 7
    assert policy.estimate(json.dumps(chat).encode(), None, "/inference/chat") == 100 + 100
    chat["max_completion_tokens"] = 30  # /v1: max_completion_tokens wins over max_tokens
    assert policy.estimate(json.dumps(chat).encode(), None, v1) == 100 + 30
    chat["max_tokens"], chat["options"] = 1, {"num_predict": -1}  # native: until it stops
    assert policy.estimate(json.dumps(chat).encode(), None, "/api/chat") == 100 + 100
    gen = {"model": "m", "prompt": "y" * 41, "system": "z" * 3, "options": {"num_predict": 500}}
    assert policy.estimate(json.dumps(gen).encode(), None) == 11 + 100  # capped at the max
    parts = {"messages": [{"content": [{"type": "text", "text": "p" * 8}]}],
             "options": {"num_predict": 0}}  # fmt: skip
    assert policy.estimate(json.dumps(parts).encode(), None) == 2
    deep = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert policy.estimate(deep, None) == len(deep) // 4 + 100  # no RecursionError
    code = {"code": "c" * 80, "options": {"num_predict": -1}}  # -1: until it stops → cap
    assert policy.estimate(json.dumps(code).encode(), None) == 20 + 100
    assert policy.estimate(None, 4000) == 1000 + 100  # streamed: from Content-Length
    assert policy.estimate(None, None) == 100
    assert policy.estimate(b"not json", None) == 2 + 100


# --- the signed internal call ------------------------------------------------------------


def test_internal_call_signature_binds_body_path_and_time() -> None:
    body = b'{"reservation": "r", "prompt_tokens": 1, "completion_tokens": 2}'
    headers = sign_internal_call("s3cret", USAGE_SETTLEMENT_PATH, body, now=1000)
    ts, sig = headers["X-Switchboard-Timestamp"], headers["X-Switchboard-Call-Signature"]
    verify_internal_call("s3cret", USAGE_SETTLEMENT_PATH, body, ts, sig, now=1010)
    bad = [
        ("other", USAGE_SETTLEMENT_PATH, body, ts, sig, 1010),  # wrong secret
        ("s3cret", "/gateway/other", body, ts, sig, 1010),  # another endpoint
        ("s3cret", USAGE_SETTLEMENT_PATH, body + b" ", ts, sig, 1010),  # tampered
        ("s3cret", USAGE_SETTLEMENT_PATH, body, "1001", sig, 1010),  # another time
        ("s3cret", USAGE_SETTLEMENT_PATH, body, ts, sig, 1000 + 121),  # too old: replay
        ("s3cret", USAGE_SETTLEMENT_PATH, body, None, None, 1010),  # unsigned
        ("s3cret", USAGE_SETTLEMENT_PATH, body, ts, "v2=" + sig[3:], 1010),
    ]
    for secret, path, data, stamp, signature, now in bad:
        with pytest.raises(InvalidInternalCall):
            verify_internal_call(secret, path, data, stamp, signature, now=now)


def test_reservation_round_trip_and_forgeries() -> None:
    res = Reservation("abc", 60_000, "k:key:with:colons")
    assert Reservation.open(res.seal(SECRET), SECRET) == res
    with pytest.raises(InvalidReservation):  # sealed by someone else
        Reservation.open(res.seal(b"another secret"), SECRET)
    forged = Reservation("abc", 60_000, "u:victim").seal(SECRET).rpartition(".")[0] + ".00"
    with pytest.raises(InvalidReservation):
        Reservation.open(forged, SECRET)
    for garbage in ("", "a.b", "a.60000.!!!", "a.x.dTox", "a.0.dTox", ".60000.dTox"):
        with pytest.raises(InvalidReservation):
            Reservation.open(f"{garbage}.{_mac(SECRET, garbage)}", SECRET)


def test_headers_follow_openai_names() -> None:
    ok = TokenOutcome(True, 1000, 250, 12.2, "r")
    assert dict(ok.headers()) == {
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"250",
        b"x-ratelimit-reset-tokens": b"13s",
    }
    denied = dict(TokenOutcome(False, 1000, -5, 0.2).headers())
    assert denied[b"retry-after"] == b"1" and denied[b"x-ratelimit-remaining-tokens"] == b"0"
    assert TokenOutcome(True, 0, 0, 0, "r").headers() == []  # not enforced: no promises


# --- the Redis window ---------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, timeout_s=1)
    yield client
    await client.aclose()


def settlement(outcome: TokenOutcome, tokens: int, seq: int = 0) -> UsageSettlement:
    assert outcome.reservation is not None
    return UsageSettlement(
        reservation=outcome.reservation, seq=seq, prompt_tokens=tokens, completion_tokens=0
    )


async def test_reserve_until_exhausted_then_retry_after(redis: Redis) -> None:
    budget = TokenBudget(redis, SECRET, timeout_s=1)
    limit = Limit(1000, 60)
    first = await budget.reserve("u:a", limit, 400)
    second = await budget.reserve("u:a", limit, 400)
    assert first.allowed and second.allowed and second.remaining == 200
    third = await budget.reserve("u:a", limit, 400)
    assert not third.allowed and third.remaining == 200 and third.reservation is None
    assert 59 < third.reset_s <= 60  # the first charge leaving makes room
    small = await budget.reserve("u:a", limit, 200)
    assert small.allowed and small.remaining == 0
    assert not (await budget.reserve("u:a", limit, 1)).allowed
    assert (await budget.reserve("u:b", limit, 400)).allowed  # budgets are per key


async def test_one_request_over_the_limit_passes_only_on_an_empty_window(redis: Redis) -> None:
    budget = TokenBudget(redis, SECRET, timeout_s=1)
    limit = Limit(100, 60)
    huge = await budget.reserve("u:c", limit, 5000)  # never fits: it would be locked out
    assert huge.allowed and huge.remaining == -4900
    assert not (await budget.reserve("u:c", limit, 1)).allowed


async def test_settlement_replaces_the_estimate_once(redis: Redis) -> None:
    budget = TokenBudget(redis, SECRET, timeout_s=1)
    limit = Limit(1000, 60)
    outcome = await budget.reserve("u:d", limit, 600)
    assert (await budget.reserve("u:d", limit, 500)).allowed is False
    assert await budget.settle(settlement(outcome, 150)) is True
    assert await budget.settle(settlement(outcome, 900)) is False  # a replay changes nothing
    probe = await budget.reserve("u:d", limit, 1, probe=True)
    assert probe.allowed and probe.remaining == 1000 - 150  # a probe charges nothing
    # a WebSocket's later generations (seq > 0) are charged as they are reported
    assert await budget.settle(settlement(outcome, 50, seq=1)) is True
    assert await budget.settle(settlement(outcome, 50, seq=1)) is False
    assert (await budget.reserve("u:d", limit, 800)).allowed is True  # 150 + 50 + 800
    assert (await budget.reserve("u:d", limit, 1)).allowed is False


async def test_two_replicas_admit_exactly_what_fits(redis_url: str) -> None:
    clients = [create_redis(redis_url, timeout_s=5) for _ in range(2)]
    budgets = [TokenBudget(c, SECRET, timeout_s=5) for c in clients]  # a loaded CI machine
    try:
        outcomes = await asyncio.gather(
            *(budgets[i % 2].reserve("u:e", Limit(1000, 60), 30) for i in range(100))
        )
    finally:
        for client in clients:
            await client.aclose()
    assert sum(o.allowed for o in outcomes) == 33  # 33 * 30 = 990; a 34th would be 1020
    assert len({o.reservation for o in outcomes if o.allowed}) == 33


async def test_the_window_slides_and_never_refills_early(redis: Redis) -> None:
    budget = TokenBudget(redis, SECRET, timeout_s=1)
    limit = Limit(100, 1)
    assert (await budget.reserve("u:f", limit, 60)).allowed
    await asyncio.sleep(0.5)
    assert (await budget.reserve("u:f", limit, 40)).allowed
    assert not (await budget.reserve("u:f", limit, 30)).allowed
    await asyncio.sleep(0.55)  # the first 60 left; the later 40 still count
    after = await budget.reserve("u:f", limit, 30)
    assert after.allowed and after.remaining == 30
    assert not (await budget.reserve("u:f", limit, 31)).allowed


async def test_a_generation_longer_than_the_window_is_charged_when_settled(redis: Redis) -> None:
    budget = TokenBudget(redis, SECRET, timeout_s=1)
    limit = Limit(100, 1)
    outcome = await budget.reserve("u:g", limit, 10)
    await asyncio.sleep(1.1)  # its estimate has left the window
    assert await budget.settle(settlement(outcome, 90))
    left = await budget.reserve("u:g", limit, 11)
    assert not left.allowed and left.remaining == 10


async def test_redis_down_fails_open_with_a_reservation() -> None:
    client = create_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    budget = TokenBudget(client, SECRET, timeout_s=0.05, retry_s=30)
    before = DECISIONS.labels("fail_open")._value.get()
    start = time.monotonic()
    try:
        outcomes = [await budget.reserve("u:h", Limit(1, 60), 100) for _ in range(10)]
    finally:
        await client.aclose()
    assert time.monotonic() - start < 1.0  # one failed attempt, then Redis is skipped
    assert all(o.allowed and o.headers() == [] and o.reservation for o in outcomes)
    assert DECISIONS.labels("fail_open")._value.get() - before == 10


# --- the settlement route, in a real gateway process ---------------------------------------


def test_settlement_route_takes_only_signed_reports(
    spawn: Spawn, redis_server: RedisServer
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_urlsafe(24)
    spawn(
        "gateway",
        module_argv("gateway"),
        env={
            "GATEWAY_PORT": str(port),
            "GATEWAY_REDIS_URL": redis_server.url(12),
            "SWITCHBOARD_INTERNAL_SECRET": secret,
        },
        ready_url=url + "/ready",
    )
    reservation = Reservation(secrets.token_urlsafe(9), 60_000, f"u:{secrets.token_hex(4)}")
    sealed = reservation.seal(secret.encode())
    report = UsageSettlement(reservation=sealed, prompt_tokens=3, completion_tokens=4)
    body = report.model_dump_json().encode()

    def post(data: bytes, key: str) -> httpx.Response:
        headers = sign_internal_call(key, USAGE_SETTLEMENT_PATH, data)
        return httpx.post(url + USAGE_SETTLEMENT_PATH, content=data, headers=headers, timeout=5)

    unsigned = httpx.post(url + USAGE_SETTLEMENT_PATH, content=body, timeout=5)
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert post(body, "not-the-secret").status_code == 401
    first = post(body, secret)
    assert first.status_code == 200 and first.json() == {"settled": True}
    assert post(body, secret).json() == {"settled": False}  # idempotent
    garbage = json.dumps({"reservation": "nope", "prompt_tokens": 1, "completion_tokens": 1})
    assert post(garbage.encode(), secret).status_code == 422
    forged = UsageSettlement(
        reservation=reservation.seal(b"not-the-secret"), prompt_tokens=1, completion_tokens=1
    )
    assert post(forged.model_dump_json().encode(), secret).status_code == 422
    assert post(b'{"reservation": 1}', secret).status_code == 422
    openapi = httpx.get(url + "/openapi.json", timeout=5)
    assert USAGE_SETTLEMENT_PATH not in openapi.text  # not advertised to clients
    # served as raw ASGI (routes/usage_settlement.py), inside the app's user middleware
    traced = post(body, secret)
    assert traced.headers["x-request-id"]
    echoed = httpx.post(
        url + USAGE_SETTLEMENT_PATH,
        content=body,
        headers={**sign_internal_call(secret, USAGE_SETTLEMENT_PATH, body), "X-Request-ID": "r-42"},
        timeout=5,
    )
    assert echoed.headers["x-request-id"] == "r-42"
    wrong_method = httpx.get(url + USAGE_SETTLEMENT_PATH, timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.headers["content-type"] == "application/problem+json"
    too_big = post(b"{" + b" " * MAX_REPORT_BYTES + b"}", secret)
    assert too_big.status_code == 413
    assert too_big.json()["instance"] == USAGE_SETTLEMENT_PATH
    metrics = httpx.get(url + "/metrics", timeout=5).text
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("switchboard_http_requests_total")
        and f'route="{USAGE_SETTLEMENT_PATH}"' in line
        and 'status="200"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 4

    # a batch: each report settled on its own, answered in order; a forged one spoils
    # nothing else, and a batch that is not a list of reports is refused whole
    fresh = UsageSettlement(
        reservation=Reservation(secrets.token_urlsafe(9), 60_000, reservation.key).seal(
            secret.encode()
        ),
        prompt_tokens=1,
        completion_tokens=1,
    )
    batch = UsageSettlementBatch(reports=[fresh, report, forged, fresh])
    answer = post(batch.model_dump_json().encode(), secret)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": ["settled", "duplicate", "invalid", "duplicate"]}
    assert post(b'{"reports": []}', secret).status_code == 422
    assert post(b'{"reports": [{"reservation": 1}]}', secret).status_code == 422
    too_many = {"reports": [fresh.model_dump()] * (MAX_SETTLEMENT_BATCH + 1)}
    assert post(json.dumps(too_many).encode(), secret).status_code == 422


async def test_settlement_route_answers_503_when_budgets_are_unreachable() -> None:
    """Redis away: a retryable 503 problem (the service retries once, then counts a failure)."""
    from fastapi.routing import iter_route_contexts

    from gateway.main import create_app

    gateway = create_app(Settings())
    secret = gateway.api.state.settings.internal_secret.get_secret_value()

    class Unreachable:
        async def settle(self, report: UsageSettlement) -> bool:
            raise BudgetUnavailable("ConnectionError")

    gateway.api.state.token_budget = Unreachable()
    report = UsageSettlement(reservation="r", prompt_tokens=1, completion_tokens=1)
    body = report.model_dump_json().encode()
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        answer = await client.post(
            USAGE_SETTLEMENT_PATH,
            content=body,
            headers=sign_internal_call(secret, USAGE_SETTLEMENT_PATH, body),
        )
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Redis unavailable" in answer.json()["detail"]
    # answered by the raw endpoint: FastAPI has no route for the path
    assert all(c.path != USAGE_SETTLEMENT_PATH for c in iter_route_contexts(gateway.api.routes))
