"""Token budgets through the real cluster: a user with a small budget makes completions
through the gateway against the simulator; the budget falls by exactly the tokens the
inference service reports (and records in ``GET /inference/usage``); once exhausted the
gateway answers 429 before anything reaches the model; a second gateway replica sees the
same budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time

import httpx
import pytest
import redis
import websockets
from pydantic import SecretStr
from websockets.sync.client import connect as ws_connect

from gateway.services.token_budget import Reservation
from inference_service.services.token_settlement import REPORTS, SettlementReporter
from switchboard_common.internal_calls import USAGE_SETTLEMENT_PATH, UsageSettlement
from switchboard_devtools.cluster import GATEWAY, ClusterPlan
from switchboard_devtools.ports import free_port
from tests.fixtures.cluster import TPM_TEST_LIMIT
from tests.fixtures.processes import Spawn, module_argv
from tests.support.auth_client import Login, login, new_user

MODEL = "llama3.2"
NUM_PREDICT = 24


def used_tokens(store: redis.Redis, user_id: str) -> int:
    return int(store.get(f"gw:tb:{{u:{user_id}}}:t") or 0)


def wait_for_used(store: redis.Redis, user_id: str, expected: int, timeout_s: float = 10) -> None:
    """Settlement is sent after the response: wait for it to land."""
    deadline = time.monotonic() + timeout_s
    while used_tokens(store, user_id) != expected:
        assert time.monotonic() < deadline, (used_tokens(store, user_id), expected)
        time.sleep(0.05)


def usage_total(gateway: str, user: Login) -> int:
    report = httpx.get(gateway + "/inference/usage", headers=user.headers, timeout=10).json()
    model = report["totals"].get(MODEL + ":latest") or {}
    return int(model.get("prompt_tokens", 0)) + int(model.get("completion_tokens", 0))


def estimate(prompt: str) -> int:
    """The gateway's pre-charge for these requests: ceil(chars / 4) + the asked completion."""
    return -(-len(prompt) // 4) + NUM_PREDICT


def chat(gateway: str, user: Login, prompt: str) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"num_predict": NUM_PREDICT},  # no temperature 0 / seed: not cached
    }
    return httpx.post(gateway + "/inference/chat", json=body, headers=user.headers, timeout=30)


def stream_completion(gateway: str, user: Login, prompt: str) -> tuple[httpx.Response, int]:
    """An OpenAI streamed chat; the tokens it reports in its final usage chunk."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": NUM_PREDICT,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", gateway + "/v1/chat/completions", json=body, headers=user.headers, timeout=30
    ) as resp:
        total = 0
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    total = usage["prompt_tokens"] + usage["completion_tokens"]
    return resp, total


@pytest.fixture
def second_gateway(cluster: ClusterPlan, spawn: Spawn) -> str:
    """Another gateway replica over the same services and Redis."""
    port = free_port()
    env = {**cluster.env_for(GATEWAY), "GATEWAY_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    spawn("gateway2", module_argv("gateway"), env=env, ready_url=url + "/ready", timeout_s=45)
    return url


def test_budget_is_charged_the_reported_usage_and_shared_by_replicas(
    cluster: ClusterPlan,
    budgeted_user: tuple[Login, str],
    budget_store: redis.Redis,
    second_gateway: str,
) -> None:
    user, user_id = budgeted_user
    gateway = cluster.url("gateway")
    prompt = "Tell me about token budgets, please."

    # 1. admitted with the estimate pre-charged, then settled to the reported usage
    first = chat(gateway, user, prompt)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == str(TPM_TEST_LIMIT)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(TPM_TEST_LIMIT - estimate(prompt))
    reported = first.json()["usage"]
    actual = reported["prompt_tokens"] + reported["completion_tokens"]
    assert actual != estimate(prompt)  # so the settlement is visible
    wait_for_used(budget_store, user_id, actual)
    assert usage_total(gateway, user) == actual

    # 2. a streamed OpenAI completion on the other replica: its remaining counts the first
    #    request's actual usage, and its own usage is settled after the stream ends
    resp, streamed = stream_completion(second_gateway, user, prompt)
    assert resp.status_code == 200
    remaining = TPM_TEST_LIMIT - actual - estimate(prompt)
    assert resp.headers["x-ratelimit-remaining-tokens"] == str(remaining)
    assert streamed > 0
    wait_for_used(budget_store, user_id, actual + streamed)
    used = actual + streamed
    assert usage_total(gateway, user) == used

    # 3. spend the rest, alternating replicas, until the gateway refuses
    refused: httpx.Response | None = None
    for i in range(40):
        resp = chat((gateway, second_gateway)[i % 2], user, prompt)
        if resp.status_code == 429:
            refused = resp
            break
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
        used += usage["prompt_tokens"] + usage["completion_tokens"]
        wait_for_used(budget_store, user_id, used)
    assert refused is not None, "the budget was never exhausted"
    assert used + estimate(prompt) > TPM_TEST_LIMIT  # refused exactly when it would not fit
    assert used <= TPM_TEST_LIMIT + 100  # and not much later (a request costs < 100 here)
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(max(0, TPM_TEST_LIMIT - used))
    assert refused.json()["status"] == 429
    assert "Token budget" in refused.json()["detail"]

    # 4. refused before admission: nothing reached the model; both replicas agree
    assert usage_total(gateway, user) == used
    other = chat((second_gateway, gateway)[i % 2], user, prompt)
    assert other.status_code == 429
    assert (
        other.headers["x-ratelimit-remaining-tokens"]
        == refused.headers["x-ratelimit-remaining-tokens"]
    )
    assert used_tokens(budget_store, user_id) == used
    # the WebSocket chat only needs *some* budget left at its handshake (its replies are
    # charged as they end): with a few tokens left it still opens
    assert TPM_TEST_LIMIT - used > 0
    ws_url = gateway.replace("http://", "ws://") + "/inference/ws"
    with ws_connect(ws_url, additional_headers=user.headers, open_timeout=10) as ws:
        ws.close()


def test_one_large_generation_overshoots_then_nothing_more_passes(
    cluster: ClusterPlan, budgeted_user: tuple[Login, str], budget_store: redis.Redis
) -> None:
    """Admission is on the estimate; the actual usage may overshoot the budget. The window
    then has nothing left: chats and WebSocket handshakes are refused until it slides."""
    user, user_id = budgeted_user
    gateway = cluster.url("gateway")
    big = "a " * 450  # 450 simulator tokens; estimated at 225 + 24, so it is admitted
    resp = chat(gateway, user, big)
    assert resp.status_code == 200, resp.text
    usage = resp.json()["usage"]
    actual = usage["prompt_tokens"] + usage["completion_tokens"]
    assert actual > TPM_TEST_LIMIT
    wait_for_used(budget_store, user_id, actual)
    refused = chat(gateway, user, "tiny")
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    ws_url = gateway.replace("http://", "ws://") + "/inference/ws"
    with pytest.raises(websockets.InvalidStatus) as denied:
        with ws_connect(ws_url, additional_headers=user.headers, open_timeout=10):
            pass
    assert denied.value.response.status_code == 429
    assert int(denied.value.response.headers["retry-after"]) >= 1


def test_websocket_replies_are_charged_as_they_end(
    cluster: ClusterPlan, budget_store: redis.Redis
) -> None:
    gateway = cluster.url("gateway")
    user = new_user(gateway)
    me = httpx.get(gateway + "/auth/me", headers=user.headers, timeout=10).json()
    ws_url = gateway.replace("http://", "ws://") + "/inference/ws"
    total = 0
    with ws_connect(ws_url, additional_headers=user.headers, open_timeout=10) as ws:
        for prompt in ("first question", "second, longer question"):
            ws.send(
                json.dumps(
                    {
                        "model": MODEL,
                        "messages": [{"role": "user", "content": prompt}],
                        "options": {"num_predict": NUM_PREDICT},
                    }
                )
            )
            while True:
                message = json.loads(ws.recv(timeout=20))
                if message["type"] == "usage":
                    total += message["prompt_tokens"] + message["completion_tokens"]
                if message["type"] in ("done", "error"):
                    assert message["type"] == "done", message
                    break
            # charged while the socket stays open, not when it closes
            wait_for_used(budget_store, me["id"], total)
    assert total > 0


def test_an_open_websocket_stops_when_the_budget_runs_out(
    cluster: ClusterPlan, budgeted_user: tuple[Login, str], budget_store: redis.Redis
) -> None:
    """A socket opened while budget was left does not generate past it: once an HTTP chat
    used the window up, the socket's next message closes it with 1013 (try again later)."""
    user, user_id = budgeted_user
    gateway = cluster.url("gateway")
    ws_url = gateway.replace("http://", "ws://") + "/inference/ws"
    with ws_connect(ws_url, additional_headers=user.headers, open_timeout=10) as ws:
        big = chat(gateway, user, "a " * 450)  # overshoots the whole budget
        assert big.status_code == 200, big.text
        usage = big.json()["usage"]
        wait_for_used(budget_store, user_id, usage["prompt_tokens"] + usage["completion_tokens"])
        ws.send(json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert "token budget exhausted" in closed.value.rcvd.reason


def test_a_refused_generation_gives_its_estimate_back(
    cluster: ClusterPlan, budgeted_user: tuple[Login, str], budget_store: redis.Redis
) -> None:
    """An answer of 400+ that generated nothing (here: an unknown model, 404) settles its
    reservation to 0 instead of leaving the estimate charged for the whole window."""
    user, user_id = budgeted_user
    gateway = cluster.url("gateway")
    before = used_tokens(budget_store, user_id)
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "x" * 400}],
            "options": {"num_predict": NUM_PREDICT}}  # fmt: skip
    resp = httpx.post(gateway + "/inference/chat", json=body, headers=user.headers, timeout=30)
    assert resp.status_code == 404, resp.text
    assert int(resp.headers["x-ratelimit-remaining-tokens"]) < TPM_TEST_LIMIT - before  # charged
    wait_for_used(budget_store, user_id, before)  # … and given back


def test_a_request_over_its_rate_limit_spends_no_token_budget(
    cluster: ClusterPlan,
    budgeted_user: tuple[Login, str],
    cluster_admin: Login,
    budget_store: redis.Redis,
    second_gateway: str,
) -> None:
    """A caller that had room under its rate limit gets its rate-limit lease and its token
    reservation asked for at once; when the limit refuses it after all (another replica
    took the last slot), the 429 gives the reservation back. A caller known to have no room
    left is refused before any reservation."""
    user, user_id = budgeted_user
    gateway = cluster.url("gateway")
    patched = httpx.patch(f"{gateway}/auth/admin/users/{user_id}", json={"rate_limit": "2/minute"},
                          headers=cluster_admin.headers, timeout=10)  # fmt: skip
    assert patched.status_code == 200, patched.text
    limited = login(gateway, user.username, user.password)  # the override is in the token

    def spent(resp: httpx.Response) -> int:
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
        return int(usage["prompt_tokens"] + usage["completion_tokens"])

    first = chat(gateway, limited, "first")  # replica 1 saw one slot left after it …
    assert first.headers["ratelimit-limit"] == "2" and "x-ratelimit-limit-tokens" in first.headers
    used = spent(first) + spent(chat(second_gateway, limited, "second"))  # … replica 2 took it
    wait_for_used(budget_store, user_id, used)
    reserved = budget_metric(gateway, "decisions_total", "admitted")
    refused = chat(gateway, limited, "third")  # replica 1 asks both at once: the limit says no
    assert refused.status_code == 429, refused.text
    assert "Rate limit of 2 requests" in refused.json()["detail"]
    assert "retry-after" in refused.headers  # the rate limit's 429, as if asked first
    assert budget_metric(gateway, "decisions_total", "admitted") == reserved + 1  # reserved …
    wait_for_used(budget_store, user_id, used)  # … and given back
    known = chat(gateway, limited, "fourth")  # now known to have no room: not even reserved
    assert known.status_code == 429
    assert budget_metric(gateway, "decisions_total", "admitted") == reserved + 1
    time.sleep(0.3)
    assert used_tokens(budget_store, user_id) == used


def budget_metric(gateway: str, name: str, outcome: str) -> float:
    """A ``switchboard_gateway_token_budget_*`` counter of one gateway process."""
    prefix = f'switchboard_gateway_token_budget_{name}{{outcome="{outcome}"}} '
    text = httpx.get(gateway + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_client_cannot_send_its_own_reservation(
    cluster: ClusterPlan, cluster_user: Login, budget_store: redis.Redis
) -> None:
    """A forged reservation header is dropped at the gateway (the service sees only the
    gateway's), and the settlement endpoint refuses unsigned reports."""
    gateway = cluster.url("gateway")
    # "eA" is base64url for the budget key "x": had it reached inference, "x" would be charged
    headers = {**cluster_user.headers, "X-Switchboard-Token-Reservation": "forged.60000.eA"}
    forged = httpx.post(
        gateway + "/inference/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
        timeout=30,
    )
    assert forged.status_code == 200
    time.sleep(0.5)  # a report would be sent right after the response
    assert not budget_store.keys("gw:tb:{x}:*")
    report = {"reservation": "forged.60000.eA", "prompt_tokens": 1, "completion_tokens": 1}
    unsigned = httpx.post(gateway + "/gateway/internal/usage", json=report, timeout=10)
    assert unsigned.status_code == 401


def test_a_cache_hit_costs_the_cached_usage(
    cluster: ClusterPlan, budget_store: redis.Redis
) -> None:
    """The caller receives the tokens either way: a replayed answer is charged like the
    original, or a repeated prompt would bypass the budget."""
    gateway = cluster.url("gateway")
    user = new_user(gateway)
    me = httpx.get(gateway + "/auth/me", headers=user.headers, timeout=10).json()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "cache me"}],
        "options": {"num_predict": NUM_PREDICT, "temperature": 0},
    }
    costs, served = [], []
    for _ in range(2):
        resp = httpx.post(gateway + "/inference/chat", json=body, headers=user.headers, timeout=30)
        assert resp.status_code == 200, resp.text
        usage = resp.json()["usage"]
        costs.append(usage["prompt_tokens"] + usage["completion_tokens"])
        served.append(resp.headers["x-cache"])
    assert served == ["MISS", "HIT"]
    assert costs[0] == costs[1] > 0
    wait_for_used(budget_store, me["id"], sum(costs))


# --- the inference side's reporter, alone -------------------------------------------------


async def test_reporter_drops_rather_than_piles_up() -> None:
    """A full queue drops reports (counted) instead of growing; an unreachable gateway
    costs a retry, then the report is counted as failed — the client never waits."""
    closed = f"http://127.0.0.1:{free_port()}"
    reporter = SettlementReporter(closed, SecretStr("s"), max_pending=2, workers=1)
    before = {o: REPORTS.labels(o)._value.get() for o in ("dropped", "failed")}
    report = UsageSettlement(reservation="r", prompt_tokens=1, completion_tokens=1)
    started = time.monotonic()
    for _ in range(5):
        reporter.submit(report)
    assert time.monotonic() - started < 0.05  # submit never waits
    assert REPORTS.labels("dropped")._value.get() - before["dropped"] == 3
    await reporter.drain(timeout_s=10)
    assert REPORTS.labels("failed")._value.get() - before["failed"] == 2
    await reporter.aclose()
    disabled = SettlementReporter("", SecretStr("s"))
    disabled.submit(report)  # INFERENCE_GATEWAY_URL empty: nothing queued, nothing sent
    assert not disabled.enabled and disabled._queue.empty()


# --- reports queued together go as one batch -----------------------------------------------


def settlement_posts(gateway: str) -> float:
    """How many usage reports (single or batch) the gateway answered with 200."""
    metrics = httpx.get(gateway + "/metrics", timeout=5).text
    for line in metrics.splitlines():
        if (
            line.startswith("switchboard_http_requests_total")
            and f'route="{USAGE_SETTLEMENT_PATH}"' in line
            and 'status="200"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_reports_queued_together_reach_the_gateway_as_one_batch(
    cluster: ClusterPlan, budget_store: redis.Redis, second_gateway: str
) -> None:
    """40 reports queued at once: one signed POST to a real gateway settles them all (the
    budget holds their sum); sent again, they are duplicates and charge nothing."""
    user_id = secrets.token_hex(4)
    secret = cluster.internal_secret
    reports = [
        UsageSettlement(
            reservation=Reservation(secrets.token_urlsafe(9), 60_000, f"u:{user_id}").seal(
                secret.encode()
            ),
            prompt_tokens=2,
            completion_tokens=3,
        )
        for _ in range(40)
    ]
    posts = settlement_posts(second_gateway)  # this test's reporter is its only caller
    sent = REPORTS.labels("sent")._value.get()
    reporter = SettlementReporter(second_gateway, SecretStr(secret), workers=1)
    try:
        for report in reports:
            reporter.submit(report)
        await reporter.drain(timeout_s=10)
        assert used_tokens(budget_store, user_id) == 40 * 5
        assert settlement_posts(second_gateway) - posts == 1
        assert REPORTS.labels("sent")._value.get() - sent == 40
        for report in reports[:10]:  # replayed: duplicates, nothing more is charged
            reporter.submit(report)
        await reporter.drain(timeout_s=10)
        assert used_tokens(budget_store, user_id) == 40 * 5
        assert settlement_posts(second_gateway) - posts == 2
        assert reporter.batches
    finally:
        await reporter.aclose()


async def test_a_gateway_without_batches_gets_the_reports_one_by_one() -> None:
    """A gateway that predates batches answers one with 422: the reporter sends those
    reports one by one, and later ones alone until ``batch_retry_s`` has passed."""
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await serve(reader, writer)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            bodies.append(body)
            answer, status = (
                (b'{"detail": "Not a usage report."}', b"422 Unprocessable Content")
                if b'"reports"' in body
                else (b'{"settled": true}', b"200 OK")
            )
            writer.write(
                b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (status, len(answer), answer)
            )
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sent = REPORTS.labels("sent")._value.get()
    reporter = SettlementReporter(
        f"http://127.0.0.1:{port}", SecretStr("s"), workers=1, batch_retry_s=0.5
    )
    try:
        for seq in range(10):
            reporter.submit(
                UsageSettlement(reservation="r", seq=seq, prompt_tokens=1, completion_tokens=1)
            )
        await reporter.drain(timeout_s=10)
        assert [b'"reports"' in b for b in bodies] == [True] + [False] * 10
        assert not reporter.batches
        for seq in range(10, 13):
            reporter.submit(
                UsageSettlement(reservation="r", seq=seq, prompt_tokens=1, completion_tokens=1)
            )
        await reporter.drain(timeout_s=10)
        assert len(bodies) == 14 and not any(b'"reports"' in b for b in bodies[1:])
        assert REPORTS.labels("sent")._value.get() - sent == 13
        await asyncio.sleep(0.6)  # batch_retry_s later, a batch is tried again
        assert reporter.batches
        for seq in range(13, 15):
            reporter.submit(
                UsageSettlement(reservation="r", seq=seq, prompt_tokens=1, completion_tokens=1)
            )
        await reporter.drain(timeout_s=10)
        assert [b'"reports"' in b for b in bodies[14:]] == [True, False, False]
        assert REPORTS.labels("sent")._value.get() - sent == 15
    finally:
        await reporter.aclose()
        server.close()
        await server.wait_closed()
