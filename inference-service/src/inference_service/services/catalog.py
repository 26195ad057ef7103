"""Model management across backends: list, show, loaded, pull, delete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from inference_service.services.backends import BackendPool
from inference_service.services.errors import ModelNotFound, OllamaUnavailable
from inference_service.services.model_names import normalize_model

JsonDict = dict[str, Any]


class ModelCatalog:
    """Model operations that span the backend pool."""

    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    async def models(self) -> list[JsonDict]:
        return await self.pool.merged_models()

    async def show(self, model: str) -> JsonDict:
        backend = await self.pool.pick(model)
        async with self.pool.use(backend):
            info = await backend.client.show(model)
        return {"name": normalize_model(model), "backend": backend.name, **info}

    async def loaded(self) -> list[JsonDict]:
        backends = [b for b in self.pool.backends if b.breaker.state != "open"]
        results = await asyncio.gather(*(b.client.ps() for b in backends), return_exceptions=True)
        out: list[JsonDict] = []
        for backend, result in zip(backends, results, strict=True):
            if isinstance(result, BaseException):
                continue
            out += [{**entry, "backend": backend.name} for entry in result]
        return out

    async def pull(self, model: str, backend_name: str | None = None) -> AsyncIterator[JsonDict]:
        """Progress dicts of pulling ``model`` (onto ``BackendPool.pull_target``'s choice)."""
        backend = await self.pool.pull_target(model, backend_name)
        try:
            async with self.pool.use(backend):
                async for progress in backend.client.pull(model):
                    yield {**progress, "backend": backend.name}
        finally:
            self.pool.invalidate()

    async def delete(self, model: str) -> list[str]:
        """Delete ``model`` from every backend that has it; returns those backends."""
        available = await self.pool.available_models()
        holders = [b for b in self.pool.backends if b.has(model)]
        if not holders:
            raise ModelNotFound(model, available)
        deleted: list[str] = []
        for backend in holders:
            try:
                async with self.pool.use(backend):
                    await backend.client.delete(model)
            except (ModelNotFound, OllamaUnavailable):
                continue
            deleted.append(backend.name)
        self.pool.invalidate()
        if not deleted:
            raise ModelNotFound(model, available)
        return deleted
