"""Admin routes: users (list, show, disable/enable, role, tier) and signing keys (list,
rotate). Every route requires the ``admin`` scope and a caller whose role is admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from auth_service.db.stores.signing_keys import RETIRED
from auth_service.dependencies import AdminUser, KeyRingDep, UserAdminDep
from auth_service.models.admin import RotationOut, SigningKeyList, SigningKeyOut
from auth_service.models.users import UserList, UserOut, UserUpdate
from switchboard_common import problem_responses

router = APIRouter(prefix="/auth/admin", tags=["admin"])

UserId = Annotated[str, Path(min_length=1, max_length=64)]
ADMIN_ERRORS = problem_responses(401, 403)


@router.get("/users", response_model=UserList, summary="List users", responses=ADMIN_ERRORS)
async def list_users(
    _admin: AdminUser,
    admin: UserAdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> UserList:
    users, total = await admin.page(limit=limit, offset=offset)
    return UserList(
        users=[UserOut.model_validate(u) for u in users], total=total, limit=limit, offset=offset
    )


@router.get(
    "/users/{user_id}",
    response_model=UserOut,
    summary="Show a user",
    responses=problem_responses(401, 403, 404),
)
async def get_user(user_id: UserId, _admin: AdminUser, admin: UserAdminDep) -> UserOut:
    return UserOut.model_validate(await admin.get(user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    summary="Disable/enable a user, set role or tier",
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def update_user(
    user_id: UserId, body: UserUpdate, actor: AdminUser, admin: UserAdminDep
) -> UserOut:
    return UserOut.model_validate(await admin.update(user_id, body, actor_id=actor.id))


@router.get(
    "/signing-keys",
    response_model=SigningKeyList,
    summary="Signing keys and their states",
    responses=ADMIN_ERRORS,
)
async def list_signing_keys(_admin: AdminUser, keyring: KeyRingDep) -> SigningKeyList:
    rows = await keyring.listing()
    return SigningKeyList(
        keys=[
            SigningKeyOut(
                kid=r.kid,
                alg=r.alg,
                state=r.state,
                created_at=r.created_at,
                activated_at=r.activated_at,
                retired_at=r.retired_at,
                published_until=(
                    keyring.retired_until(r.retired_at)
                    if r.state == RETIRED and r.retired_at
                    else None
                ),
            )
            for r in rows
        ]
    )


@router.post(
    "/signing-keys/rotate",
    response_model=RotationOut,
    summary="Rotate the signing key (the old one verifies until its tokens expire)",
    responses=ADMIN_ERRORS,
)
async def rotate_signing_key(_admin: AdminUser, keyring: KeyRingDep) -> RotationOut:
    rotation = await keyring.rotate()
    return RotationOut(
        current_kid=rotation.current_kid,
        retired_kid=rotation.retired_kid,
        next_kid=rotation.next_kid,
    )
