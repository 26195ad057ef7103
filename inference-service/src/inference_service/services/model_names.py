"""Ollama's model names: ``llama3.2`` and ``llama3.2:latest`` name one model.

Everything that counts per model (admission slots, the usage ledger, metrics, the response
cache, backend routing) uses the normalized name, so two spellings of one model share one
slot pool and one ledger row. Answers echo the name the client sent, as Ollama does.
"""

from __future__ import annotations


def normalize_model(name: str) -> str:
    """``llama3.2`` → ``llama3.2:latest`` (Ollama's rule: a missing tag means latest); the
    tag is looked for after the last ``/``, so a registry port (``host:5000/m``) is not one."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
