"""``POST /code/analyze``: static facts about source code plus an optional model review.

Wiring: ``main.py`` sets ``app.state.review_backend`` to any object with
``async complete_json(model, system, prompt, schema) -> str``
(:class:`~inference_service.services.code_analysis.ReviewBackend`); without one, reviews
come back null with ``review_error: "no model backend configured"``. A
:class:`~inference_service.services.json_completion.JsonCompleter` is bound to the caller
first: the review is queued at the caller's priority and its tokens go to the caller's
usage ledger. The app's settings are the inference service's ``Settings``: the size limit
is their ``code_max_bytes`` (``INFERENCE_CODE_MAX_BYTES``, 200 KB by default) and the
caller's priority cap comes from their tiers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from inference_service.config import Settings
from inference_service.dependencies import HeaderPriority
from inference_service.models.code import CodeAnalysis, CodeAnalysisRequest
from inference_service.services.code_analysis import (
    CodeAnalysisService,
    ReviewBackend,
)
from inference_service.services.json_completion import JsonCompleter
from switchboard_common import problem_responses
from switchboard_common.identity import Principal, require_scopes

router = APIRouter(prefix="/code", tags=["code"])


InferenceCaller = Annotated[Principal, require_scopes("inference")]


async def get_review_backend(
    request: Request, caller: InferenceCaller, priority: HeaderPriority
) -> ReviewBackend | None:
    """``app.state.review_backend`` (bound to the caller when it is the service's own
    completer), or None when the app has no model backend."""
    backend: ReviewBackend | None = getattr(request.app.state, "review_backend", None)
    if isinstance(backend, JsonCompleter):
        return backend.for_caller(caller.sub, priority.resolve(None))
    return backend


ReviewBackendDep = Annotated[ReviewBackend | None, Depends(get_review_backend)]


async def get_code_analysis_service(
    request: Request, backend: ReviewBackendDep
) -> CodeAnalysisService:
    """The service, with the size limit from the inference settings (``code_max_bytes``)."""
    settings: Settings = request.app.state.settings
    return CodeAnalysisService(backend, max_code_bytes=settings.code_max_bytes)


CodeAnalysisServiceDep = Annotated[CodeAnalysisService, Depends(get_code_analysis_service)]


@router.post(
    "/analyze",
    response_model=CodeAnalysis,
    summary="Static facts about code, and a model's review (needs the 'inference' scope)",
    description="Python gets an AST analysis (functions, classes, imports, complexity, "
    "syntax errors); other languages get line metrics and an estimated function count. "
    "With `review: true` a model reviews the code; a failed review is reported in "
    "`review_error`, never as an error status. See docs/code-analysis.md.",
    responses=problem_responses(401, 403, 413, 422),
)
async def analyze_code(
    body: CodeAnalysisRequest,
    principal: InferenceCaller,
    service: CodeAnalysisServiceDep,
) -> CodeAnalysis:
    return await service.analyze(body)
