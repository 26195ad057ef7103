"""Deterministic embeddings that carry (lexical) meaning.

Hashed bag-of-words: every lower-cased word token (``\\w+``) is hashed (blake2b) to one of ``D``
buckets and a sign; the bucket accumulates +1/-1 per occurrence; the vector is L2-normalised.
Texts that share words therefore have a higher cosine similarity than texts that do not.
A text with no word tokens maps to the fixed unit vector ``e0 = [1, 0, 0, ...]``.
"""

from __future__ import annotations

import hashlib
import math
import re
from functools import lru_cache

from .tokens import tokenize

_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=65_536)
def _bucket(word: str, dims: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
    return h % dims, (1.0 if (h >> 63) & 1 else -1.0)


def embed_text(text: str, dims: int) -> list[float]:
    """L2-normalised hashed bag-of-words vector of length ``dims``."""
    vec = [0.0] * dims
    for word in _WORD_RE.findall(text.lower()):
        index, sign = _bucket(word, dims)
        vec[index] += sign
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0.0:
        vec = [0.0] * dims
        vec[0] = 1.0
        return vec
    return [x / norm for x in vec]


def truncate_tokens(text: str, max_tokens: int) -> str:
    """Keep the first ``max_tokens`` tokens of ``text`` (re-joined with single spaces)."""
    tokens = tokenize(text)
    return text if len(tokens) <= max_tokens else " ".join(tokens[:max_tokens])


def shorten(vec: list[float], dims: int) -> list[float]:
    """Ollama's ``dimensions``: keep the first ``dims`` values and re-normalise."""
    if dims >= len(vec):
        return vec
    head = vec[:dims]
    norm = math.sqrt(sum(x * x for x in head))
    if norm == 0.0:
        head[0] = 1.0
        return head
    return [x / norm for x in head]


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity (helper for tests and callers)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
