"""OpenAI wire format ⇄ Ollama shapes: request mapping, response and chunk builders."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from inference_service.core.sse import chunk_text
from inference_service.models.openai import OpenAIChatRequest, OpenAICompletionRequest
from inference_service.services.admission import PriorityRequest
from inference_service.services.inference import Generation
from inference_service.services.requests import priority_of

JsonDict = dict[str, Any]


def chat_to_generation(req: OpenAIChatRequest, user: str, header: PriorityRequest) -> Generation:
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in req.messages
    ]
    body: JsonDict = {"model": req.model, "messages": messages, "options": req.options()}
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_object":
        body["format"] = "json"
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema:
        body["format"] = fmt.json_schema.get("schema", fmt.json_schema)
    return Generation("chat", body, user, priority_of(req.priority, header))


def completion_to_generation(
    req: OpenAICompletionRequest, user: str, header: PriorityRequest
) -> Generation:
    body: JsonDict = {"model": req.model, "prompt": req.prompt, "options": req.options()}
    if req.suffix:
        body["suffix"] = req.suffix
    return Generation("generate", body, user, priority_of(req.priority, header))


def finish_reason(chunk: JsonDict) -> str:
    return "length" if chunk.get("done_reason") == "length" else "stop"


def usage(chunk: JsonDict) -> JsonDict:
    prompt = int(chunk.get("prompt_eval_count") or 0)
    completion = int(chunk.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class CompletionIds:
    """id/created/model shared by every chunk of one answer."""

    def __init__(self, model: str, chat: bool) -> None:
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model
        self.chat = chat

    def envelope(self, choices: list[JsonDict], **extra: Any) -> JsonDict:
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def whole(self, result: JsonDict) -> JsonDict:
        """Non-streamed response."""
        text = chunk_text(result)
        choice: JsonDict = {"index": 0, "finish_reason": finish_reason(result)}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice.update(text=text, logprobs=None)
        return self.envelope([choice], usage=usage(result), system_fingerprint=None)

    def chunk(self, text: str | None, finish: str | None, first: bool = False) -> JsonDict:
        """One streamed chunk (``chat.completion.chunk`` / ``text_completion``)."""
        choice: JsonDict = {"index": 0, "finish_reason": finish}
        if self.chat:
            delta: JsonDict = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice.update(text=text or "", logprobs=None)
        body = self.envelope([choice])
        if self.chat:
            body["object"] = "chat.completion.chunk"
        return body

    def usage_chunk(self, final: JsonDict) -> JsonDict:
        body = self.envelope([], usage=usage(final))
        if self.chat:
            body["object"] = "chat.completion.chunk"
        return body


def embedding_data(vectors: list[list[float]], as_base64: bool) -> list[JsonDict]:
    out: list[JsonDict] = []
    for index, vector in enumerate(vectors):
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        out.append({"object": "embedding", "index": index, "embedding": embedding})
    return out
