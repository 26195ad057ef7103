"""``GET /inference/queue``: the shared snapshot, behind the 'inference' scope."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from inference_service.routes import queue as queue_route
from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import QueueSettings
from switchboard_common import ServiceSettings, create_service_app
from switchboard_common.identity import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    Principal,
    sign_identity,
)
from switchboard_common.settings import LOCAL_INTERNAL_SECRET


def headers(*scopes: str) -> dict[str, str]:
    value, signature = sign_identity(
        Principal(sub="u1", username="u1", scope=list(scopes)), LOCAL_INTERNAL_SECRET
    )
    return {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature}


async def test_snapshot_shows_slots_and_waiters_per_priority(redis: Redis) -> None:
    queue = RedisAdmissionQueue(redis, QueueSettings(slots={"m1": 1}, poll_interval_s=0.05))
    app = create_service_app(ServiceSettings(), title="t", routers=[queue_route.router])
    app.state.admission = queue
    release = asyncio.Event()

    async def use(model: str, priority: int) -> None:
        async with queue.admit("b1", model, priority):
            await release.wait()

    tasks = [asyncio.create_task(use("m1", 5))]  # takes the one slot of m1 …
    while [q.in_use for q in (await queue.snapshot()).queues] != [1]:
        await asyncio.sleep(0.01)
    tasks += [asyncio.create_task(use("m1", p)) for p in (2, 2, 9)]  # … these wait
    tasks.append(asyncio.create_task(use("m2", 0)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(200):
            body = (await client.get("/inference/queue", headers=headers("inference"))).json()
            if sum(q["waiting"] for q in body.get("queues", [])) == 3:
                break
            await asyncio.sleep(0.01)
        assert body["queues"] == [
            {
                "backend": "b1",
                "model": "m1:latest",
                "in_use": 1,
                "capacity": 1,
                "waiting": 3,
                "waiting_by_priority": {
                    str(p): n for p, n in enumerate([0, 0, 2, 0, 0, 0, 0, 0, 0, 1])
                },
            },
            {
                "backend": "b1",
                "model": "m2:latest",
                "in_use": 1,
                "capacity": 4,
                "waiting": 0,
                "waiting_by_priority": {str(p): 0 for p in range(10)},
            },
        ]
        assert (await client.get("/inference/queue")).status_code == 401
        forbidden = await client.get("/inference/queue", headers=headers("memory"))
        assert forbidden.status_code == 403
        app.state.admission = object()  # not the Redis queue: refuse rather than lie
        assert (
            await client.get("/inference/queue", headers=headers("inference"))
        ).status_code == 503
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    await queue.aclose()
