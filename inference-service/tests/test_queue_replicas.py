"""The admission queue across processes: two replicas share slots; a killed one's lease ends."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis

from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import QueueSettings
from switchboard_common.redis_client import create_redis
from switchboard_devtools.process import ManagedProcess

WORKER = str(Path(__file__).with_name("queue_worker.py"))
BACKEND, MODEL = "http://sim:11434", "worker:latest"  # as in queue_worker.py


def wait_for(check: object, timeout: float, procs: list[ManagedProcess], what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        for proc in procs:
            assert proc.running() or check(), f"{proc.name} died before {what}"  # type: ignore[operator]
        time.sleep(0.05)
    pytest.fail(f"not {what} within {timeout} s")


def test_two_replicas_never_exceed_shared_capacity(spawn: object, redis_url: str) -> None:
    client = sync_redis.Redis.from_url(redis_url)
    tasks, rounds = 8, 12
    procs = [
        spawn(  # type: ignore[operator]
            f"replica-{i}",
            [sys.executable, WORKER, redis_url, "hammer", "3", str(tasks), str(rounds), "2"],
        )
        for i in range(2)
    ]
    wait_for(lambda: not any(p.running() for p in procs), 30, [], "both replicas finished")
    assert int(client.get("t:done") or 0) == 2 * tasks * rounds
    # 16 contenders on 3 shared slots: the cap is reached, and never passed
    assert int(client.get("t:max") or 0) == 3
    assert int(client.get("t:current") or 0) == 0
    client.close()


async def test_lease_of_a_killed_replica_is_reclaimed(spawn: object, redis_url: str) -> None:
    client = create_redis(redis_url)
    holder = spawn(  # type: ignore[operator]
        "holder", [sys.executable, WORKER, redis_url, "hold", "1"]
    )
    deadline = time.monotonic() + 20
    while not await client.get("t:held"):
        assert holder.running() and time.monotonic() < deadline, "holder never got its slot"
        await asyncio.sleep(0.05)
    # same key prefix and capacity as the worker; its lease is 1.5 s
    queue = RedisAdmissionQueue(
        client, QueueSettings(default_slots=1, poll_interval_s=0.05, wait_timeout_s=10)
    )
    await queue.start()
    assert (await queue.snapshot()).queues[0].in_use == 1
    holder.kill()
    killed_at = time.monotonic()
    async with queue.admit(BACKEND, MODEL, 5):
        waited = time.monotonic() - killed_at
        snap = await queue.snapshot()
    assert waited < 1.5 + 1.0, f"slot came back after {waited:.2f} s"
    assert snap.queues[0].in_use == 1
    await queue.aclose()
    await client.aclose()
