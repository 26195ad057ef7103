"""``GET /auth/.well-known/jwks.json``: the public keys that verify access tokens.

Lists the current key, the next key (published ahead of rotation) and retired keys until
their last token has expired. Cacheable for 5 minutes (``public, max-age=300``).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from auth_service.dependencies import KeyRingDep
from auth_service.models.tokens import Jwk, Jwks

router = APIRouter(prefix="/auth/.well-known", tags=["jwks"])

JWKS_CACHE_CONTROL = "public, max-age=300"


@router.get("/jwks.json", response_model=Jwks, summary="JSON Web Key Set")
async def jwks(keyring: KeyRingDep, response: Response) -> Jwks:
    response.headers["Cache-Control"] = JWKS_CACHE_CONTROL
    snapshot = await keyring.snapshot()
    return Jwks(keys=[Jwk.model_validate(key) for key in snapshot.public_jwks])
