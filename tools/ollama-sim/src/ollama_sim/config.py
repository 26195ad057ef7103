"""Simulator knobs: one pydantic model, shared by the CLI, the env vars and the admin API.

Every field of :class:`SimConfig` is a knob.  The CLI exposes each one as ``--kebab-case`` flag,
falls back to the environment variable ``OLLAMA_SIM_<UPPER_SNAKE>`` and then to the default
declared here.  ``POST /_sim/config`` accepts any subset of the fields at run time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FailMode = Literal["none", "refuse", "error_500", "error_after_tokens", "hang"]
FAIL_MODES: tuple[str, ...] = ("none", "refuse", "error_500", "error_after_tokens", "hang")

ENV_PREFIX = "OLLAMA_SIM_"


class SimConfig(BaseModel):
    """Run-time behaviour of the simulator (all delays in milliseconds)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    token_delay_ms: float = Field(
        default=0.0, ge=0, description="Delay between consecutive output tokens."
    )
    first_token_delay_ms: float = Field(
        default=0.0, ge=0, description="Time to first token (simulated prompt evaluation)."
    )
    load_delay_ms: float = Field(
        default=0.0, ge=0, description="Extra delay when a model that is not loaded is first used."
    )
    pull_delay_ms: float = Field(
        default=0.0, ge=0, description="Delay between the progress lines of a streamed /api/pull."
    )
    num_parallel: int = Field(
        default=4, ge=1, description="Generations (and embeddings) served concurrently."
    )
    max_queue: int = Field(
        default=512, ge=0, description="Requests allowed to wait for a slot; more get 503."
    )
    default_num_predict: int = Field(
        default=24, ge=0, le=4096, description="Output tokens when options.num_predict is absent."
    )
    fail_mode: FailMode = Field(
        default="none", description="Failure injected into inference requests."
    )
    fail_after_tokens: int = Field(
        default=3, ge=0, description="Tokens streamed before the error_after_tokens failure."
    )
    fail_count: int = Field(
        default=-1, ge=-1, description="How many upcoming inference requests fail (-1 = all)."
    )

    def patched(self, patch: dict[str, object]) -> SimConfig:
        """Return a validated copy with ``patch`` applied (raises ``ValidationError``)."""
        return SimConfig.model_validate({**self.model_dump(), **patch})
