"""Merging service OpenAPI documents (unit)."""

from __future__ import annotations

from typing import Any

from gateway.core.route_table import RouteTable
from gateway.services.openapi_merge import merge_specs


def spec(paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "x", "version": "1"}, "paths": paths,
            "components": {"schemas": schemas}}  # fmt: skip


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_paths_filtered_by_owner_and_schemas_deduplicated_or_renamed() -> None:
    problem = {"type": "object", "title": "Problem"}
    gateway = spec({"/health": {"get": {}}}, {"Problem": problem})
    memory = spec(
        {"/memory/x": {"get": {"responses": {"200": ref("Item")}}}, "/ready": {"get": {}},
         "/auth/stolen": {"get": {}}},
        {"Problem": problem, "Item": {"type": "object", "properties": {"a": {"type": "string"}}}},
    )  # fmt: skip
    knowledge = spec(
        {"/knowledge/y": {"get": {"responses": {"200": ref("Item")}}}},
        {"Item": {"type": "object", "properties": {"b": {"type": "integer"}}}},
    )
    merged = merge_specs(gateway, {"memory": memory, "knowledge": knowledge}, RouteTable())
    assert set(merged["paths"]) == {"/health", "/memory/x", "/knowledge/y"}
    schemas = merged["components"]["schemas"]
    assert schemas["Problem"] == problem  # identical: shared once
    # "Item" differs between services: the second one merged is renamed, refs follow it
    assert {"Item", "memory_Item"} <= set(schemas) or {"Item", "knowledge_Item"} <= set(schemas)
    memory_ref = merged["paths"]["/memory/x"]["get"]["responses"]["200"]["$ref"]
    knowledge_ref = merged["paths"]["/knowledge/y"]["get"]["responses"]["200"]["$ref"]
    assert memory_ref != knowledge_ref
    assert schemas[memory_ref.rsplit("/", 1)[1]]["properties"] == {"a": {"type": "string"}}
    assert schemas[knowledge_ref.rsplit("/", 1)[1]]["properties"] == {"b": {"type": "integer"}}
    flows = merged["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/auth/token"
