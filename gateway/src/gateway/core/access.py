"""Who may call what: the gateway's access policy, decided from the path alone.

- public: the routes a client uses before it has a token (register, token, refresh, the
  JWKS) and the gateway's own operational routes (which never reach the proxy);
- blocked: ``/auth/internal/*`` is service-to-service only and answers 404 from outside;
- everything else needs a valid credential; each service's routes need its scope.

Paths are judged after normalising them the way a server behind us might: repeated slashes
collapse (``/auth//internal`` is ``/auth/internal``), and a path with ``.`` or ``..``
segments is refused outright, so no spelling of a blocked path slips through.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from switchboard_common.routes import PUBLIC_PATHS

BLOCKED_PREFIXES = ("/auth/internal/", "/auth/internal")
SERVICE_SCOPES: dict[str, str | None] = {
    "auth": None,  # any authenticated caller; the auth service checks roles itself
    "inference": "inference",
    "knowledge": "knowledge",
    "memory": "memory",
}


_SLASHES = re.compile(r"/{2,}")


def normalize(path: str) -> str | None:
    """``path`` with repeated slashes collapsed; None when it has dot segments."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        segments = path.split("/")
        if "." in segments or ".." in segments:
            return None
    return path


@dataclass(frozen=True, slots=True)
class Rule:
    public: bool
    blocked: bool
    scope: str | None


class AccessPolicy:
    def __init__(self, extra_public: tuple[str, ...] = ()) -> None:
        self.public = PUBLIC_PATHS | frozenset(p.rstrip("/") for p in extra_public if p)
        self._public_prefixes = tuple(p for p in self.public if p.endswith("*"))
        self._cache: dict[tuple[str, str], Rule] = {}

    def rule(self, service: str, path: str) -> Rule:
        key = (service, path)
        found = self._cache.get(key)
        if found is None:
            found = self._decide(service, path)
            if len(self._cache) < 4096:  # paths carry ids: keep the memo bounded
                self._cache[key] = found
        return found

    def _decide(self, service: str, raw_path: str) -> Rule:
        path = normalize(raw_path)
        if path is None or path.startswith(BLOCKED_PREFIXES):
            return Rule(public=False, blocked=True, scope=None)
        normalised = path.rstrip("/") or "/"
        public = normalised in self.public or any(
            normalised.startswith(p[:-1]) for p in self._public_prefixes
        )
        return Rule(public=public, blocked=False, scope=SERVICE_SCOPES.get(service))
