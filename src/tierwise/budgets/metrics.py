"""Budgets as Prometheus sees them, read from the gate when ``/metrics`` is scraped.

``tierwise_gateway_budget_refusals_total{reason}`` counts refused requests by reason
(``budget_exhausted``, ``held_in_flight``, ``rate_limit``, ``store_down``), and
``tierwise_gateway_budget_pending_spends`` the spends admitted fail-open (or settled while
the store was down) that still wait to be written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tierwise.budgets.gate import BudgetGate


class BudgetCollector(Collector):
    """Collects ``gate()``'s counters (nothing while the gateway is not running)."""

    def __init__(self, gate: Callable[[], BudgetGate | None]) -> None:
        self._gate = gate

    def collect(self) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "tierwise_gateway_budget_refusals",
            "Requests refused by a key's budget or rate limit, or a budget store that is down",
            labels=["reason"],
        )
        pending = GaugeMetricFamily(
            "tierwise_gateway_budget_pending_spends",
            "Spends waiting for the budget store to come back",
        )
        gate = self._gate()
        for reason, count in sorted(gate.refusals.items() if gate else []):
            refusals.add_metric([reason], float(count))
        pending.add_metric([], float(gate.pending if gate else 0))
        yield refusals
        yield pending
