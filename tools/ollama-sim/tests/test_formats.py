"""``format``: JSON mode and JSON-schema structured output (generate and chat)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel, Field

from simtools import Sim, stream_ndjson


def _gen(sim: Sim, **body: Any) -> dict[str, Any]:
    r = sim.client.post("/api/generate", json={"model": "llama3.2", "stream": False, **body})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_format_json_is_valid_json(sim: Sim) -> None:
    out = _gen(sim, prompt="Respond in JSON", format="json")
    value = json.loads(out["response"])
    assert isinstance(value, dict) and value
    assert out["done_reason"] == "stop"
    _, lines = stream_ndjson(
        sim.client,
        "/api/chat",
        {
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "json please"}],
            "format": "json",
        },
    )
    pieces = [obj["message"]["content"] for _, obj in lines[:-1]]
    assert len(pieces) > 3  # streamed piece by piece
    assert isinstance(json.loads("".join(pieces)), dict)
    assert lines[-1][1]["eval_count"] == len(pieces)


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    number: int = Field(ge=1, le=9999)


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=130)
    height_m: float = Field(gt=0.5, lt=2.5)
    member: bool
    favourite: Colour
    nickname: str | None = None
    tags: list[str] = Field(max_length=2)
    home: Address
    past: list[Address]


@pytest.mark.parametrize("endpoint", ["/api/generate", "/api/chat"])
def test_format_schema_instance_validates(sim: Sim, endpoint: str) -> None:
    schema = Person.model_json_schema()
    assert "$defs" in schema  # nested models use $ref, which the simulator must resolve
    body: dict[str, Any] = {"model": "llama3.2", "stream": False, "format": schema}
    if endpoint == "/api/generate":
        body["prompt"] = "Describe a person"
    else:
        body["messages"] = [{"role": "user", "content": "Describe a person"}]
    r = sim.client.post(endpoint, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    text = data["response"] if endpoint == "/api/generate" else data["message"]["content"]
    person = Person.model_validate_json(text)
    assert person.favourite is Colour.RED  # enums pick the first value
    assert len(person.past) <= 2
    raw = json.loads(text)
    assert set(raw) >= set(schema["required"])


def test_format_schema_handwritten(sim: Sim) -> None:
    schema = {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 10, "maximum": 12},
            "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "ok": {"type": "boolean"},
            "kind": {"enum": ["alpha", "beta"]},
            "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "nested": {
                "type": "object",
                "properties": {"deep": {"type": "string", "minLength": 12}},
                "required": ["deep"],
            },
            "nothing": {"type": "null"},
        },
        "required": ["count", "ratio", "ok", "kind", "items", "nested", "extra"],
    }
    for seed in range(5):
        out = json.loads(_gen(sim, prompt="x", format=schema, options={"seed": seed})["response"])
        assert 10 <= out["count"] <= 12 and isinstance(out["count"], int)
        assert 0 < out["ratio"] <= 1
        assert isinstance(out["ok"], bool)
        assert out["kind"] == "alpha"
        assert 1 <= len(out["items"]) <= 2 and all(isinstance(i, int) for i in out["items"])
        assert isinstance(out["nested"]["deep"], str) and len(out["nested"]["deep"]) >= 12
        assert out["nothing"] is None
        assert isinstance(out["extra"], str)
