"""Shared facts for the deploy checks: paths, the services, env files and their Settings."""

from __future__ import annotations

import functools
import importlib
import os
import re
import secrets
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from switchboard_common.settings import PLACEHOLDER_SECRETS
from switchboard_devtools.cluster import ALL, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on

SPECS: dict[str, ServiceSpec] = {spec.name: spec for spec in ALL}
SIM = "ollama-sim"
SIM_PORT = 11434
REDIS_PORT = 6379
DOCKERFILES: dict[str, Path] = {
    "gateway": ROOT / "gateway" / "Dockerfile",
    "auth": ROOT / "auth-service" / "Dockerfile",
    "inference": ROOT / "inference-service" / "Dockerfile",
    "knowledge": ROOT / "knowledge-service" / "Dockerfile",
    "memory": ROOT / "memory-service" / "Dockerfile",
    SIM: ROOT / "tools" / "ollama-sim" / "Dockerfile",
}
IMAGES = {name: f"switchboard/{name}" for name in DOCKERFILES}
# What each service must be given, whatever its Settings class declares today.
REQUIRED_ENV: dict[str, set[str]] = {
    "gateway": {"SWITCHBOARD_INTERNAL_SECRET"},
    "auth": {
        "SWITCHBOARD_INTERNAL_SECRET",
        "AUTH_KEY_ENCRYPTION_SECRET",
        "AUTH_ADMIN_USERNAME",
        "AUTH_ADMIN_PASSWORD",
    },
    "inference": {"SWITCHBOARD_INTERNAL_SECRET", "INFERENCE_OLLAMA_URLS"},
    "knowledge": {"SWITCHBOARD_INTERNAL_SECRET", "KNOWLEDGE_DATA_DIR"},
    "memory": {"SWITCHBOARD_INTERNAL_SECRET"},
}
IDENTITY_HEADERS = {"X-Switchboard-Identity", "X-Switchboard-Signature"}
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL)$")


def load_toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


@functools.cache
def workspace_members() -> dict[str, Path]:
    """Distribution name → member directory, from the root pyproject's workspace."""
    members = load_toml(ROOT / "pyproject.toml")["tool"]["uv"]["workspace"]["members"]
    return {load_toml(ROOT / m / "pyproject.toml")["project"]["name"]: ROOT / m for m in members}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments skipped (as compose and kustomize)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}:{number}: not KEY=value: {raw!r}"
        assert key not in values, f"{path}:{number}: {key} listed twice"
        values[key.strip()] = value
    return values


def fill_secrets(values: dict[str, str]) -> dict[str, str]:
    """An example file's values, with each empty/placeholder secret replaced by a real one."""
    return {
        key: secrets.token_urlsafe(32)
        if SECRET_NAME.search(key) and value.strip().lower() in PLACEHOLDER_SECRETS
        else value
        for key, value in values.items()
    }


def settings_class(spec: ServiceSpec) -> type[BaseSettings]:
    cls: type[BaseSettings] = importlib.import_module(f"{spec.module}.config").Settings
    return cls


def env_names(cls: type[BaseSettings], name: str) -> set[str]:
    """Every environment variable that can set field ``name`` (upper-cased)."""
    info = cls.model_fields[name]
    alias = info.validation_alias or info.alias
    if alias is None:
        return {(str(cls.model_config.get("env_prefix", "")) + name).upper()}
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    return {
        (c.path[0] if isinstance(c, AliasPath) else c).upper()
        for c in choices
        if isinstance(c, str) or isinstance(c.path[0], str)
    }


def secret_fields(cls: type[BaseSettings]) -> dict[str, set[str]]:
    return {
        name: env_names(cls, name)
        for name, info in cls.model_fields.items()
        if "SecretStr" in repr(info.annotation)
    }


def build_settings(spec: ServiceSpec, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Instantiate the service's Settings from exactly ``env`` (nothing inherited)."""
    prefixes = (*(s.env_prefix for s in ALL), "SWITCHBOARD_")
    for key in list(os.environ):
        if key.upper().startswith(prefixes):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return settings_class(spec)()


def check_required_settings(spec: ServiceSpec, provided: set[str], where: str) -> None:
    cls = settings_class(spec)
    provided = {key.upper() for key in provided}
    for name, info in cls.model_fields.items():
        if info.is_required():
            names = env_names(cls, name)
            assert names & provided, f"{where}: {spec.name} requires {' or '.join(names)}"
    missing = REQUIRED_ENV[spec.name] - provided
    assert not missing, f"{where}: {spec.name} is not given {sorted(missing)}"


def internal_urls(env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(variable, url) for each http(s)/redis URL in ``env`` values (comma lists split)."""
    for key, value in env.items():
        for item in value.split(","):
            if re.match(r"^(https?|rediss?)://", item.strip()):
                yield key, item.strip()
