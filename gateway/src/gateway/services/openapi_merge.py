"""One OpenAPI document for the whole platform, as clients see it through the gateway.

Each service publishes its own ``/openapi.json``; the gateway merges them with its own:

- paths: a service contributes only the paths under its public prefixes (its ``/health``
  and ``/ready`` are reachable as ``/health/{service}`` and ``/ready/{service}``);
- component schemas: identical ones are shared (``Problem`` appears once); two different
  schemas with one name are kept apart as ``<service>_<Name>``, with that service's
  ``$ref``s rewritten;
- security: the OAuth2 password flow at ``/auth/token`` (what Swagger UI's "Authorize"
  button uses) plus API keys in ``X-API-Key``.

``OpenApiAggregator`` fetches the services' documents with a short TTL, so a redeployed
service's new routes show up within ``GATEWAY_OPENAPI_TTL_S``; a service that does not
answer keeps its last good document (or is listed in ``x-switchboard-unavailable``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from gateway.core.route_table import RouteTable
from gateway.services.upstreams import UpstreamPool

logger = logging.getLogger("switchboard.gateway.openapi")

Spec = dict[str, Any]
REF_PREFIX = "#/components/schemas/"
SECURITY_SCHEMES: Spec = {
    "OAuth2PasswordBearer": {
        "type": "oauth2",
        "description": "Log in with username and password; the token goes in "
        "`Authorization: Bearer …`.",
        "flows": {"password": {"tokenUrl": "/auth/token", "scopes": {}}},
    },
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            name = ref[len(REF_PREFIX) :]
            if name in renames:
                node = {**node, "$ref": REF_PREFIX + renames[name]}
        return {k: _rewrite_refs(v, renames) for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def merge_specs(gateway: Spec, services: dict[str, Spec], table: RouteTable) -> Spec:
    merged: Spec = copy.deepcopy(gateway)
    merged["info"] = {
        **merged.get("info", {}),
        "title": "Switchboard API",
        "description": "Every service behind one URL. Log in with **Authorize** (OAuth2 "
        "password flow at `/auth/token`) or send an API key in `X-API-Key`.",
    }
    paths: Spec = merged.setdefault("paths", {})
    schemas: Spec = merged.setdefault("components", {}).setdefault("schemas", {})
    tags = {t["name"]: t for t in merged.get("tags", [])}
    scopes: dict[str, str] = {}
    for service, spec in sorted(services.items()):
        own = spec.get("components", {}).get("schemas", {})
        renames = {
            name: f"{service}_{name}"
            for name, schema in own.items()
            if name in schemas and schemas[name] != schema
        }
        for name, schema in own.items():
            schemas[renames.get(name, name)] = _rewrite_refs(schema, renames)
        for path, item in spec.get("paths", {}).items():
            if table.resolve(path) == service:
                paths[path] = _rewrite_refs(item, renames)
        for tag in spec.get("tags", []):
            tags.setdefault(tag["name"], tag)
        flows = spec.get("components", {}).get("securitySchemes", {})
        for scheme in flows.values():
            scopes.update(scheme.get("flows", {}).get("password", {}).get("scopes", {}))
    security = copy.deepcopy(SECURITY_SCHEMES)
    security["OAuth2PasswordBearer"]["flows"]["password"]["scopes"] = scopes
    merged["components"]["securitySchemes"] = security
    if tags:
        merged["tags"] = list(tags.values())
    return merged


class OpenApiAggregator:
    def __init__(
        self, pool: UpstreamPool, own: Callable[[], Spec], *, ttl_s: float, timeout_s: float
    ) -> None:
        self.pool = pool
        self.own = own
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.table = RouteTable()
        self._specs: dict[str, Spec] = {}
        self._fetched_at = float("-inf")
        self._merged: Spec | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> Spec:
        if self._merged is not None and time.monotonic() - self._fetched_at < self.ttl_s:
            return self._merged
        async with self._lock:
            if self._merged is None or time.monotonic() - self._fetched_at >= self.ttl_s:
                await self._refresh()
        assert self._merged is not None
        return self._merged

    async def _refresh(self) -> None:
        services = list(self.pool.base_urls)
        answers = await asyncio.gather(*(self._fetch(s) for s in services))
        missing = []
        for service, spec in zip(services, answers, strict=True):
            if spec is not None:
                self._specs[service] = spec
            elif service not in self._specs:
                missing.append(service)
        merged = merge_specs(self.own(), self._specs, self.table)
        if missing:
            merged["x-switchboard-unavailable"] = missing
        self._merged = merged
        self._fetched_at = time.monotonic()

    async def _fetch(self, service: str) -> Spec | None:
        url = self.pool.base_url(service) + "/openapi.json"
        try:
            async with self.pool.session.get(
                url, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                if resp.status != 200:
                    return None
                spec: Spec = json.loads(await resp.read())
                return spec
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.warning("OpenAPI of %s unavailable: %s", service, type(exc).__name__)
            return None
