"""docs/configuration.md is generated from the settings classes and must stay in sync.

Regenerate with `make docs` (runs this test with UPDATE_DOCS=1).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from tests.fixtures.processes import REPO_ROOT

DOC = REPO_ROOT / "docs" / "configuration.md"
SERVICES = [
    ("gateway", "gateway.config", "Settings"),
    ("auth", "auth_service.config", "Settings"),
    ("inference", "inference_service.config", "Settings"),
    ("inference: admission queue", "inference_service.services.queue_models", "QueueSettings"),
    ("knowledge", "knowledge_service.config", "Settings"),
    ("memory", "memory_service.config", "Settings"),
]


def settings_class(module: str, name: str) -> type[BaseSettings]:
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


INTERNAL = {"service_name", "version"}  # fixed per build, not for operators


def env_name(cls: type[BaseSettings], name: str, field: Any) -> str:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    if isinstance(alias, str):
        return alias
    return str(cls.model_config.get("env_prefix", "")).upper() + name.upper()


def default_text(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if isinstance(value, SecretStr):
        return "(local-only placeholder)" if value.get_secret_value() else "(empty)"
    if value is None:
        return "unset"
    if hasattr(value, "value"):
        value = value.value
    return f"`{value}`"


def describe(cls: type[BaseSettings], name: str) -> str:
    """The field's description, inherited from a base class when an override has none."""
    for klass in cls.__mro__:
        fields = getattr(klass, "model_fields", {})
        if name in fields and fields[name].description:
            return str(fields[name].description)
    return ""


def test_every_setting_is_described() -> None:
    missing = [
        f"{service}: {name}"
        for service, module, cls_name in SERVICES
        for name in settings_class(module, cls_name).model_fields
        if name not in INTERNAL and not describe(settings_class(module, cls_name), name)
    ]
    assert not missing, f"settings without a description (shown in docs): {missing}"


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the services' settings classes by `make docs`; a test fails when this",
        "file and the code disagree. Every variable is read at start and validated; a bad value",
        "stops the service with a message naming it. Secrets (`SecretStr`) with an empty or",
        "placeholder value are refused unless `<PREFIX>ENVIRONMENT` is `local` or `test`.",
        "",
    ]
    for service, module, cls_name in SERVICES:
        cls = settings_class(module, cls_name)
        lines += [f"## {service}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in cls.model_fields.items():
            if name in INTERNAL:
                continue
            meaning = describe(cls, name).replace("\n", " ").replace("|", "\\|")
            lines.append(f"| `{env_name(cls, name, field)}` | {default_text(field)} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def test_configuration_doc_is_current() -> None:
    expected = render()
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(expected)
    assert DOC.is_file(), "docs/configuration.md is missing: run `make docs`"
    assert DOC.read_text() == expected, "docs/configuration.md is stale: run `make docs`"


def test_readme_mentions_every_service_env_prefix() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for prefix in ("GATEWAY_", "AUTH_", "INFERENCE_", "KNOWLEDGE_", "MEMORY_"):
        assert prefix in readme
    assert "make up" in readme and "make test" in readme


def test_docs_links_resolve() -> None:
    import re

    for doc in [REPO_ROOT / "README.md", *Path(REPO_ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
