"""``deploy/compose`` as Compose reads it: the parsed file, ``${VAR}`` interpolation and
each container's effective environment."""

from __future__ import annotations

import functools
import re
from typing import Any

import yaml

from tests.deploy.docker import dockerfile
from tests.deploy.support import (
    COMPOSE_DIR,
    COMPOSE_FILE,
    DOCKERFILES,
    REDIS_PORT,
    SIM,
    SIM_PORT,
    SPECS,
    fill_secrets,
    read_env_file,
)

INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$`` … over ``env``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        current = env.get(name)
        unset_or_empty = not current if op and op.startswith(":") else current is None
        if op in (":-", "-"):
            return arg if unset_or_empty else str(current)
        if op in (":?", "?"):
            assert not unset_or_empty, f"${{{name}}} is required: {arg}"
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return current or ""

    return INTERPOLATION.sub(replace, value)


def referenced_vars(value: Any) -> set[str]:
    """Variables interpolated anywhere in a parsed compose document (comments do not count)."""
    if isinstance(value, dict):
        return set().union(*(referenced_vars(v) for v in [*value, *value.values()]))
    if isinstance(value, list):
        return set().union(*(referenced_vars(v) for v in value))
    if not isinstance(value, str):
        return set()
    return {m.group(1) or m.group(4) for m in INTERPOLATION.finditer(value) if m.group(0) != "$$"}


@functools.cache
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return services


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


@functools.cache
def env_example() -> dict[str, str]:
    return read_env_file(COMPOSE_DIR / ".env.example")


def effective_compose_env(name: str) -> dict[str, str]:
    """What the container sees: its image's ENV, then compose's interpolated environment."""
    filled = fill_secrets(env_example())
    env = dockerfile(name).env() if name in DOCKERFILES else {}
    env.update(
        {
            k: interpolate(v, filled)
            for k, v in compose_environment(compose_services()[name]).items()
        }
    )
    return env


def listening_ports(name: str) -> set[int]:
    """Ports a compose service / k8s workload named ``name`` listens on."""
    if name == "redis":
        return {REDIS_PORT}
    if name == SIM:
        return {SIM_PORT}
    spec = SPECS[name]
    return {int(effective_compose_env(name).get(f"{spec.env_prefix}PORT", spec.default_port))}
