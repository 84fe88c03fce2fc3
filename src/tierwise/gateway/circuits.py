"""Circuit breakers and failover steps, as Prometheus sees them (``/metrics``).

Read when scraped, from the engine's :class:`~tierwise.failover.Failover`, so nothing on the
request path updates a metric: ``tierwise_gateway_circuit_open{upstream}`` is 1 while an
upstream's circuit refuses calls (open, or half-open waiting on its probe), else 0;
``tierwise_gateway_failovers_total{from_model,to_model}`` counts the moves to a fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tierwise.failover import BreakerState, Failover


class CircuitCollector(Collector):
    """Collects the breakers and failover counts of ``failover()`` (if running) at a scrape."""

    def __init__(self, failover: Callable[[], Failover | None]) -> None:
        self._failover = failover

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tierwise_gateway_circuit_open",
            "1 while an upstream's circuit breaker refuses calls (open or half-open)",
            labels=["upstream"],
        )
        moves = CounterMetricFamily(
            "tierwise_gateway_failovers",
            "Calls moved to a fallback model before their first byte",
            labels=["from_model", "to_model"],
        )
        failover = self._failover()
        states: dict[str, BreakerState] = failover.states() if failover else {}
        for upstream, state in states.items():
            gauge.add_metric([upstream], 0.0 if state == "closed" else 1.0)
        for (from_model, to_model), count in sorted(failover.moves.items() if failover else []):
            moves.add_metric([from_model, to_model], count)
        yield gauge
        yield moves
