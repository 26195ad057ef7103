"""Build a deterministic JSON value that satisfies a JSON schema (for ``format: {schema}``).

Supported: ``type`` (single or list), ``properties``/``required`` (every listed property is
emitted), ``items``/``prefixItems`` (0-2 items, ``minItems``/``maxItems`` honoured), ``enum``
(first value), ``const``, ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` (merged),
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``), numeric bounds, string lengths and a few
string ``format`` values.  ``pattern`` and ``multipleOf`` are ignored.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

_MAX_DEPTH = 8
_FORMAT_SAMPLES = {
    "date-time": "2025-01-01T12:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "hostname": "sim.example.com",
}


def instance_for_schema(schema: dict[str, Any], rng: random.Random, vocab: Sequence[str]) -> Any:
    """A value valid against ``schema``, drawn deterministically from ``rng``."""
    return _Builder(schema, rng, vocab).build(schema, 0)


class _Builder:
    def __init__(self, root: dict[str, Any], rng: random.Random, vocab: Sequence[str]) -> None:
        self.root = root
        self.rng = rng
        self.vocab = vocab

    def _resolve(self, node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 32:
            ref: str = node["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in [p for p in ref[1:].split("/") if p]:
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target.get(part, {}) if isinstance(target, dict) else {}
            else:
                target = {}
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **extra} if isinstance(target, dict) else target
            seen += 1
        return node

    def build(self, node: Any, depth: int) -> Any:
        node = self._resolve(node)
        if not isinstance(node, dict):
            return self._string({})
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            options = node.get(key)
            if isinstance(options, list) and options:
                resolved = [self._resolve(o) for o in options]
                non_null = [o for o in resolved if not _is_null_schema(o)]
                return self.build((non_null or resolved)[0], depth)
        all_of = node.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.build(_merge([self._resolve(o) for o in all_of], node), depth)
        kind = _type_of(node)
        if kind == "object":
            return self._object(node, depth)
        if kind == "array":
            return self._array(node, depth)
        if kind == "integer":
            return self._integer(node)
        if kind == "number":
            return self._number(node)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self._string(node)

    def _object(self, node: dict[str, Any], depth: int) -> dict[str, Any]:
        props = node.get("properties")
        props = props if isinstance(props, dict) else {}
        required = [r for r in node.get("required", []) if isinstance(r, str)]
        names = list(props) if depth < _MAX_DEPTH else [n for n in props if n in required]
        out: dict[str, Any] = {name: self.build(props[name], depth + 1) for name in names}
        for name in required:
            if name not in out:
                out[name] = self._string({})
        return out

    def _array(self, node: dict[str, Any], depth: int) -> list[Any]:
        min_items = int(node.get("minItems", 0))
        max_items = int(node.get("maxItems", 2))
        count = self.rng.randint(0, max(0, min(2, max_items)))
        if depth >= _MAX_DEPTH:
            count = 0
        count = max(count, min_items)
        prefix = node.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = node.get("items", {})
        if isinstance(items, list):  # draft-4 tuple form
            prefix, items = items, node.get("additionalItems", {})
        out = []
        for i in range(count):
            schema = prefix[i] if i < len(prefix) else items
            out.append(self.build(schema, depth + 1))
        return out

    def _bounds(self, node: dict[str, Any], step: float) -> tuple[float, float]:
        lo = node.get("minimum")
        hi = node.get("maximum")
        ex_lo = node.get("exclusiveMinimum")
        ex_hi = node.get("exclusiveMaximum")
        if isinstance(ex_lo, bool):  # draft-4
            ex_lo = lo if ex_lo else None
        if isinstance(ex_hi, bool):
            ex_hi = hi if ex_hi else None
        low = float(lo) if isinstance(lo, int | float) else None
        high = float(hi) if isinstance(hi, int | float) else None
        if isinstance(ex_lo, int | float):
            low = max(low if low is not None else float(ex_lo) + step, float(ex_lo) + step)
        if isinstance(ex_hi, int | float):
            high = min(high if high is not None else float(ex_hi) - step, float(ex_hi) - step)
        if low is None:
            low = 0.0 if high is None or high >= 0 else high - 100
        if high is None:
            high = low + 100
        return low, max(low, high)

    def _integer(self, node: dict[str, Any]) -> int:
        low, high = self._bounds(node, 1)
        lo_i, hi_i = int(-(-low // 1)), int(high // 1)
        return self.rng.randint(lo_i, max(lo_i, hi_i))

    def _number(self, node: dict[str, Any]) -> float:
        low, high = self._bounds(node, 0.01)
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def _string(self, node: dict[str, Any]) -> str:
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[fmt]
        words = [
            self.vocab[self.rng.randrange(len(self.vocab))] for _ in range(self.rng.randint(1, 4))
        ]
        text = " ".join(words)
        min_len = int(node.get("minLength", 0))
        max_len = node.get("maxLength")
        if len(text) < min_len:
            text += "x" * (min_len - len(text))
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len]
        return text


def _is_null_schema(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _type_of(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return "string"


def _merge(parts: list[Any], base: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in base.items() if k != "allOf"}
    props: dict[str, Any] = dict(merged.get("properties", {}))
    required: list[str] = list(merged.get("required", []))
    for part in parts:
        if not isinstance(part, dict):
            continue
        props.update(part.get("properties", {}))
        required += [r for r in part.get("required", []) if r not in required]
        for key, value in part.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged
