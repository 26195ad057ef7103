"""Schemas of the native ``/inference/*`` API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Role = Literal["system", "user", "assistant", "tool"]


class ModelOptions(BaseModel):
    """Ollama ``options`` we validate; unknown ones pass through untouched."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=1000)
    num_predict: int | None = Field(default=None, ge=-2, le=32768)
    num_ctx: int | None = Field(default=None, ge=1, le=1_048_576)
    seed: int | None = None
    repeat_penalty: float | None = Field(default=None, ge=0, le=10)
    stop: str | list[str] | None = None


class ChatMessage(BaseModel):
    role: Role
    content: str = Field(default="", max_length=10_000_000)
    images: list[str] | None = None


class GenerationBase(BaseModel):
    model: str = Field(min_length=1, max_length=200, examples=["llama3.2"])
    stream: bool = Field(default=False, description="true: SSE events; false: one JSON.")
    options: ModelOptions | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: str | int | None = None
    priority: int | None = Field(
        default=None, description="0 (lowest) .. 9; clamped. X-Priority header also works."
    )


class ChatRequest(GenerationBase):
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)


class GenerateRequest(GenerationBase):
    prompt: str = Field(min_length=1)
    system: str | None = None
    suffix: str | None = None
    raw: bool | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class AssistantMessage(BaseModel):
    role: str = "assistant"
    content: str


class CompletionResponse(BaseModel):
    """Non-streamed answer of ``/inference/chat`` and ``/inference/generate``."""

    model: str
    message: AssistantMessage
    usage: Usage
    done_reason: str | None = None


class EmbedRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(description="One text or a batch.")
    truncate: bool | None = None
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    priority: int | None = None

    @model_validator(mode="after")
    def _non_empty(self) -> EmbedRequest:
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input must not be an empty list")
        return self


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    usage: Usage


class TokenCountRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    text: str | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TokenCountRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of text or messages")
        return self


class TokenCountResponse(BaseModel):
    model: str
    tokens: int
    exact: bool
    method: str


class PullRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)


class UsageReport(BaseModel):
    user: str
    days: list[dict[str, Any]]
    totals: dict[str, dict[str, int]]
