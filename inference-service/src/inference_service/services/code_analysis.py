"""Code analysis: static facts for any language plus an optional LLM review.

Pieces:

* :func:`analyze_static` — Python through ``ast`` (``code_analysis_python``), every other
  language through line metrics and a regex function estimate (``code_analysis_metrics``).
* :class:`ReviewBackend` — the seam to a model server. Anything with
  ``complete_json(model, system, prompt, schema) -> str`` fits; ``main.py`` sets an adapter
  over the Ollama client as ``app.state.review_backend``.
* :class:`CodeReviewer` — prompt → backend (Ollama ``format`` = ``Review``'s JSON schema) →
  Pydantic validation, one corrective retry, then a ``review_error`` instead of a 500.
* :class:`CodeAnalysisService` — the size limit (413), detection, static facts, review.

Errors: :class:`~switchboard_common.PayloadTooLarge` for oversized code. A backend that
raises a :class:`~switchboard_common.ProblemError` (how upstream failures are translated)
yields ``review: null`` with ``review_error``; any other exception propagates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
from pydantic import ValidationError

from inference_service.models.code import (
    CodeAnalysis,
    CodeAnalysisRequest,
    Finding,
    Language,
    MetricsFacts,
    PythonFacts,
    Review,
)
from inference_service.services.code_analysis_languages import detect_language
from inference_service.services.code_analysis_metrics import analyze_metrics
from inference_service.services.code_analysis_prompt import (
    REVIEW_SYSTEM_PROMPT,
    correction_prompt,
    review_prompt,
)
from inference_service.services.code_analysis_python import analyze_python
from switchboard_common import PayloadTooLarge, ProblemError

logger = logging.getLogger(__name__)

DEFAULT_MAX_CODE_BYTES = 200 * 1024
DEFAULT_MAX_PROMPT_CODE_CHARS = 24_000
MAX_FINDINGS = 100
MAX_SUGGESTIONS = 20
MAX_TEXT_CHARS = 2_000

NO_BACKEND_ERROR = "no model backend configured"
INVALID_REVIEW_ERROR = "the model's review was not valid JSON for the schema (after one retry)"


class ReviewBackend(Protocol):
    """A model that answers a prompt with JSON constrained by a schema (Ollama ``format``)."""

    async def complete_json(
        self, model: str, system: str, prompt: str, schema: dict[str, Any]
    ) -> str:
        """The raw text the model produced for ``prompt`` under ``schema``.

        Raise a ``ProblemError`` (``BadGateway``, ``ServiceUnavailable``, ``GatewayTimeout``,
        ``NotFound`` for an unknown model, …) when the model cannot answer.
        """
        ...


@dataclass(frozen=True)
class ReviewOutcome:
    """A validated review, or why there is none."""

    review: Review | None
    error: str | None = None


def analyze_static(code: str, language: Language) -> PythonFacts | MetricsFacts:
    """Static facts: the Python analyser for Python, line metrics for everything else."""
    return analyze_python(code) if language == "python" else analyze_metrics(code, language)


def _detect_and_analyze(
    request: CodeAnalysisRequest,
) -> tuple[Language, PythonFacts | MetricsFacts]:
    language = detect_language(request.code, request.language, request.filename)
    return language, analyze_static(request.code, language)


def _validation_summary(exc: ValidationError) -> str:
    return "\n".join(
        f"- {'.'.join(str(part) for part in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


def _tidy(review: Review, line_count: int) -> Review:
    """Clamp finding lines into ``1..line_count``; cap list lengths and text sizes."""
    last = max(line_count, 1)
    findings = [
        Finding(
            line=min(max(finding.line, 1), last),
            severity=finding.severity,
            message=finding.message.strip()[:MAX_TEXT_CHARS],
        )
        for finding in review.findings[:MAX_FINDINGS]
    ]
    suggestions = [s.strip()[:MAX_TEXT_CHARS] for s in review.suggestions if s.strip()]
    return Review(
        summary=review.summary.strip()[: MAX_TEXT_CHARS * 2],
        findings=sorted(findings, key=lambda f: f.line),
        suggestions=suggestions[:MAX_SUGGESTIONS],
    )


class CodeReviewer:
    """Asks a :class:`ReviewBackend` for a schema-valid :class:`Review`, retrying once."""

    def __init__(
        self, backend: ReviewBackend, *, max_code_chars: int = DEFAULT_MAX_PROMPT_CODE_CHARS
    ) -> None:
        self.backend = backend
        self.max_code_chars = max_code_chars
        self.schema: dict[str, Any] = Review.model_json_schema()

    async def review(
        self,
        code: str,
        static_facts: PythonFacts | MetricsFacts,
        model: str,
        *,
        language: str = "text",
        filename: str | None = None,
    ) -> ReviewOutcome:
        """One call, one corrective retry on invalid output; never raises for bad output."""
        prompt = review_prompt(
            code,
            static_facts,
            language=language,
            filename=filename,
            max_code_chars=self.max_code_chars,
        )
        line_count = static_facts.lines.total
        try:
            answer = await self.backend.complete_json(
                model, REVIEW_SYSTEM_PROMPT, prompt, self.schema
            )
            try:
                return ReviewOutcome(_tidy(Review.model_validate_json(answer), line_count))
            except ValidationError as exc:
                retry = correction_prompt(prompt, answer, _validation_summary(exc))
            answer = await self.backend.complete_json(
                model, REVIEW_SYSTEM_PROMPT, retry, self.schema
            )
        except ProblemError as exc:
            logger.warning("code review: backend failed", extra={"model": model, "error": str(exc)})
            return ReviewOutcome(None, f"the model backend failed: {exc}")
        try:
            return ReviewOutcome(_tidy(Review.model_validate_json(answer), line_count))
        except ValidationError as exc:
            logger.warning(
                "code review: invalid after one retry",
                extra={"model": model, "errors": exc.error_count()},
            )
            return ReviewOutcome(None, INVALID_REVIEW_ERROR)


class CodeAnalysisService:
    """``POST /code/analyze`` behind the HTTP layer."""

    def __init__(
        self,
        backend: ReviewBackend | None,
        *,
        max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
        max_prompt_code_chars: int = DEFAULT_MAX_PROMPT_CODE_CHARS,
    ) -> None:
        self.reviewer = (
            CodeReviewer(backend, max_code_chars=max_prompt_code_chars)
            if backend is not None
            else None
        )
        self.max_code_bytes = max_code_bytes

    async def analyze(self, request: CodeAnalysisRequest) -> CodeAnalysis:
        """Static facts (in a worker thread: parsing is CPU-bound) and, if asked, a review."""
        size = len(request.code.encode("utf-8", errors="surrogatepass"))
        if size > self.max_code_bytes:
            raise PayloadTooLarge(
                f"code is {size} bytes; the limit is {self.max_code_bytes} bytes.",
                limit_bytes=self.max_code_bytes,
            )
        language, static = await anyio.to_thread.run_sync(_detect_and_analyze, request)
        result = CodeAnalysis(language=language, static=static)
        if not request.review:
            return result
        result.model = request.model
        if self.reviewer is None:
            result.review_error = NO_BACKEND_ERROR
            return result
        outcome = await self.reviewer.review(
            request.code, static, request.model, language=language, filename=request.filename
        )
        result.review, result.review_error = outcome.review, outcome.error
        return result


__all__ = [
    "DEFAULT_MAX_CODE_BYTES",
    "INVALID_REVIEW_ERROR",
    "NO_BACKEND_ERROR",
    "CodeAnalysisService",
    "CodeReviewer",
    "ReviewBackend",
    "ReviewOutcome",
    "analyze_static",
]
