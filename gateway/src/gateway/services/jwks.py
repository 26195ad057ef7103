"""The auth service's signing keys, cached: tokens are verified locally, never by a call.

The key set is fetched at start (best effort), refreshed in the background, and refetched
when a token names a ``kid`` the cache does not know — at most once per
``jwks_min_refetch_s``, so a flood of forged kids cannot turn into a flood of fetches. When
the auth service is down, the last good key set keeps verifying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from gateway.services.upstreams import UpstreamPool

logger = logging.getLogger("switchboard.gateway.jwks")

ALLOWED_KEY_TYPES = frozenset({"OKP"})  # Ed25519 keys only: matches the algorithm allow-list


class JwksCache:
    def __init__(self, pool: UpstreamPool, *, refresh_s: float, min_refetch_s: float) -> None:
        self.pool = pool
        self.refresh_s = refresh_s
        self.min_refetch_s = min_refetch_s
        self.keys: dict[str, OKPKey] = {}
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.pool.base_url("auth") + "/auth/.well-known/jwks.json"

    async def start(self) -> None:
        await self.fetch()
        self._task = asyncio.create_task(self._refresh_forever(), name="jwks-refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def key_for(self, kid: str) -> dict[str, OKPKey] | None:
        """The keys by kid if ``kid`` is among them (refetching once if allowed), else None."""
        if kid in self.keys:
            return self.keys
        if self._lock.locked():  # a fetch is in flight: its answer may know the kid
            async with self._lock:
                pass
        elif time.monotonic() - self._last_fetch >= self.min_refetch_s:
            await self.fetch()
        return self.keys if kid in self.keys else None

    async def fetch(self) -> bool:
        async with self._lock:
            self._last_fetch = time.monotonic()
            try:
                async with self.pool.session.get(
                    self.url, timeout=aiohttp.ClientTimeout(total=3)
                ) as resp:
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                    document = await resp.json(content_type=None)
                if not isinstance(document, dict):
                    raise ValueError("the JWKS is not a JSON object")
                keys = [
                    k
                    for k in document.get("keys", [])
                    if isinstance(k, dict) and k.get("kty") in ALLOWED_KEY_TYPES and k.get("kid")
                ]
                by_kid = {str(k["kid"]): OKPKey.import_key(k) for k in keys}
            except (aiohttp.ClientError, TimeoutError, ValueError, JoseError) as exc:
                logger.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self.keys), exc)
                return False
            self.keys = by_kid
            return True

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.fetch()
            except Exception:  # never let one bad answer end the refreshing for good
                logger.exception("JWKS refresh failed")
