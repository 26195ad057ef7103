"""Prometheus metrics of the admission queue (process-wide, bounded labels).

Labels are ``backend`` (from configuration), ``priority`` (0..9) and ``reason``
(full, timeout, unavailable) — never the model name a client sent.

- ``switchboard_inference_queue_waiting{backend}``          gauge: this process's waiters
- ``switchboard_inference_queue_holding{backend}``          gauge: this process's slots
- ``switchboard_inference_queue_admitted_total{backend,priority}``
- ``switchboard_inference_queue_rejected_total{backend,reason}``
- ``switchboard_inference_queue_wait_seconds{backend}``     histogram: time to a slot
- ``switchboard_inference_queue_lease_lost_total{backend}`` leases found expired on renewal
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

WAIT_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class QueueMetrics:
    """The queue's metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.waiting = Gauge(
            "switchboard_inference_queue_waiting",
            "Requests of this process waiting for an inference slot.",
            ("backend",),
            registry=registry,
        )
        self.holding = Gauge(
            "switchboard_inference_queue_holding",
            "Inference slots held by this process.",
            ("backend",),
            registry=registry,
        )
        self.admitted = Counter(
            "switchboard_inference_queue_admitted_total",
            "Requests admitted to an inference slot.",
            ("backend", "priority"),
            registry=registry,
        )
        self.rejected = Counter(
            "switchboard_inference_queue_rejected_total",
            "Requests refused by the admission queue (full, timeout, unavailable).",
            ("backend", "reason"),
            registry=registry,
        )
        self.wait_seconds = Histogram(
            "switchboard_inference_queue_wait_seconds",
            "Time from arrival to admission.",
            ("backend",),
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.lease_lost = Counter(
            "switchboard_inference_queue_lease_lost_total",
            "Slot leases found expired when renewing (Redis unreachable for a lease time).",
            ("backend",),
            registry=registry,
        )


_default: QueueMetrics | None = None


def queue_metrics() -> QueueMetrics:
    """The process-wide queue metrics (created on first use)."""
    global _default
    if _default is None:
        _default = QueueMetrics()
    return _default
