"""Traefik v3 configuration generated from the gateway's own route table and access rules.

``dynamic_config`` turns a ``TraefikPlan`` (where the gateway, the services and Redis are)
into Traefik's file-provider document, so Traefik can route clients straight to the
services while the gateway keeps deciding who may pass (forwardAuth to
``/gateway/verify``). The prefixes and public paths come from ``switchboard_common.routes``,
which the gateway's route table and access rules use too: the two front doors cannot drift
apart, and ``tests/deploy/test_traefik_generated.py`` fails when the committed
``deploy/traefik/*.yml`` is older than the code.

What each router does, in order:

- ``strip-identity``: removes identity (and token-reservation) headers a client sent (an
  empty value removes a header), so only the gateway's answer can set them;
- a per-IP ``rateLimit`` (token bucket; shared by every Traefik replica through Redis when
  a Redis is given), sized from the gateway's default limits;
- ``gateway-auth`` (not on public paths): the gateway checks the credential and answers with
  the signed identity headers (and, on inference routes, the capped ``X-Priority``) Traefik
  copies onto the request, or the problem the client gets — including 429 past the caller's
  own request-rate limit;
- ``strip-credentials``: the client's bearer token or API key is consumed at the edge and
  not handed to services, as the gateway itself does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from switchboard_common.limits import Limit, parse_limits
from switchboard_common.routes import (
    DEFAULT_ANONYMOUS_RATE_LIMIT,
    DEFAULT_RATE_LIMITS,
    PUBLIC_PATHS,
    ROUTES,
)

IDENTITY_HEADERS = ("X-Switchboard-Identity", "X-Switchboard-Signature")
# Internal headers only the gateway may set: a client's are removed before anything runs.
STRIPPED_HEADERS = (*IDENTITY_HEADERS, "X-Switchboard-Token-Reservation")
# What the gateway's verify answer sets on the request: the signed caller, and on inference
# routes the priority computed and capped for it (replacing the client's X-Priority).
AUTH_RESPONSE_HEADERS = (*IDENTITY_HEADERS, "X-Priority")
CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")
VERIFY_PATH = "/gateway/verify"
# Above any router an operator adds with default priorities for other hosts, below nothing
# of ours: a route's priority is this plus its path length, so a longer path always wins.
PRIORITY_BASE = 100
# The compose service names and ports (deploy/compose/compose.yaml), the committed default.
COMPOSE_UPSTREAMS: dict[str, tuple[str, ...]] = {
    "auth": ("http://auth:8001",),
    "inference": ("http://inference:8002",),
    "knowledge": ("http://knowledge:8003",),
    "memory": ("http://memory:8004",),
}
COMPOSE_GATEWAY = "http://gateway:8000"
COMPOSE_REDIS = "redis://redis:6379/4"  # db 4: Traefik's buckets, beside the services' 0–3


def default_limits() -> tuple[Limit | None, Limit | None]:
    """The gateway's default (per-principal tier, per-IP anonymous) limits, from the shared
    contract its settings default to, so Traefik's buckets follow a change of them."""
    tiers = parse_limits(DEFAULT_RATE_LIMITS)
    anonymous = DEFAULT_ANONYMOUS_RATE_LIMIT
    public = None if anonymous.strip().lower() in ("", "0", "none") else Limit.parse(anonymous)
    return tiers.get("default"), public


@dataclass(frozen=True)
class RedisEndpoint:
    """Where Traefik keeps its rate-limit buckets: ``host:port`` and a database."""

    address: str
    db: int = 0

    @classmethod
    def parse(cls, text: str) -> RedisEndpoint:
        """``redis://host:port/db`` or ``host:port``."""
        parts = urlsplit(text if "://" in text else f"redis://{text}")
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"not a Redis address: {text!r} (write host:port or redis://…)")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"not a Redis database number: {db!r}")
        return cls(f"{parts.hostname}:{parts.port or 6379}", int(db or 0))


@dataclass(frozen=True)
class TraefikPlan:
    gateway_url: str  # the gateway's origin; forwardAuth asks its /gateway/verify
    upstreams: Mapping[str, Sequence[str]]  # service name → its replicas' origins
    redis: RedisEndpoint | None = None  # None: each Traefik counts alone, in memory
    client_limit: Limit | None = None  # per IP on authenticated routes (None: no limit)
    public_limit: Limit | None = None  # per IP on public routes (None: no limit)
    routes: Sequence[tuple[str, str]] = ROUTES
    public_paths: Iterable[str] = field(default_factory=lambda: sorted(PUBLIC_PATHS))
    entry_point: str = "web"
    # Liveness, not /ready: a replica whose Redis blips stays in rotation and answers its
    # own problem+json 503, rather than Traefik's plain "no available server".
    health_path: str = "/health"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) origin: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _prefix_rule(prefix: str) -> str:
    # A segment boundary, as in the gateway's table: /auth and /auth/… but not /authority.
    return f"Path(`{prefix}`) || PathPrefix(`{prefix}/`)"


def _public_rule(path: str) -> str:
    # A trailing * makes a prefix, as in GATEWAY_PUBLIC_PATHS.
    return f"PathPrefix(`{path[:-1]}`)" if path.endswith("*") else f"Path(`{path}`)"


def _slug(path: str) -> str:
    return "-".join(filter(None, "".join(c if c.isalnum() else " " for c in path).split()))


def _rate_limit(limit: Limit, redis: RedisEndpoint | None) -> dict[str, Any]:
    # Token bucket: `burst` requests at once, refilled at `average` per `period`. With burst
    # equal to the count, a client gets the gateway's N per window, never more than 2N in
    # any one window.
    spec: dict[str, Any] = {
        "average": limit.count,
        "period": f"{int(limit.window_s)}s",
        "burst": limit.count,
    }
    if redis is not None:
        spec["redis"] = {"endpoints": [redis.address], "db": redis.db}
    return {"rateLimit": spec}


def _load_balancer(plan: TraefikPlan, name: str) -> dict[str, Any]:
    servers = [plan.gateway_url] if name == "gateway" else plan.upstreams.get(name)
    if not servers:
        raise ValueError(f"no server given for the {name} service")
    return {
        "loadBalancer": {
            "servers": [{"url": _origin(url)} for url in servers],
            "healthCheck": {"path": plan.health_path, "interval": "10s", "timeout": "3s"},
            # Token streams (NDJSON) must reach the client token by token; Traefik's
            # default 100 ms flush would batch them (SSE is flushed at once anyway).
            "responseForwarding": {"flushInterval": "10ms"},
        }
    }


def _auth_middlewares(verify_url: str) -> dict[str, Any]:
    return {
        "strip-identity": {
            "headers": {"customRequestHeaders": dict.fromkeys(STRIPPED_HEADERS, "")}
        },
        "gateway-auth": {
            "forwardAuth": {
                "address": verify_url,
                # X-Forwarded-Uri/-Method from the request itself, never a client's: one that
                # chose them would have one path checked and another served. (The entry
                # point, trusting no forwarded headers, drops them too.)
                "trustForwardHeader": False,
                "authResponseHeaders": list(AUTH_RESPONSE_HEADERS),
            }
        },
        "strip-credentials": {
            "headers": {"customRequestHeaders": dict.fromkeys(CREDENTIAL_HEADERS, "")}
        },
    }


def dynamic_config(plan: TraefikPlan) -> dict[str, Any]:
    """Traefik's dynamic configuration (``http:`` routers, middlewares, services)."""
    middlewares = _auth_middlewares(_origin(plan.gateway_url) + VERIFY_PATH)
    limited: list[str] = []
    public_limited: list[str] = []
    if plan.client_limit is not None:
        middlewares["client-rate-limit"] = _rate_limit(plan.client_limit, plan.redis)
        limited = ["client-rate-limit"]
    if plan.public_limit is not None:
        middlewares["public-rate-limit"] = _rate_limit(plan.public_limit, plan.redis)
        public_limited = ["public-rate-limit"]

    ep = [plan.entry_point]
    routers: dict[str, Any] = {}
    owner = dict(plan.routes)
    for prefix, service in plan.routes:
        routers[_slug(prefix)] = {
            "entryPoints": ep,
            "rule": _prefix_rule(prefix),
            "priority": PRIORITY_BASE + len(prefix),
            "service": service,
            "middlewares": ["strip-identity", *limited, "gateway-auth", "strip-credentials"],
        }
    for path in plan.public_paths:
        segment = "/" + path.strip("/").split("/")[0]
        public_owner = owner.get(segment)
        if public_owner is None:
            raise ValueError(f"public path {path} is under no routed prefix")
        routers[f"public-{_slug(path)}"] = {
            "entryPoints": ep,
            "rule": _public_rule(path),
            "priority": PRIORITY_BASE + len(path.rstrip("*")),
            "service": public_owner,
            "middlewares": ["strip-identity", *public_limited],
        }
    # Everything else is the gateway's own (/health, /ready, /metrics, /docs,
    # /openapi.json), except the forwardAuth endpoint: its answer carries signed identity
    # headers, meant for Traefik and never for a client.
    routers["gateway"] = {
        "entryPoints": ep,
        "rule": f"PathPrefix(`/`) && !PathPrefix(`{VERIFY_PATH}`)",
        "priority": 1,
        "service": "gateway",
        "middlewares": ["strip-identity"],
    }

    services = {
        name: _load_balancer(plan, name)
        for name in dict.fromkeys(["gateway", *(service for _, service in plan.routes)])
    }
    return {"http": {"routers": routers, "middlewares": middlewares, "services": services}}


def single_upstream_config(
    upstream_url: str, verify_url: str, redis: RedisEndpoint | None, limit: Limit | None
) -> dict[str, Any]:
    """Every path to one upstream, through the same checks as ``dynamic_config``: the
    gateway decides per path (public or not) in its forwardAuth answer. For the bench, where
    one bare upstream stands in for every service."""
    middlewares = _auth_middlewares(verify_url)
    chain = ["strip-identity", "gateway-auth", "strip-credentials"]
    if limit is not None:
        middlewares["client-rate-limit"] = _rate_limit(limit, redis)
        chain.insert(1, "client-rate-limit")
    return {
        "http": {
            "routers": {
                "upstream": {
                    "entryPoints": ["web"],
                    "rule": "PathPrefix(`/`)",
                    "service": "upstream",
                    "middlewares": chain,
                }
            },
            "middlewares": middlewares,
            "services": {
                "upstream": {"loadBalancer": {"servers": [{"url": _origin(upstream_url)}]}}
            },
        }
    }


def static_config(
    dynamic_file: str,
    *,
    web_address: str = ":8080",
    internal_address: str = ":8082",
    api: bool = False,
    access_log: bool = True,
) -> dict[str, Any]:
    """Traefik's static configuration: the public entry point, an internal one for ping and
    metrics, and the file provider reading ``dynamic_file``."""
    config: dict[str, Any] = {
        "entryPoints": {
            "web": {
                "address": web_address,
                # Traefik v3's 60 s read timeout would cut slow uploads of document batches.
                "transport": {"respondingTimeouts": {"readTimeout": "300s"}},
            },
            "traefik": {"address": internal_address},
        },
        "ping": {"entryPoint": "traefik"},
        "providers": {"file": {"filename": dynamic_file, "watch": True}},
        # The API answers on the internal entry point only; tests read it to know when the
        # file provider's routers are live.
        "api": {"dashboard": False, "insecure": True} if api else {"dashboard": False},
        "metrics": {"prometheus": {"entryPoint": "traefik"}},
        "log": {"level": "INFO"},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }
    if access_log:
        config["accessLog"] = {}
    return config


HEADER = """\
# GENERATED: Traefik v3 {what}, from the gateway's route table and public paths
# (libs/common/src/switchboard_common/routes.py). Do not edit. Regenerate with
# `switchboard-dev traefik-config --out deploy/traefik/dynamic.yml`, or refresh both files
# with `UPDATE_DEPLOY=1 pytest tests/deploy/test_traefik_generated.py`.
# docs/deploy.md, "Traefik in front", explains what is enforced where.
"""


class _PlainDumper(yaml.SafeDumper):
    """No ``&id001`` anchors for repeated lists: the file is read by people too."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(document: Mapping[str, Any], what: str = "dynamic configuration") -> str:
    body = yaml.dump(dict(document), Dumper=_PlainDumper, sort_keys=False, width=100)
    return HEADER.format(what=what) + body


def parse_upstreams(specs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``name=url[,url…]`` options → service name → origins."""
    found: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, _, urls = spec.partition("=")
        origins = tuple(_origin(u.strip()) for u in urls.split(",") if u.strip())
        if not name.strip() or not origins:
            raise ValueError(f"expected name=url[,url…], got {spec!r}")
        found[name.strip()] = origins
    return found


def compose_plan(
    *,
    gateway: str | None = None,
    services: Iterable[str] = (),
    redis: str | None = None,
) -> TraefikPlan:
    """The committed plan (compose names, the gateway's default limits), with overrides."""
    client_limit, public_limit = default_limits()
    redis_spec = redis or COMPOSE_REDIS
    return TraefikPlan(
        gateway_url=gateway or COMPOSE_GATEWAY,
        upstreams={**COMPOSE_UPSTREAMS, **parse_upstreams(services)},
        redis=None if redis_spec.lower() == "none" else RedisEndpoint.parse(redis_spec),
        client_limit=client_limit,
        public_limit=public_limit,
    )


def write_config(
    out: Path | None,
    *,
    gateway: str | None = None,
    services: Iterable[str] = (),
    redis: str | None = None,
) -> int:
    """``switchboard-dev traefik-config``: the dynamic file to ``out`` (or stdout)."""
    try:
        text = render(dynamic_config(compose_plan(gateway=gateway, services=services, redis=redis)))
    except ValueError as exc:
        print(f"traefik-config: {exc}", file=sys.stderr)
        return 2
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    return 0
