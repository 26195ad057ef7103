"""The raw-ASGI streaming path (``core/fast_stream.py``): what it takes, what it hands to
FastAPI, queue positions, errors before output and disconnects — against a real simulator,
service process and Redis (one slot per model, so a second stream has to queue)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from inference_service.config import Settings
from inference_service.core.fast_stream import FastStreamPath
from inference_service.main import create_app
from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import SECRET, SimHandle, Stack, assert_problem, ident, sse_events, start_stack

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Tell me a story."}]}
STREAM = {**CHAT, "stream": True}


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    return start_stack(
        module_spawn,
        redis_server.url(0),
        "sim-fast-stream",
        INFERENCE_QUEUE_DEFAULT_SLOTS="1",
        INFERENCE_QUEUE_KEY_PREFIX="fast-stream-test",
    )


@pytest.fixture
def sim(stack: Stack) -> SimHandle:
    stack.sim.reset()
    return stack.sim


# --- through the real service --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_refusals_are_the_routes_own(stack: Stack, sim: SimHandle, stream: bool) -> None:
    """Streamed or not, a refusal is the same problem (the fast path hands these to FastAPI)."""
    url = stack.service.url + "/inference/chat"
    body = {**CHAT, "stream": stream}
    assert_problem(httpx.post(url, json=body), 401)
    assert_problem(httpx.post(url, json=body, headers=ident("memory")), 403)
    bad = assert_problem(httpx.post(url, json={**body, "messages": []}, headers=ident()), 422)
    assert bad["errors"][0]["loc"] == ["body", "messages"]
    raw = httpx.post(
        url, content=b'{"stream": true', headers={**ident(), "content-type": "application/json"}
    )
    assert_problem(raw, 422)


@pytest.mark.parametrize("path", ["/inference/chat", "/inference/generate"])
def test_unknown_model_before_any_output_is_a_404_not_a_200_stream(
    stack: Stack, sim: SimHandle, path: str
) -> None:
    body: dict[str, Any] = {"model": "nope:1b", "stream": True}
    body |= {"prompt": "hi"} if path.endswith("generate") else {"messages": CHAT["messages"]}
    problem = assert_problem(httpx.post(stack.service.url + path, json=body, headers=ident()), 404)
    assert "llama3.2:latest" in problem["available_models"]


@pytest.mark.parametrize("body", [STREAM, CHAT, {**STREAM, "messages": []}])
def test_the_callers_trace_continues_on_these_paths(
    stack: Stack, sim: SimHandle, body: dict[str, Any]
) -> None:
    """The paths are left out of the OpenTelemetry middleware; their server span (opened by
    the fast path, streamed or handed to FastAPI) continues the caller's trace."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**ident(), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    failing = {**body, "model": "nope:1b"}  # a problem carries the trace id it ran in
    resp = httpx.post(stack.service.url + "/inference/chat", json=failing, headers=headers)
    problem = assert_problem(resp, 422 if not body["messages"] else 404)
    assert problem["trace_id"] == trace_id


def test_backend_down_before_any_output_is_503_with_retry_after(
    stack: Stack, sim: SimHandle
) -> None:
    sim.config(fail_mode="error_500", fail_count=-1)
    resp = httpx.post(stack.service.url + "/inference/chat", json=STREAM, headers=ident())
    assert_problem(resp, 503)
    assert int(resp.headers["retry-after"]) >= 1
    sim.config(fail_mode="none")


def test_stream_matches_the_json_answer_and_is_labelled_in_metrics(
    stack: Stack, sim: SimHandle
) -> None:
    headers = ident()
    body = {"model": "llama3.2", "prompt": "Say something."}
    url = stack.service.url + "/inference/generate"
    streamed = httpx.post(url, json={**body, "stream": True}, headers=headers)
    assert streamed.status_code == 200
    assert streamed.headers["x-cache"] == "BYPASS" and "x-request-id" in streamed.headers
    events = sse_events(streamed.text)
    whole = httpx.post(url, json=body, headers=headers).json()
    assert "".join(d["content"] for e, d in events if e == "token") == whole["message"]["content"]
    assert events[-2] == ("usage", whole["usage"])
    metrics = httpx.get(stack.service.url + "/metrics").text
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("switchboard_http_requests_total{")
        and 'method="POST",route="/inference/generate"' in line
        and 'status="200"' in line
    ]
    assert served and float(served[0].split()[-1]) >= 2  # streamed and whole, one label


def _served(metrics: str, route: str) -> float:
    for line in metrics.splitlines():
        if (
            line.startswith("switchboard_http_requests_total{")
            and f'method="POST",route="{route}"' in line
            and 'status="200"' in line
        ):
            return float(line.split()[-1])
    return 0.0


def test_a_taken_stream_passes_the_apps_middleware_once(stack: Stack, sim: SimHandle) -> None:
    # the path wraps the whole stack and runs the app's own user middleware around a stream
    # it takes: the caller's request id comes back once, the request is counted once
    url = stack.service.url + "/inference/chat"
    before = _served(httpx.get(stack.service.url + "/metrics").text, "/inference/chat")
    headers = {**ident(), "X-Request-ID": "taken-stream-1"}
    r = httpx.post(url, json=STREAM, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers.get_list("x-request-id") == ["taken-stream-1"]
    after = _served(httpx.get(stack.service.url + "/metrics").text, "/inference/chat")
    assert after == before + 1


def test_a_chunked_request_body_is_left_to_the_route(stack: Stack, sim: SimHandle) -> None:
    # no declared length: the body limit middleware counts it, so the whole stack serves it
    def chunks() -> Any:
        raw = json.dumps(STREAM).encode()
        yield raw[:10]
        yield raw[10:]

    r = httpx.post(stack.service.url + "/inference/chat", content=chunks(), headers={
        **ident(), "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200 and r.request.headers.get("transfer-encoding") == "chunked"
    assert [e for e, _ in sse_events(r.text)][-1] == "done"


def test_the_path_wraps_the_whole_stack(fast_path: FastStreamPath) -> None:
    built = fast_path.service_app.build_middleware_stack()
    assert isinstance(built, FastStreamPath)  # outside Starlette's and the tracing layers
    assert type(built.taken).__name__ == type(fast_path.taken).__name__


async def _first_event(lines: AsyncIterator[str]) -> tuple[str, Any]:
    name = ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            return name, json.loads(line[6:])
    raise AssertionError("no event")


async def test_a_queued_stream_reports_its_position_then_streams(
    stack: Stack, sim: SimHandle
) -> None:
    sim.config(token_delay_ms=40)  # 24 tokens: ~1 s holding the only slot
    async with httpx.AsyncClient(base_url=stack.service.url, timeout=20) as client:
        async with client.stream("POST", "/inference/chat", json=STREAM, headers=ident()) as first:
            assert (await _first_event(first.aiter_lines()))[0] == "token"  # it holds the slot now
            second = await client.send(
                client.build_request("POST", "/inference/chat", json=STREAM, headers=ident()),
                stream=True,
            )
            try:
                assert second.status_code == 200
                lines = second.aiter_lines()
                assert await _first_event(lines) == ("queued", {"position": 1})
                rest = [line async for line in lines]
            finally:
                await second.aclose()
    names = [line[7:] for line in rest if line.startswith("event: ")]
    assert names.count("token") == 24 and names[-2:] == ["usage", "done"]


async def test_leaving_while_queued_leaves_the_queue_and_never_reaches_ollama(
    stack: Stack, sim: SimHandle
) -> None:
    sim.config(token_delay_ms=60)  # ~1.4 s holding the only slot
    async with httpx.AsyncClient(base_url=stack.service.url, timeout=20) as client:
        async with client.stream("POST", "/inference/chat", json=STREAM, headers=ident()) as first:
            first_lines = first.aiter_lines()
            assert (await _first_event(first_lines))[0] == "token"
            async with client.stream(
                "POST", "/inference/chat", json=STREAM, headers=ident()
            ) as queued:
                assert await _first_event(queued.aiter_lines()) == ("queued", {"position": 1})
            # gone while queued: the service sees the disconnect and leaves the queue
            for _ in range(50):
                depth = (await client.get("/inference/queue", headers=ident())).json()
                waiting = sum(q["waiting"] for q in depth["queues"] if "llama3.2" in q["model"])
                if waiting == 0:
                    break
                await asyncio.sleep(0.05)
            assert waiting == 0, depth
            async for _ in first_lines:
                pass
    await asyncio.sleep(0.2)
    assert sim.requests("/api/chat") == 1  # the queued request never reached the backend


# --- what the path takes (no server) -----------------------------------------------------


@pytest.fixture(scope="module")
def fast_path() -> FastStreamPath:
    with pytest.MonkeyPatch.context() as env:  # the secret is only read from the environment
        env.setenv("SWITCHBOARD_INTERNAL_SECRET", SECRET)
        app = create_app(Settings(priority_caps="default=6"))
    return FastStreamPath(app, app)


def _scope(
    path: str, headers: dict[str, str], content_type: str = "application/json"
) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"path": path, "headers": [(b"content-type", content_type.encode()), *raw]}


def test_takes_only_what_it_can_answer_like_the_route(fast_path: FastStreamPath) -> None:
    body = json.dumps(STREAM).encode()
    gen = fast_path._take(_scope("/inference/chat", ident()), body)
    assert gen is not None and gen.kind == "chat" and gen.model == "llama3.2"
    for scope, raw in [
        (_scope("/inference/chat", ident()), json.dumps(CHAT).encode()),  # not streamed
        (_scope("/inference/chat", ident(), "text/plain"), body),
        (_scope("/inference/chat", ident(), "application/json-seq"), body),
        (_scope("/inference/chat", {}), body),  # no identity
        (_scope("/inference/chat", ident("memory")), body),  # no inference scope
        (_scope("/inference/chat", {**ident(), "X-Switchboard-Signature": "00"}), body),
        (_scope("/inference/chat", ident()), b'{"stream": true, "model": ""}'),  # invalid
        (_scope("/inference/generate", ident()), body),  # a chat body is no generate body
    ]:
        assert fast_path._take(scope, raw) is None


def test_repeated_headers_count_once_as_the_route_reads_them(fast_path: FastStreamPath) -> None:
    body = json.dumps(STREAM).encode()
    scope = _scope("/inference/chat", ident(), "application/vnd.api+json; charset=utf-8")
    scope["headers"] += [(b"x-priority", b"1"), (b"x-priority", b"5")]
    scope["headers"] += [(b"cache-control", b"no-store"), (b"cache-control", b"max-age=0")]
    gen = fast_path._take(scope, body)
    assert gen is not None and gen.priority == 1
    assert not gen.cache.store


def test_priority_and_cache_directive_follow_the_headers(fast_path: FastStreamPath) -> None:
    body = json.dumps(STREAM).encode()
    asked_high = fast_path._take(_scope("/inference/chat", {**ident(), "X-Priority": "9"}), body)
    assert asked_high is not None and asked_high.priority == 6  # the tier's cap
    low = fast_path._take(
        _scope("/inference/chat", {**ident(), "X-Priority": "2", "Cache-Control": "no-store"}),
        body,
    )
    assert low is not None and low.priority == 2
    assert not low.cache.lookup and not low.cache.store
