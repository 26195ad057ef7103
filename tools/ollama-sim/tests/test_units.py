"""In-process unit tests: tokeniser/output planner, schema builder, keep_alive, CLI parsing."""

from __future__ import annotations

import random

import pytest

from ollama_sim.cli import banner, resolve
from ollama_sim.config import SimConfig
from ollama_sim.models import normalize_name
from ollama_sim.residency import FOREVER_S, parse_keep_alive
from ollama_sim.schema import instance_for_schema
from ollama_sim.tokens import (
    VOCAB,
    apply_stop,
    count_tokens,
    generation_key,
    plan_output,
    split_pieces,
)


def test_split_pieces_roundtrip_and_one_token_each() -> None:
    text = '{"a": [1, 2.5], "b": "hi there"}  '
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert all(count_tokens(p) == 1 for p in pieces)
    assert len(pieces) == count_tokens(text)


def test_plan_output_invariants() -> None:
    key = generation_key("llama3.2:latest", ["hello"], None)
    pieces, reason = plan_output(key, None, None, 24, [])
    assert len(pieces) == 24 and reason == "stop" and pieces[-1] == "."
    assert count_tokens("".join(pieces)) == 24
    pieces, reason = plan_output(key, None, 3, 24, [])
    assert len(pieces) == 3 and reason == "length"
    assert plan_output(key, None, 0, 24, []) == ([], "length")


def test_apply_stop_keeps_exact_prefix() -> None:
    pieces = ["Alpha", " beta", " gamma", " delta"]
    assert apply_stop(pieces, ["gam"]) == (["Alpha", " beta "], True)
    assert apply_stop(pieces, ["ta g"]) == (["Alpha", " be"], True)
    assert apply_stop(pieces, ["zzz"]) == (pieces, False)


def test_schema_builder_edge_cases() -> None:
    rng = random.Random(0)
    schema = {
        "type": "object",
        "properties": {
            "tree": {"$ref": "#/$defs/node"},
            "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
            "pair": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "boolean"}],
                "minItems": 2,
                "maxItems": 2,
            },
            "when": {"type": "string", "format": "date-time"},
            "fixed": {"const": 42},
            "multi": {"type": ["null", "number"], "minimum": -3, "maximum": -1},
            "combo": {"allOf": [{"properties": {"x": {"type": "integer"}}, "required": ["x"]}]},
        },
        "required": ["tree", "choice", "pair", "when", "fixed", "multi", "combo"],
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "required": ["children"],
            }
        },
    }
    for _ in range(20):
        value = instance_for_schema(schema, rng, VOCAB)
        assert isinstance(value["tree"]["children"], list)
        assert isinstance(value["choice"], int) and value["choice"] >= 5
        assert isinstance(value["pair"][0], str) and isinstance(value["pair"][1], bool)
        assert value["when"] == "2025-01-01T12:00:00Z"
        assert value["fixed"] == 42
        assert -3 <= value["multi"] <= -1
        assert isinstance(value["combo"]["x"], int)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, 300.0),
        (0, 0.0),
        ("0", 0.0),
        (60, 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("-1", FOREVER_S),
        (-1, FOREVER_S),
        ("2.5s", 2.5),
    ],
)
def test_keep_alive_parsing(value: float | str | None, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


def test_keep_alive_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_keep_alive("5 minutes")


def test_model_name_normalisation() -> None:
    assert normalize_name("llama3.2") == "llama3.2:latest"
    assert normalize_name("qwen2.5-coder:1.5b") == "qwen2.5-coder:1.5b"
    assert normalize_name("registry.local:5000/ns/model") == "registry.local:5000/ns/model:latest"


def test_cli_flags_env_and_defaults() -> None:
    cfg, host, port, _ = resolve([], env={})
    assert cfg == SimConfig() and host == "127.0.0.1" and port == 11434
    env = {
        "OLLAMA_SIM_TOKEN_DELAY_MS": "20",
        "OLLAMA_SIM_FAIL_MODE": "hang",
        "OLLAMA_SIM_PORT": "9999",
        "OLLAMA_SIM_NUM_PARALLEL": "2",
    }
    cfg, host, port, _ = resolve(["--num-parallel", "7", "--host", "0.0.0.0"], env=env)
    assert cfg.token_delay_ms == 20.0 and cfg.fail_mode == "hang"
    assert cfg.num_parallel == 7  # flag beats env
    assert (host, port) == ("0.0.0.0", 9999)
    every_knob = [f"--{name.replace('_', '-')}" for name in SimConfig.model_fields]
    from ollama_sim.cli import build_parser

    help_text = build_parser().format_help()
    assert all(flag in help_text for flag in every_knob)
    assert "OLLAMA SIMULATOR — simulated model, not a real LLM" in banner(cfg, host, port)


def test_cli_rejects_bad_values() -> None:
    with pytest.raises(SystemExit):
        resolve(["--fail-mode", "explode"], env={})
    with pytest.raises(SystemExit):
        resolve([], env={"OLLAMA_SIM_NUM_PARALLEL": "0"})
