"""``JsonCompleter``: schema-constrained completions for in-service callers (code analysis).

It satisfies ``code_analysis.ReviewBackend`` (``complete_json(model, system, prompt,
schema) -> str``) and goes through the same path as every user request — backend routing,
breaker, admission gate, usage ledger — so reviews are queued and accounted like chats.
``main.py`` puts one on ``app.state.review_backend``; the code route binds it to the caller
(:meth:`JsonCompleter.for_caller`), so a review's tokens land in the caller's usage ledger
at the caller's priority.
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

    def for_caller(self, user: str, priority: int) -> JsonCompleter:
        """The same completer, charging ``user``'s ledger and queued at ``priority``."""
        return JsonCompleter(self._service, user, priority)

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
