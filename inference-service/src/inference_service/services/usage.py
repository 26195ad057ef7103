"""Token accounting: a per-user daily ledger in Redis, Prometheus counters, span attributes.

Redis layout (keys owned by this service, prefix ``inference:``)::

    inference:usage:{user}:{YYYY-MM-DD}   hash  "{model}|prompt" / "{model}|completion" /
                                                "{model}|requests" → integers (UTC days)

Each hash expires after ``usage_retention_days``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter
from redis.asyncio import Redis

from inference_service.services.token_settlement import charge_reserved_usage

KEY_PREFIX = "inference:usage:"

TOKENS = Counter(
    "switchboard_inference_tokens_total",
    "Tokens processed by the model backends, by model and kind (prompt/completion).",
    ("model", "kind"),
)
REQUESTS = Counter(
    "switchboard_inference_completions_total",
    "Completed generations, by model.",
    ("model",),
)


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def usage_key(user: str, day: dt.date) -> str:
    return f"{KEY_PREFIX}{user}:{day.isoformat()}"


class UsageLedger:
    """Records and reads a user's token usage."""

    def __init__(self, redis: Redis, retention_days: int = 90) -> None:
        self.redis = redis
        self.retention_s = retention_days * 86400

    async def record(self, user: str, model: str, prompt: int, completion: int) -> None:
        """Add one completion's counts (also to metrics, the current span, and the gateway's
        token budget when the request carries a reservation)."""
        charge_reserved_usage(prompt, completion)
        TOKENS.labels(model, "prompt").inc(prompt)
        TOKENS.labels(model, "completion").inc(completion)
        REQUESTS.labels(model).inc()
        span = trace.get_current_span()
        span.set_attribute("gen_ai.request.model", model)
        span.set_attribute("gen_ai.usage.input_tokens", prompt)
        span.set_attribute("gen_ai.usage.output_tokens", completion)
        key = usage_key(user, today())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, f"{model}|prompt", prompt)
            pipe.hincrby(key, f"{model}|completion", completion)
            pipe.hincrby(key, f"{model}|requests", 1)
            pipe.expire(key, self.retention_s)
            await pipe.execute()

    async def report(self, user: str, days: int) -> dict[str, Any]:
        """``{days: [{date, models: {model: {prompt_tokens, …}}}], totals: {model: …}}``."""
        dates = [today() - dt.timedelta(days=i) for i in range(days)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in dates:
                pipe.hgetall(usage_key(user, day))
            rows = await pipe.execute()
        out_days: list[dict[str, Any]] = []
        totals: dict[str, dict[str, int]] = {}
        for day, row in zip(dates, rows, strict=True):
            if not row:
                continue
            models: dict[str, dict[str, int]] = {}
            for raw_field, raw_value in row.items():
                name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
                model, _, kind = name.rpartition("|")
                field = {"prompt": "prompt_tokens", "completion": "completion_tokens"}.get(
                    kind, kind
                )
                value = int(raw_value)
                models.setdefault(model, {}).setdefault(field, 0)
                models[model][field] += value
                totals.setdefault(model, {}).setdefault(field, 0)
                totals[model][field] += value
            out_days.append({"date": day.isoformat(), "models": models})
        return {"user": user, "days": out_days, "totals": totals}
