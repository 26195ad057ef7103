"""``deploy/compose``: the Compose-spec schema, build contexts, ``depends_on``, published
ports, ``${VARS}`` vs ``.env.example``, healthchecks, volumes, internal URLs, and each
service's effective environment validated by its own Settings in production."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources
from urllib.parse import urlsplit

import jsonschema
import pytest

from switchboard_devtools.cluster import SERVICES
from tests.deploy.compose import (
    compose,
    compose_environment,
    compose_services,
    effective_compose_env,
    env_example,
    listening_ports,
    referenced_vars,
)
from tests.deploy.support import (
    COMPOSE_DIR,
    DOCKERFILES,
    IMAGES,
    K8S_DIR,
    OVERLAYS,
    ROOT,
    SECRET_NAME,
    SIM,
    SPECS,
    build_settings,
    check_required_settings,
    internal_urls,
    secret_fields,
    settings_class,
)


def test_compose_matches_the_compose_spec_schema() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_compose_runs_every_service_and_the_optional_extras_behind_profiles() -> None:
    services = compose_services()
    assert set(services) == {*SPECS, "redis", SIM, "traefik"}
    for name, service in services.items():
        expected = {SIM: ["sim"], "traefik": ["traefik"]}.get(name)
        assert service.get("profiles") == expected, f"{name}: profiles {service.get('profiles')}"
    assert services["redis"]["image"].startswith("redis:7-alpine")
    assert services["traefik"]["image"].startswith("traefik:v3")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_compose_builds_each_image_from_its_dockerfile(name: str) -> None:
    service = compose_services()[name]
    context = (COMPOSE_DIR / service["build"]["context"]).resolve()
    assert context == ROOT, "build context must be the repository root (libs/common, uv.lock)"
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILES[name]
    assert service["image"] == f"{IMAGES[name]}:dev", "the dev overlay runs these tags"


def test_compose_depends_on_healthy_services_that_exist() -> None:
    services = compose_services()
    for name, service in services.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            assert condition["condition"] == "service_healthy", f"{name} → {target}"
            assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if services[target].get("profiles") and not service.get("profiles"):
                # Without its profile the target does not exist: `up` must still work.
                assert condition.get("required") is False, f"{name} → {target} (profile)"


def test_only_the_gateway_publishes_a_port() -> None:
    for name, service in compose_services().items():
        ports = service.get("ports", [])
        if name == "gateway":
            assert ports == ["8000:8000"]
        elif name == "traefik":
            assert service["profiles"] == ["traefik"]  # the optional front door
        else:
            assert not ports, f"{name} publishes {ports}"
            assert "network_mode" not in service


def test_compose_variables_and_env_example_match() -> None:
    used = referenced_vars(compose())
    listed = set(env_example())
    assert used - listed == set(), "used in compose.yaml, missing from .env.example"
    assert listed - used == set(), "listed in .env.example, unused by compose.yaml"
    lines = (COMPOSE_DIR / ".env.example").read_text().splitlines()
    for key, value in env_example().items():
        if SECRET_NAME.search(key) and not value:
            above = lines[lines.index(f"{key}=") - 1]
            assert above.startswith("# generate with: python -c 'import secrets;"), key


def test_compose_secrets_come_from_env_only() -> None:
    for name, service in compose_services().items():
        for key, value in compose_environment(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+(:?[?-][^}]*)?\}", value), f"{name}: {key} hard-coded"


def test_compose_env_and_secret_files_are_git_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in [
        COMPOSE_DIR / ".env",
        *(K8S_DIR / "overlays" / o / "secrets.env" for o in OVERLAYS),
    ]:
        result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
        assert result.returncode == 0, f"{path.relative_to(ROOT)} is not git-ignored"


def test_every_compose_service_has_a_healthcheck_on_its_own_port() -> None:
    for name, service in compose_services().items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        command = " ".join(check["test"])
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", command)
        if name in SPECS:
            assert len(urls) == 1, command
            port, path = urls[0]
            assert {int(port)} == listening_ports(name), f"{name} healthcheck on :{port}"
            assert path == ("/health" if name == "gateway" else "/ready")


def test_compose_named_volumes_hold_the_data_dirs() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, service in compose_services().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
                if name in SPECS:
                    env = effective_compose_env(name)
                    assert env[f"{SPECS[name].env_prefix}DATA_DIR"] == target
    assert {"auth-data", "knowledge-data"} <= used
    assert declared == used, f"declared but unused: {declared - used}"


def test_compose_gateway_upstreams_are_compose_services_on_their_ports() -> None:
    env = effective_compose_env("gateway")
    for spec in SERVICES:
        url = urlsplit(env[f"GATEWAY_{spec.name.upper()}_URL"])
        assert url.hostname == spec.name, f"GATEWAY_{spec.name.upper()}_URL → {url.hostname}"
        assert {url.port} == listening_ports(spec.name)


def test_compose_internal_urls_resolve_to_services_and_ports() -> None:
    services = compose_services()
    for name in services:
        for key, url in internal_urls(effective_compose_env(name)):
            parts = urlsplit(url)
            if parts.hostname == "host.docker.internal":
                continue
            assert parts.hostname in services, f"{name}: {key}={url}: no such service"
            assert parts.port in listening_ports(parts.hostname), f"{name}: {key}={url}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_compose_environment_starts_each_service_in_production(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPECS[name]
    env = effective_compose_env(name)
    check_required_settings(spec, set(env), "compose")
    secret_vars = set().union(*secret_fields(settings_class(spec)).values())
    raw = compose_environment(compose_services()[name])
    for var in secret_vars & set(raw):
        assert raw[var].startswith("${"), f"{var} is a secret: interpolate it from .env"
    settings = build_settings(spec, env, monkeypatch)
    assert settings.environment == "production"
    assert settings.host == "0.0.0.0"
    assert settings.port == spec.default_port
    if spec.redis_db is not None:
        assert urlsplit(settings.redis_url).path == f"/{spec.redis_db}", "Redis database"
