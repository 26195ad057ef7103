"""Token counting: exact from the backend when it can tell, else a flagged estimate.

Method (documented in docs/inference.md):

* ``text`` on a generation model → ``/api/generate`` with ``raw: true`` (no template) and
  ``num_predict: 1``; the answer's ``prompt_eval_count`` is the model's own count → exact.
* ``messages`` → ``/api/chat`` with ``num_predict: 1``; ``prompt_eval_count`` includes
  what the chat template adds, i.e. what really counts against ``num_ctx`` → exact.
* embedding-only models → ``/api/embed``'s ``prompt_eval_count`` → exact.
* if the backend cannot tell (error, or a real Ollama that reused its prompt cache and
  reports fewer tokens than the text has words), an estimate is returned with
  ``exact: false``: one token per word run or punctuation mark.

Counting costs a prompt evaluation and one generated token on the backend, so it waits
for a slot in the admission queue like any generation (at the caller's priority); it is
not recorded in the usage ledger.
"""

from __future__ import annotations

import re
from typing import Any

from inference_service.services.admission import AdmissionGate
from inference_service.services.backends import BackendPool
from inference_service.services.errors import OllamaBadRequest

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Heuristic count: word runs and single punctuation characters."""
    return len(_TOKEN_RE.findall(text))


async def count_tokens(
    pool: BackendPool,
    admission: AdmissionGate,
    model: str,
    text: str | None,
    messages: list[dict[str, Any]] | None,
    priority: int,
) -> tuple[int, bool, str]:
    """``(tokens, exact, method)`` for ``text`` or ``messages`` under ``model``; the
    backend call holds an admission slot of ``backend|model`` at ``priority``."""
    joined = text if text is not None else "\n".join(m["content"] for m in messages or [])
    estimate = estimate_tokens(joined)
    if not joined.strip():
        return 0, True, "empty"
    backend = await pool.pick(model)
    options = {"num_predict": 1}
    async with admission.admit(backend.name, model, priority, None), pool.use(backend):
        try:
            if text is not None:
                body = {"model": model, "prompt": text, "raw": True, "options": options}
                result = await backend.client.generate(body)
                method = "backend:generate.prompt_eval_count"
            else:
                body = {"model": model, "messages": messages, "options": options}
                result = await backend.client.chat(body)
                method = "backend:chat.prompt_eval_count"
        except OllamaBadRequest:  # e.g. an embedding-only model cannot generate
            result = await backend.client.embed({"model": model, "input": joined})
            method = "backend:embed.prompt_eval_count"
    count = result.get("prompt_eval_count")
    if isinstance(count, int) and count > 0:
        return count, True, method
    return estimate, False, "estimate:word-and-punctuation"
