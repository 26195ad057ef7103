"""Native request schemas → :class:`Generation` (Ollama-shaped bodies)."""

from __future__ import annotations

from typing import Any

from inference_service.models.inference import ChatRequest, GenerateRequest, GenerationBase
from inference_service.services.admission import PriorityRequest
from inference_service.services.inference import Generation


def _common(req: GenerationBase) -> dict[str, Any]:
    body: dict[str, Any] = {"model": req.model}
    if req.options is not None:
        body["options"] = req.options.model_dump(exclude_none=True)
    if req.format is not None:
        body["format"] = req.format
    if req.keep_alive is not None:
        body["keep_alive"] = req.keep_alive
    return body


def priority_of(body_priority: int | None, header: PriorityRequest) -> int:
    """Body field wins over the ``X-Priority`` header; clamped to 0..9 and the tier's cap."""
    return header.resolve(body_priority)


def chat_generation(req: ChatRequest, user: str, header_priority: PriorityRequest) -> Generation:
    body = _common(req)
    body["messages"] = [m.model_dump(exclude_none=True) for m in req.messages]
    return Generation("chat", body, user, priority_of(req.priority, header_priority))


def generate_generation(
    req: GenerateRequest, user: str, header_priority: PriorityRequest
) -> Generation:
    body = _common(req)
    body["prompt"] = req.prompt
    for name in ("system", "suffix", "raw"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    return Generation("generate", body, user, priority_of(req.priority, header_priority))
