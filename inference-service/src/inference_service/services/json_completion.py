"""``JsonCompleter``: schema-constrained completions for in-service callers (code analysis).

It satisfies ``code_analysis.ReviewBackend`` (``complete_json(model, system, prompt,
schema) -> str``) and goes through the same path as every user request — backend routing,
breaker, admission gate, usage ledger — so reviews are queued and accounted like chats.
``main.py`` puts one on ``app.state.review_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference_service.core.sse import chunk_text as message_text
from inference_service.services.admission import DEFAULT_PRIORITY
from inference_service.services.inference import Generation, InferenceService


class JsonCompleter:
    """Chat completions whose output follows a JSON schema (Ollama ``format``)."""

    def __init__(
        self,
        service: Callable[[], InferenceService],
        user: str = "service:code-analysis",
        priority: int = DEFAULT_PRIORITY,
    ) -> None:
        self._service = service  # built per call: the admission gate may be swapped at start
        self.user = user
        self.priority = priority

    async def complete_json(
        self, model: str, system: str, prompt: str, schema: dict[str, Any]
    ) -> str:
        """The model's raw JSON text; raises the translated Ollama errors (ProblemError)."""
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
            "format": schema,
            "options": {"temperature": 0},
        }
        result = await self._service().complete(Generation("chat", body, self.user, self.priority))
        return message_text(result)
