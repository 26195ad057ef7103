"""Shared mutable state of one simulator instance (config, catalogue, residency, queue, stats)."""

from __future__ import annotations

import asyncio
import time

from .config import SimConfig
from .models import Catalogue, ModelSpec
from .queue import AdmissionQueue
from .residency import Residency
from .stats import Stats


class SimState:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.initial_config = (config or SimConfig()).model_copy()
        self.config = self.initial_config.model_copy()
        self.catalogue = Catalogue()
        self.residency = Residency()
        self.stats = Stats()
        self.queue = AdmissionQueue(lambda: self.config)

    def set_config(self, config: SimConfig) -> None:
        self.config = config
        self.queue.wake()

    def reset(self) -> None:
        """Back to start: initial config, default catalogue, nothing loaded, counters cleared."""
        self.set_config(self.initial_config.model_copy())
        self.catalogue = Catalogue()
        self.residency.clear()
        self.stats.clear()
        self.queue.reset_peak()

    def snapshot(self) -> dict[str, object]:
        return self.stats.snapshot(self.queue.active, self.queue.queued, self.queue.max_active_seen)

    async def ensure_loaded(self, spec: ModelSpec, keep_alive_s: float) -> float:
        """Load ``spec`` if needed (sleeping ``load_delay_ms``); returns the load time in s."""
        start = time.perf_counter()
        if not self.residency.is_loaded(spec.name) and self.config.load_delay_ms > 0:
            await asyncio.sleep(self.config.load_delay_ms / 1000)
        # Visible in /api/ps while in use, even when keep_alive is 0.
        self.residency.touch(spec, keep_alive_s if keep_alive_s > 0 else 300.0)
        return time.perf_counter() - start
