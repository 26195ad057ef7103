"""``deploy/compose/traefik``: every public prefix of the gateway's route table reaches the
right service through the dynamic config, with the gateway's forwardAuth in front."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from switchboard_common.routes import ROUTES
from tests.deploy.compose import compose_services, listening_ports
from tests.deploy.support import COMPOSE_DIR, IDENTITY_HEADERS, ROOT

RULE_TERM = re.compile(r"^(Path|PathPrefix)\(`([^`]+)`\)$")


@functools.cache
def traefik_dynamic() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "traefik" / "dynamic.yml").read_text())
    return doc["http"]


def rule_matches(rule: str, path: str) -> bool:
    """Traefik rules as used here: ``Path(`…`)`` and ``PathPrefix(`…`)`` joined by ``||``."""
    for term in rule.split("||"):
        match = RULE_TERM.match(term.strip())
        assert match, f"unsupported rule term {term.strip()!r}"
        kind, value = match.groups()
        if path == value or (kind == "PathPrefix" and path.startswith(value)):
            return True
    return False


def traefik_route(path: str) -> str:
    """The router Traefik picks: highest priority first (default: the rule's length)."""
    routers = traefik_dynamic()["routers"]
    ranked = sorted(routers, key=lambda r: -routers[r].get("priority", len(routers[r]["rule"])))
    for name in ranked:
        if rule_matches(routers[name]["rule"], path):
            return name
    raise AssertionError(f"no Traefik router matches {path}")


def traefik_upstream(router: str) -> str:
    """The compose service a router's Traefik service forwards to."""
    service = traefik_dynamic()["services"][traefik_dynamic()["routers"][router]["service"]]
    (server,) = service["loadBalancer"]["servers"]
    url = urlsplit(server["url"])
    assert url.hostname in compose_services(), f"{server['url']}: no such compose service"
    assert {url.port} == listening_ports(url.hostname), server["url"]
    return url.hostname


def test_traefik_static_config_matches_the_compose_service() -> None:
    static = yaml.safe_load((COMPOSE_DIR / "traefik" / "traefik.yml").read_text())
    service = compose_services()["traefik"]
    mounts = dict(v.split(":")[:2][::-1] for v in service["volumes"])  # container → host
    dynamic = Path(static["providers"]["file"]["filename"])
    host_dir = mounts[str(dynamic.parent)]
    assert (COMPOSE_DIR / host_dir / dynamic.name).resolve() == (
        COMPOSE_DIR / "traefik" / "dynamic.yml"
    )
    assert mounts["/etc/traefik"] == "./traefik", "traefik.yml is read from /etc/traefik"
    web_port = static["entryPoints"]["web"]["address"].rsplit(":", 1)[1]
    assert service["ports"] == [f"{web_port}:{web_port}"]
    ping = static["ping"]["entryPoint"]
    assert ping in static["entryPoints"] and ping != "web", "ping stays off the public port"
    assert service["healthcheck"]["test"] == ["CMD", "traefik", "healthcheck", "--ping"]


def test_traefik_references_exist_and_every_service_route_is_authenticated() -> None:
    http = traefik_dynamic()
    forward = http["middlewares"]["gateway-auth"]["forwardAuth"]
    gateway_port = next(iter(listening_ports("gateway")))
    assert forward["address"] == f"http://gateway:{gateway_port}/gateway/verify"
    assert set(forward["authResponseHeaders"]) == IDENTITY_HEADERS
    stripped = http["middlewares"]["strip-identity"]["headers"]["customRequestHeaders"]
    assert stripped == dict.fromkeys(IDENTITY_HEADERS, "")
    for name, router in http["routers"].items():
        assert router["service"] in http["services"], f"router {name}: unknown service"
        for middleware in router.get("middlewares", []):
            assert middleware in http["middlewares"], f"router {name}: unknown {middleware}"
        assert router.get("middlewares", [])[:1] == ["strip-identity"], name
        if traefik_upstream(name) != "gateway":
            assert router["middlewares"] == ["strip-identity", "gateway-auth"], name


@pytest.mark.parametrize(("prefix", "service"), ROUTES)
def test_traefik_routes_each_public_prefix_like_the_gateway(prefix: str, service: str) -> None:
    for path in (prefix, f"{prefix}/", f"{prefix}/x/y"):
        assert traefik_upstream(traefik_route(path)) == service, path
    # Segment boundary, as in the gateway: /authority is not /auth.
    assert traefik_upstream(traefik_route(prefix + "x")) == "gateway"


def test_traefik_sends_the_gateways_own_endpoints_to_the_gateway() -> None:
    for path in ("/", "/health", "/ready", "/metrics", "/docs", "/openapi.json", "/gateway/x"):
        assert traefik_upstream(traefik_route(path)) == "gateway", path


def test_gateway_route_table_matches_architecture_md() -> None:
    architecture = ROOT.parent / "shared" / "ARCHITECTURE.md"
    if not architecture.is_file():
        pytest.skip("shared/ARCHITECTURE.md is not beside the checkout")
    text = architecture.read_text()
    section = text[text.index("Prefix routing:") :].split("\n\n")[0]
    documented = set(re.findall(r"`(/[\w-]+)/\*`", section))
    assert documented == {prefix for prefix, _ in ROUTES}
