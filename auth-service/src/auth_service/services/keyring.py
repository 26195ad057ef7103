"""The signing key ring: which key signs, which keys verify, and rotation.

Keys live in the database (private halves encrypted, see ``core.key_encryption``), so every
replica and every restart agrees on them. There are always two live keys:

- ``current`` signs new access tokens;
- ``next`` is already published in the JWKS but signs nothing yet. Rotation promotes it,
  so a gateway that cached the JWKS before the rotation already knows the new key;
- a ``retired`` key stays in the JWKS for access-token TTL + 60 s after rotation, so every
  token it signed keeps verifying until it expires.

Each replica caches the ring for ``key_cache_s`` seconds; after a rotation on another
replica it may sign with the old key for that long, which the retirement overlap covers.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.jwk import OKPKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.core.key_encryption import KeyEncryptor
from auth_service.core.tokens import ALGORITHM, generate_signing_key, private_key_from_pem
from auth_service.db.stores.signing_keys import CURRENT, NEXT, RETIRED, SigningKeyStore
from auth_service.db.tables import SigningKey
from auth_service.db.types import utcnow


@dataclass(frozen=True)
class RingSnapshot:
    signing_key: OKPKey
    public_jwks: list[dict[str, Any]]
    verification_keys: dict[str, OKPKey]
    loaded_at: float


@dataclass(frozen=True)
class Rotation:
    current_kid: str
    retired_kid: str | None
    next_kid: str


class KeyRing:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        encryptor: KeyEncryptor,
        *,
        retire_overlap_s: int,
        cache_s: float,
    ) -> None:
        self._sessions = sessions
        self._encryptor = encryptor
        self._overlap = timedelta(seconds=retire_overlap_s)
        self._cache_s = cache_s
        self._snapshot: RingSnapshot | None = None
        self._lock = asyncio.Lock()

    async def ensure_keys(self) -> None:
        """At start: make sure a current and a next key exist, then load the ring."""
        async with self._sessions() as session, session.begin():
            store = SigningKeyStore(session)
            now = utcnow()
            if not await store.in_state(CURRENT):
                pending = await store.in_state(NEXT)
                if pending:
                    pending[0].state, pending[0].activated_at = CURRENT, now
                else:
                    store.add(self._new_row(CURRENT, now))
            if not [k for k in await store.in_state(NEXT) if k.state == NEXT]:
                store.add(self._new_row(NEXT, now))
        await self.reload()

    async def rotate(self) -> Rotation:
        """Retire the current key, promote the next one, and create a new next key."""
        async with self._sessions() as session, session.begin():
            store = SigningKeyStore(session)
            now = utcnow()
            currents = await store.in_state(CURRENT)
            for key in currents:
                key.state, key.retired_at = RETIRED, now
            pending = await store.in_state(NEXT)
            if pending:
                promoted = pending[0]
                promoted.state, promoted.activated_at = CURRENT, now
            else:
                promoted = self._new_row(CURRENT, now)
                store.add(promoted)
            fresh = self._new_row(NEXT, now)
            store.add(fresh)
            rotation = Rotation(
                current_kid=promoted.kid,
                retired_kid=currents[0].kid if currents else None,
                next_kid=fresh.kid,
            )
        await self.reload()
        return rotation

    async def snapshot(self) -> RingSnapshot:
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.loaded_at > self._cache_s:
            async with self._lock:
                snap = self._snapshot
                if snap is None or time.monotonic() - snap.loaded_at > self._cache_s:
                    snap = await self.reload()
        return snap

    async def signing_key(self) -> OKPKey:
        return (await self.snapshot()).signing_key

    async def reload(self) -> RingSnapshot:
        async with self._sessions() as session:
            rows = await SigningKeyStore(session).published(utcnow() - self._overlap)
        current = next((r for r in rows if r.state == CURRENT), None)
        if current is None:
            raise RuntimeError("no current signing key; ensure_keys() was not run")
        pem = self._encryptor.decrypt(current.private_key_encrypted, current.kid)
        public = [json.loads(r.public_jwk) for r in rows]
        snap = RingSnapshot(
            signing_key=private_key_from_pem(pem, current.kid),
            public_jwks=public,
            verification_keys={jwk["kid"]: OKPKey.import_key(jwk) for jwk in public},
            loaded_at=time.monotonic(),
        )
        self._snapshot = snap
        return snap

    async def verify_all_decryptable(self) -> None:
        """Refuse to start when stored keys cannot be decrypted (wrong secret)."""
        async with self._sessions() as session:
            rows = await SigningKeyStore(session).published(utcnow() - self._overlap)
        for row in rows:
            self._encryptor.decrypt(row.private_key_encrypted, row.kid)

    async def listing(self) -> list[SigningKey]:
        async with self._sessions() as session:
            return list(await SigningKeyStore(session).all())

    def retired_until(self, retired_at: datetime) -> datetime:
        return retired_at + self._overlap

    def _new_row(self, state: str, now: datetime) -> SigningKey:
        key = generate_signing_key()
        kid = str(key.kid)
        return SigningKey(
            kid=kid,
            alg=ALGORITHM,
            state=state,
            public_jwk=json.dumps(key.as_dict(private=False)),
            private_key_encrypted=self._encryptor.encrypt(key.as_pem(private=True), kid),
            created_at=now,
            activated_at=now if state == CURRENT else None,
            retired_at=None,
        )
