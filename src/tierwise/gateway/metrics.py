"""Prometheus metrics of one gateway app (its own registry: no process-wide globals)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from tierwise.ledger.records import CallRecord

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
NO_MODEL = "-"
"""The ``model`` label of a request that failed before a model was chosen."""


class GatewayMetrics:
    """Requests, errors, tokens, cost and latency by model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "tierwise_gateway_requests", "Requests served", ["api", "model", "status"], registry=reg
        )
        self.errors = Counter(
            "tierwise_gateway_errors",
            "Requests that ended in an error",
            ["api", "status"],
            registry=reg,
        )
        self.tokens = Counter(
            "tierwise_gateway_tokens", "Tokens billed by axis", ["model", "kind"], registry=reg
        )
        self.cost = Counter(
            "tierwise_gateway_cost_usd", "Exact cost of known-cost calls", ["model"], registry=reg
        )
        self.unknown_cost = Counter(
            "tierwise_gateway_unknown_cost_calls", "Calls of unknown cost", ["model"], registry=reg
        )
        self.duration = Histogram(
            "tierwise_gateway_request_duration_seconds",
            "Request time, to the last byte",
            ["api", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.upstream = Histogram(
            "tierwise_gateway_upstream_latency_seconds",
            "Upstream call time",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.overhead = Histogram(
            "tierwise_gateway_overhead_seconds",
            "The gateway's own time in a request",
            ["api"],
            buckets=_OVERHEAD_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge("tierwise_gateway_in_flight", "Requests in flight", registry=reg)
        self.ledger_pending = Gauge(
            "tierwise_gateway_ledger_pending_records",
            "Ledger records queued and not yet written (write-behind)",
            registry=reg,
        )

    def call(self, call: CallRecord) -> None:
        """Count one recorded upstream call: tokens on every axis, cost, latency."""
        model = call.model
        for kind, count in (
            ("input", call.input_tokens),
            ("output", call.output_tokens),
            ("cache_write", call.cache_write_5m_tokens + call.cache_write_1h_tokens),
            ("cache_read", call.cache_read_tokens),
        ):
            if count:
                self.tokens.labels(model, kind).inc(count)
        if call.cost_usd is None:
            self.unknown_cost.labels(model).inc()
        else:
            self.cost.labels(model).inc(float(call.cost_usd))
        if call.latency_ms is not None:
            self.upstream.labels(model).observe(call.latency_ms / 1000)

    def finished(self, api: str, model: str | None, status: int, seconds: float) -> None:
        """Count one finished request."""
        label = model or NO_MODEL
        self.requests.labels(api, label, str(status)).inc()
        if status >= 400:
            self.errors.labels(api, str(status)).inc()
        self.duration.labels(api, label).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
