"""Request boundary: pydantic request models, body parsing and Ollama-style error bodies.

Every error leaves as ``{"error": "<message>"}`` with Ollama's status codes (never a 422).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import Response

try:  # orjson is optional; it only makes encoding faster.
    import orjson

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes."""
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(obj: Any) -> bytes:
        """Compact JSON bytes."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def ndjson_line(obj: Any) -> bytes:
    """One NDJSON line (object + ``\\n``)."""
    return dumps(obj) + b"\n"


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json; charset=utf-8")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


class ApiError(Exception):
    """An error that becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def model_not_found(name: str) -> ApiError:
    return ApiError(404, f"model '{name}' not found")


FormatT = Literal["", "json"] | dict[str, Any] | None
KeepAliveT = float | str | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _NamedBody(_Body):
    """Bodies that name a model; Ollama still accepts the legacy ``name`` key."""

    model: str

    @model_validator(mode="before")
    @classmethod
    def _legacy_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")

    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _single_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class GenerateRequest(_NamedBody):
    prompt: str | None = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    stream: bool = True
    format: FormatT = None
    images: list[str] | None = None
    options: Options | None = None
    keep_alive: KeepAliveT = None
    think: bool | str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(_NamedBody):
    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = True
    format: FormatT = None
    options: Options | None = None
    keep_alive: KeepAliveT = None
    think: bool | str | None = None


class EmbedRequest(_NamedBody):
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = None
    options: Options | None = None
    keep_alive: KeepAliveT = None


class EmbeddingsRequest(_NamedBody):
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAliveT = None


class ModelRequest(_NamedBody):
    """``/api/show``, ``/api/pull``, ``/api/delete``."""

    verbose: bool = False
    stream: bool = True
    insecure: bool = False


class CopyRequest(_Body):
    source: str
    destination: str


BodyT = TypeVar("BodyT", bound=BaseModel)


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    """Read and validate a JSON body; raises :class:`ApiError` (400) with Ollama wording."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid request: body must be a JSON object")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, _describe(exc)) from None
    if isinstance(body, _NamedBody) and not body.model.strip():
        raise ApiError(400, "model is required")
    return body


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    for err in errors:
        if err["type"] == "missing" and len(err["loc"]) == 1:
            return f"{err['loc'][0]} is required"
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"invalid request: {where or 'body'}: {first['msg']}"
