"""One request's view of its task: the records it produced, its timings and its headers.

:meth:`Trace.observe` is handed to ``Engine.complete`` / ``Engine.stream`` as the observer,
so the gateway learns the task id, the decision and every call as they are recorded — in
time to put them in the response headers, also for a stream.
"""

from __future__ import annotations

import time
from decimal import Decimal
from urllib.parse import quote

from tierwise.budgets.gate import Hold
from tierwise.gateway.metrics import GatewayMetrics
from tierwise.ledger.records import CallRecord, DecisionRecord, LedgerRecord, TaskRecord

_HEADER_SAFE = " :;,=/()[]'+-._~"


class Trace:
    """Collects a task's records and reports the request to the metrics exactly once."""

    def __init__(self, api: str, metrics: GatewayMetrics) -> None:
        self.api = api
        self.started = time.perf_counter()
        self.task_id: str | None = None
        self.policy: str | None = None
        self.decisions: list[DecisionRecord] = []
        self.calls: list[CallRecord] = []
        self.model: str | None = None
        """The catalog id of the model that answered, once known."""
        self._routed_at: float | None = None
        self._metrics = metrics
        self._finished = False
        self.hold: Hold | None = None
        """The request's budget hold, settled to its calls when the request finishes."""
        metrics.in_flight.inc()

    def observe(self, record: LedgerRecord) -> None:
        if isinstance(record, TaskRecord):
            self.task_id, self.policy = record.id, record.policy
        elif isinstance(record, DecisionRecord):
            self.decisions.append(record)
            self._routed_at = self._routed_at or time.perf_counter()
        elif isinstance(record, CallRecord):
            self.calls.append(record)
            self._metrics.call(record)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def overhead_ms(self) -> float:
        """The gateway's own time so far: all of it but the upstream calls."""
        upstream = sum(c.latency_ms or 0.0 for c in self.calls)
        return max(0.0, self.elapsed_ms() - upstream)

    def routing_ms(self) -> float:
        """For a stream: the time until the first upstream call started (auth, parsing,
        routing, recording the decision)."""
        end = self._routed_at or time.perf_counter()
        return (end - self.started) * 1000

    def headers(self, overhead_ms: float, cost: Decimal | None = None) -> dict[str, str]:
        """``x-tierwise-*`` headers: decision, model, task, overhead and (when known) cost."""
        headers = {"x-tierwise-overhead-ms": f"{overhead_ms:.3f}"}
        if self.policy:
            headers["x-tierwise-policy"] = _header(self.policy)
        if self.decisions:
            last = self.decisions[-1]
            decision = f"{last.router}; model={last.chosen_model}; reason={last.reason}"
            headers["x-tierwise-decision"] = _header(decision)
        if self.model:
            headers["x-tierwise-model"] = self.model
        if self.task_id:
            headers["x-tierwise-task-id"] = self.task_id
        if cost is not None:
            headers["x-tierwise-cost-usd"] = str(cost)
        return headers

    def finish(self, status: int) -> None:
        """Report the request (idempotent: a stream may end on several paths)."""
        if self._finished:
            return
        self._finished = True
        if self.hold is not None:
            self.hold.settle_soon(self.calls)
        self._metrics.in_flight.dec()
        self._metrics.finished(self.api, self.model, status, self.elapsed_ms() / 1000)
        self._metrics.overhead.labels(self.api).observe(self.overhead_ms() / 1000)


def _header(text: str) -> str:
    """``text`` as a header value: printable ASCII, anything else percent-encoded."""
    return quote(text, safe=_HEADER_SAFE)
