"""Prometheus counters and latency histograms of the gateway, per model, version and team."""

from __future__ import annotations

from typing import Any


class Metrics:
    """The gateway's own registry (not the process-global one): one gateway, one view."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        labels = ("model", "version", "team")
        self.requests = Counter("mlflow_share_gateway_requests", "Invocations by outcome.",
                                labels + ("status",), registry=self.registry)
        self.latency = Histogram(
            "mlflow_share_gateway_latency_seconds", "Invocation latency, end to end.", labels,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry)

    def observe(self, model: str, version: str, team: str, status: int, seconds: float) -> None:
        self.requests.labels(model, version, team, str(status)).inc()
        if status == 200:
            self.latency.labels(model, version, team).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body: Any = generate_latest(self.registry)
        return body, CONTENT_TYPE_LATEST
