"""The caller's sessions: list them, revoke one (revocation reaches the gateways in < 1 s)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from auth_service.dependencies import CurrentSession, SessionsDep
from auth_service.models.sessions import SessionList, SessionOut
from switchboard_common import problem_responses

router = APIRouter(prefix="/auth/sessions", tags=["sessions"])

SessionId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get(
    "",
    response_model=SessionList,
    summary="My active sessions",
    responses=problem_responses(401, 403),
)
async def list_sessions(current: CurrentSession, sessions: SessionsDep) -> SessionList:
    rows = await sessions.list_active(current.user.id)
    return SessionList(
        sessions=[
            SessionOut.model_validate(row).model_copy(
                update={"current": row.id == current.session.id}
            )
            for row in rows
        ]
    )


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke one of my sessions",
    responses=problem_responses(401, 403, 404, 503),
)
async def revoke_session(
    session_id: SessionId, current: CurrentSession, sessions: SessionsDep
) -> Response:
    await sessions.revoke(current.user.id, session_id, "revoked_by_user")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
