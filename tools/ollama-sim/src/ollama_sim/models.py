"""The fake model catalogue: what ``/api/tags`` lists and what the inference routes accept.

Digests are the sha256 hex of the full model name, so they are stable across runs.  Pulling an
unknown name adds a plausible chat model (an embedding model if the name contains ``embed``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

SIM_EPOCH = "2025-01-01T00:00:00Z"


def normalize_name(name: str) -> str:
    """Apply Ollama's naming rule: a name without a tag means ``:latest``."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def name_digest(name: str) -> str:
    """Deterministic sha256 hex digest of a (normalised) model name."""
    return hashlib.sha256(normalize_name(name).encode()).hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the catalogue."""

    name: str
    family: str
    parameter_size: str
    quantization_level: str
    size: int
    context_length: int
    embedding_length: int
    capabilities: tuple[str, ...]
    digest: str = ""
    modified_at: str = SIM_EPOCH
    format: str = "gguf"
    families: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", name_digest(self.name))
        if not self.families:
            object.__setattr__(self, "families", (self.family,))

    @property
    def is_embedding_only(self) -> bool:
        return "completion" not in self.capabilities

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": list(self.families),
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tag_entry(self) -> dict[str, Any]:
        """The object ``/api/tags`` returns for this model."""
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }


def default_models() -> list[ModelSpec]:
    """The models every fresh simulator starts with."""
    return [
        ModelSpec(
            name="llama3.2:latest",
            family="llama",
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            size=2_019_393_189,
            context_length=8192,
            embedding_length=3072,
            capabilities=("completion", "tools"),
        ),
        ModelSpec(
            name="qwen2.5-coder:1.5b",
            family="qwen2",
            parameter_size="1.5B",
            quantization_level="Q4_K_M",
            size=986_061_892,
            context_length=32768,
            embedding_length=1536,
            capabilities=("completion", "tools", "insert"),
        ),
        ModelSpec(
            name="nomic-embed-text:latest",
            family="nomic-bert",
            parameter_size="137M",
            quantization_level="F16",
            size=274_302_450,
            context_length=2048,
            embedding_length=768,
            capabilities=("embedding",),
        ),
    ]


def synthesize_model(name: str) -> ModelSpec:
    """Invent a plausible catalogue entry for a pulled name (deterministic from the name)."""
    full = normalize_name(name)
    h = int(name_digest(full)[:8], 16)
    if "embed" in full:
        return ModelSpec(
            name=full,
            family="bert",
            parameter_size="335M",
            quantization_level="F16",
            size=669_000_000 + h % 1_000_000,
            context_length=512,
            embedding_length=768,
            capabilities=("embedding",),
        )
    billions = 1 + h % 8
    return ModelSpec(
        name=full,
        family="llama",
        parameter_size=f"{billions}.0B",
        quantization_level="Q4_K_M",
        size=billions * 600_000_000 + h % 1_000_000,
        context_length=8192,
        embedding_length=4096,
        capabilities=("completion",),
    )


class Catalogue:
    """Mutable set of installed models keyed by normalised name."""

    def __init__(self, models: list[ModelSpec] | None = None) -> None:
        self._models: dict[str, ModelSpec] = {}
        for spec in models if models is not None else default_models():
            self._models[spec.name] = spec

    def get(self, name: str) -> ModelSpec | None:
        return self._models.get(normalize_name(name))

    def all(self) -> list[ModelSpec]:
        return list(self._models.values())

    def add(self, spec: ModelSpec) -> None:
        self._models[spec.name] = spec

    def delete(self, name: str) -> bool:
        return self._models.pop(normalize_name(name), None) is not None

    def copy(self, source: str, destination: str) -> bool:
        spec = self.get(source)
        if spec is None:
            return False
        dest = normalize_name(destination)
        self._models[dest] = replace(spec, name=dest)
        return True

    def show(self, spec: ModelSpec, verbose: bool = False) -> dict[str, Any]:
        """The body of ``/api/show`` for ``spec``."""
        arch = spec.family.replace("-", "_") if spec.family != "nomic-bert" else "nomic-bert"
        info: dict[str, Any] = {
            "general.architecture": arch,
            "general.file_type": 15,
            "general.parameter_count": _param_count(spec.parameter_size),
            "general.quantization_version": 2,
            f"{arch}.context_length": spec.context_length,
            f"{arch}.embedding_length": spec.embedding_length,
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": [] if not verbose else ["<s>", "</s>"],
        }
        params = "" if spec.is_embedding_only else 'stop                           "<|eot_id|>"'
        template = (
            ""
            if spec.is_embedding_only
            else (
                "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
            )
        )
        return {
            "license": "Simulated model: no licence, no weights.",
            "modelfile": (
                '# Modelfile generated by "ollama show" (OLLAMA SIMULATOR)\n'
                f"FROM {spec.name}\n"
                + (f'TEMPLATE """{template}"""\n' if template else "")
                + (f"PARAMETER {params}\n" if params else "")
            ),
            "parameters": params,
            "template": template,
            "details": spec.details(),
            "model_info": info,
            "capabilities": list(spec.capabilities),
            "modified_at": spec.modified_at,
        }


def _param_count(size: str) -> int:
    unit = {"B": 1_000_000_000, "M": 1_000_000}.get(size[-1:], 1)
    try:
        return int(float(size[:-1]) * unit)
    except ValueError:
        return 0
