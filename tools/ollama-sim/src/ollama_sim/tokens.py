"""Deterministic tokeniser and output generator.

Tokeniser rule (public, so tests elsewhere can predict counts): a token is a maximal run of word
characters (``\\w+``) or a single character that is neither a word character nor whitespace.
Whitespace is never a token.  ``"Why is the sky blue?"`` is 6 tokens.

The output generator derives its text from a hash of (model, prompt, seed): every piece it yields
is exactly one token under the rule above, so ``eval_count`` equals the number of streamed chunks
and ``count_tokens(full_output)`` for plain-text output.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .schema import instance_for_schema

TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_PIECE_RE = re.compile(r"\s*(?:\w+|[^\w\s])")
VOCAB_SIZE = 128_256
MAX_NUM_PREDICT = 4096

_VOCAB_TEXT = """the a of to and in is it that for on with as this by be are from at or an
    not was can
    model token stream simulated answer request server response data value result system user
    light sky blue green river mountain ocean forest cloud signal switch board queue latency
    quick brown fox jumps over lazy dog alpha beta gamma delta epsilon zeta theta lambda sigma
    compute memory cache vector matrix tensor kernel thread socket packet buffer channel
    because therefore however while when where which what why how each every many some few
    small large fast slow bright dark warm cold simple complex stable random careful honest
    think learn build test measure observe explain describe compare predict verify improve
    first second third next last final early late often rarely always never usually
    water fire earth wind stone glass paper metal wood sand salt sugar bread apple orange
    north south east west near far above below inside outside between around through"""
VOCAB: tuple[str, ...] = tuple(_VOCAB_TEXT.split())


def tokenize(text: str) -> list[str]:
    """Split ``text`` into tokens by the public rule."""
    return TOKEN_RE.findall(text)


def count_tokens(text: str | None) -> int:
    """Number of tokens in ``text`` (``0`` for ``None`` or whitespace)."""
    return len(TOKEN_RE.findall(text)) if text else 0


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into one-token pieces that keep their leading whitespace.

    ``"".join(split_pieces(t)) == t`` (trailing whitespace is glued to the last piece).
    """
    pieces = _PIECE_RE.findall(text)
    consumed = sum(len(p) for p in pieces)
    if consumed < len(text):
        if pieces:
            pieces[-1] += text[consumed:]
        else:
            pieces = [text]
    return pieces


def token_ids(tokens: Iterable[str]) -> list[int]:
    """Stable fake token ids (used for the ``context`` field of ``/api/generate``)."""
    return [
        int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "big") % VOCAB_SIZE
        for t in tokens
    ]


def generation_key(model: str, parts: Sequence[str], seed: int | None) -> bytes:
    """Hash that determines an output: same model + prompt parts + seed -> same text."""
    h = hashlib.sha256()
    h.update(model.encode())
    for part in parts:
        h.update(b"\x00")
        h.update(part.encode())
    h.update(b"\x01" + str(seed).encode())
    return h.digest()


def plain_pieces(key: bytes, n: int, natural_end: bool) -> list[str]:
    """``n`` one-token pieces of pseudo-English derived from ``key``.

    With ``natural_end`` the last piece is ``"."`` (the "model" chose to stop).
    """
    if n <= 0:
        return []
    stream = hashlib.shake_256(key).digest(2 * n)
    pieces: list[str] = []
    words_in_sentence = 0
    for i in range(n):
        v = stream[2 * i] << 8 | stream[2 * i + 1]
        if natural_end and i == n - 1 and i > 0:
            pieces.append(".")
            break
        if words_in_sentence >= 4 and v % 7 == 0:
            pieces.append("." if v % 2 else ",")
            words_in_sentence = 0 if v % 2 else 1
            continue
        word = VOCAB[v % len(VOCAB)]
        if words_in_sentence == 0 and (i == 0 or pieces[-1] == "."):
            word = word.capitalize()
        pieces.append(word if i == 0 else " " + word)
        words_in_sentence += 1
    return pieces


def json_text(key: bytes, fmt: str | dict[str, Any]) -> str:
    """Valid JSON text for ``format: "json"`` or an instance of a JSON-schema ``format``."""
    rng = random.Random(int.from_bytes(key[:8], "big"))
    if isinstance(fmt, dict):
        value = instance_for_schema(fmt, rng, VOCAB)
    else:
        words = [VOCAB[rng.randrange(len(VOCAB))] for _ in range(rng.randint(3, 8))]
        value = {
            "response": " ".join(words),
            "confidence": round(rng.random(), 2),
            "ok": rng.random() < 0.5,
        }
    return json.dumps(value, ensure_ascii=False)


def apply_stop(pieces: list[str], stops: Sequence[str]) -> tuple[list[str], bool]:
    """Cut the output before the earliest stop string; returns (pieces, stopped)."""
    stops = [s for s in stops if s]
    if not stops or not pieces:
        return pieces, False
    text = "".join(pieces)
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut < 0:
        return pieces, False
    out: list[str] = []
    pos = 0
    for piece in pieces:
        if pos + len(piece) <= cut:
            out.append(piece)
            pos += len(piece)
            continue
        head = piece[: cut - pos]
        if head.strip():
            out.append(head)
        elif head and out:  # whitespace only: glue it to the previous piece (no empty token)
            out[-1] += head
        break
    return out, True


def resolve_length(num_predict: int | None, default: int) -> tuple[int, bool]:
    """(tokens to emit, whether hitting that count means ``done_reason: "length"``).

    ``num_predict`` absent or negative (Ollama's -1 / -2) -> ``default`` tokens ending
    naturally (``stop``); otherwise exactly ``num_predict`` tokens, capped at 4096 (``length``).
    """
    if num_predict is None or num_predict < 0:
        return default, False
    return min(num_predict, MAX_NUM_PREDICT), True


def plan_output(
    key: bytes,
    fmt: str | dict[str, Any] | None,
    num_predict: int | None,
    default_num_predict: int,
    stops: Sequence[str],
) -> tuple[list[str], str]:
    """Output pieces and ``done_reason`` (``stop`` or ``length``) for one generation."""
    limit, limit_is_length = resolve_length(num_predict, default_num_predict)
    if fmt is not None and fmt != "":
        pieces = split_pieces(json_text(key, fmt))
        reason = "stop"
        if limit_is_length and len(pieces) > limit:
            pieces, reason = pieces[:limit], "length"
    else:
        pieces = plain_pieces(key, limit, natural_end=not limit_is_length)
        reason = "length" if limit_is_length else "stop"
    pieces, stopped = apply_stop(pieces, stops)
    return pieces, "stop" if stopped else reason
