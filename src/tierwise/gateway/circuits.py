"""The circuit breakers' states, as Prometheus sees them (``/metrics``).

Read when scraped, from the engine's :class:`~tierwise.failover.Failover`, so nothing on the
request path updates a gauge: ``tierwise_gateway_circuit_open{upstream}`` is 1 while an
upstream's circuit refuses calls (open, or half-open waiting on its probe), else 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tierwise.failover import BreakerState


class CircuitCollector(Collector):
    """Collects ``states()`` (upstream -> breaker state) at each scrape."""

    def __init__(self, states: Callable[[], dict[str, BreakerState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tierwise_gateway_circuit_open",
            "1 while an upstream's circuit breaker refuses calls (open or half-open)",
            labels=["upstream"],
        )
        for upstream, state in self._states().items():
            gauge.add_metric([upstream], 0.0 if state == "closed" else 1.0)
        yield gauge
