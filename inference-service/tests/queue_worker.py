"""A stand-in inference replica for the queue's multi-process tests.

    python queue_worker.py REDIS_URL hammer CAPACITY TASKS ROUNDS REPLICAS  # contend
    python queue_worker.py REDIS_URL hold CAPACITY                  # take a slot, keep it

``hammer`` waits until REPLICAS workers are up (``t:ready``, so they contend for real),
then runs TASKS coroutines that each take a slot ROUNDS times and, while holding it,
record the concurrency across all processes in Redis (``t:current``, ``t:max``); it adds
the rounds it completed to ``t:done``. ``hold`` takes one slot, sets ``t:held`` and sleeps
until killed (the lease-recovery test SIGKILLs it).
"""

from __future__ import annotations

import asyncio
import random
import sys

from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import QueueSettings
from switchboard_common.redis_client import create_redis

BACKEND, MODEL = "http://sim:11434", "worker:latest"
TRACK = """
local c = redis.call('INCR', KEYS[1])
if c > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], c) end
return c
"""


async def main(url: str, mode: str, capacity: int, tasks: int, rounds: int, replicas: int) -> None:
    redis = create_redis(url)
    settings = QueueSettings(
        default_slots=capacity, lease_s=1.5, poll_interval_s=0.05, wait_timeout_s=30
    )
    queue = RedisAdmissionQueue(redis, settings)
    await queue.start()
    track = redis.register_script(TRACK)
    try:
        if mode == "hold":
            async with queue.admit(BACKEND, MODEL, 5):
                await redis.set("t:held", "1")
                await asyncio.sleep(3600)
            return

        async def contend() -> None:
            for _ in range(rounds):
                async with queue.admit(BACKEND, MODEL, random.randint(0, 9)):
                    await track(["t:current", "t:max"])
                    await asyncio.sleep(random.uniform(0.005, 0.02))
                    await redis.decr("t:current")
                await redis.incr("t:done")

        await redis.incr("t:ready")
        while int(await redis.get("t:ready") or 0) < replicas:
            await asyncio.sleep(0.01)
        await asyncio.gather(*(contend() for _ in range(tasks)))
    finally:
        await queue.aclose()
        await redis.aclose()


if __name__ == "__main__":
    argv = sys.argv[1:]
    numbers = [int(a) for a in argv[2:]] + [0, 0, 0, 0]
    asyncio.run(main(argv[0], argv[1], *numbers[:4]))
