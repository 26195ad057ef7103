"""Cross-service wiring in compose and both k8s overlays that no single Settings class can
check: the gateway reads revocations from auth's Redis database and keeps its own state in
a database of its own (as ``make up`` does); the services behind the gateway believe
X-Forwarded-For from the private networks the gateway/Traefik run in; forwardAuth is on
exactly where Traefik uses it (compose), and there the gateway, the edge, believes no
X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from uvicorn.middleware.proxy_headers import _TrustedHosts

from switchboard_devtools.cluster import AUTH, GATEWAY, GATEWAY_REDIS_DB, SERVICES, ServiceSpec
from tests.deploy.compose import effective_compose_env
from tests.deploy.k8s import container_env, service_container
from tests.deploy.support import OVERLAYS, SPECS, build_settings, fill_secrets

PRIVATE_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
# Where the gateway / Traefik / an Ingress controller typically run, and real clients.
PROXY_ADDRESSES = ("10.42.0.17", "172.18.0.5", "192.168.1.20")
CLIENT_ADDRESSES = ("203.0.113.7", "198.51.100.1", "8.8.8.8")

WHERE = ["compose", *OVERLAYS]


def environment(where: str, spec: ServiceSpec) -> dict[str, str]:
    if where == "compose":
        return effective_compose_env(spec.name)
    env, from_secrets = container_env(where, service_container(where, spec.name))
    return {k: fill_secrets({k: v})[k] if k in from_secrets else v for k, v in env.items()}


def redis_target(url: str) -> tuple[str | None, int | None, str]:
    parts = urlsplit(url)
    return parts.hostname, parts.port or 6379, parts.path.strip("/") or "0"


@pytest.mark.parametrize("where", WHERE)
def test_gateway_reads_revocations_from_auths_redis_database(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth_redis = environment(where, AUTH)["AUTH_REDIS_URL"]
    env = environment(where, GATEWAY)
    assert "GATEWAY_REVOCATION_REDIS_URL" in env, f"{where}: the gateway needs auth's Redis"
    settings = build_settings(GATEWAY, env, monkeypatch)
    assert settings.revocation_redis_url is not None
    assert redis_target(settings.revocation_redis_url) == redis_target(auth_redis), where
    assert redis_target(auth_redis)[2] == str(AUTH.redis_db)


@pytest.mark.parametrize("where", WHERE)
def test_gateway_state_has_its_own_redis_database(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = build_settings(GATEWAY, environment(where, GATEWAY), monkeypatch)
    host, port, db = redis_target(settings.redis_url)
    assert db == str(GATEWAY_REDIS_DB), f"{where}: GATEWAY_REDIS_URL database {db}"
    for spec in SERVICES:
        url = environment(where, spec).get(f"{spec.env_prefix}REDIS_URL")
        if url is not None:
            assert redis_target(url) != (host, port, db), f"{where}: {spec.name} shares it"
        if spec.redis_db is not None:
            assert url is not None and redis_target(url)[2] == str(spec.redis_db), spec.name


@pytest.mark.parametrize(("where", "name"), [(w, s.name) for w in WHERE for s in SERVICES])
def test_services_behind_the_gateway_believe_forwarded_for_from_private_networks(
    where: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPECS[name]
    env = environment(where, spec)
    assert f"{spec.env_prefix}TRUSTED_PROXIES" in env, f"{where}: {name} trusts only itself"
    settings = build_settings(spec, env, monkeypatch)
    networks = [n.strip() for n in settings.trusted_proxies.split(",")]
    assert sorted(networks) == sorted(PRIVATE_NETWORKS), f"{where}: {name}: {networks}"
    # What uvicorn (switchboard_common.server: forwarded_allow_ips) makes of the value:
    # the installed version must read CIDRs as networks, not as literal host names.
    trusted = _TrustedHosts(settings.trusted_proxies)
    for address in PROXY_ADDRESSES:
        assert address in trusted, f"{where}: {name} would not believe {address}"
    for address in CLIENT_ADDRESSES:
        assert address not in trusted, f"{where}: {name} would believe {address}"


@pytest.mark.parametrize("where", WHERE)
def test_forward_auth_is_on_only_behind_traefik_and_judges_the_peer(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = build_settings(GATEWAY, environment(where, GATEWAY), monkeypatch)
    if where != "compose":  # no Traefik in the k8s overlays
        assert settings.forward_auth_enabled is False, where
        return
    assert settings.forward_auth_enabled is True, "compose: Traefik's forwardAuth needs it"
    # /gateway/verify judges the peer address: believing X-Forwarded-For would let a client
    # claim a proxy's address, and would turn Traefik's requests into the clients'.
    assert settings.trusted_proxies.strip() == "", f"{where}: the gateway trusts proxies"
    allowed = [
        ipaddress.ip_network(n.strip()) for n in settings.forward_auth_allowed_from.split(",")
    ]
    assert sorted(map(str, allowed)) == sorted(PRIVATE_NETWORKS)
    assert not any(ipaddress.ip_address(a) in n for a in CLIENT_ADDRESSES for n in allowed)
