"""Admission control: refuse the excess at once instead of queueing it into timeouts.

A pure ASGI middleware in front of the model endpoints. A request is admitted while fewer
than ``[gateway] max_in_flight`` model requests are in flight in this process (a stream counts
until its last byte), the event loop is not running more than ``max_loop_lag_ms`` late, and
the ledger's write-behind queue is not backlogged; otherwise it gets a 503 in its API's own
error envelope with ``retry-after``, before its body is even read.

The loop lag is what catches a saturated CPU: requests then wait in socket buffers before
the app sees them, so the in-flight count stays low while latency grows without bound.
Answering the excess with a cheap 503 lets the process catch up. The lag is measured by a
timer callback that re-arms itself every :data:`LAG_PROBE_S` (a callback, not a task: no
cleanup needed when the loop closes).
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tierwise.errors import GatewayBusyError
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.routes import error_response
from tierwise.gateway.service import Gateway

MODEL_PATHS = frozenset({"/v1/messages", "/v1/chat/completions"})
LAG_PROBE_S = 0.05
LAG_SMOOTHING = 0.25
"""Weight of the newest probe in :attr:`LoopLag.smoothed`: a lone stall (a GC pause, another
process) moves it little; a saturated CPU, probe after probe, moves it all the way."""
LAG_SAMPLE_CAP_S = 0.3
"""A probe counts at most this late in the average, so one long stall (the first request
loading an SDK, a slow import) cannot push it past the limit on its own."""


class LoopLag:
    """How late the running event loop wakes a timer (seconds), measured continuously."""

    def __init__(self) -> None:
        self.seconds = 0.0
        """The latest probe's lateness."""
        self.smoothed = 0.0
        """An exponential average over the probes (what admission looks at)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self) -> None:
        """Start measuring on the running loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            loop.call_later(LAG_PROBE_S, self._tick, loop, loop.time() + LAG_PROBE_S)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        self.seconds = max(0.0, now - due)
        sample = min(self.seconds, LAG_SAMPLE_CAP_S)
        self.smoothed += LAG_SMOOTHING * (sample - self.smoothed)
        if self._loop is loop and not loop.is_closed():
            loop.call_later(LAG_PROBE_S, self._tick, loop, now + LAG_PROBE_S)


class AdmissionControl:
    """Counts model requests in flight and refuses those past the limit with a 503."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.in_flight = 0
        self.lag = LoopLag()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in MODEL_PATHS:
            await self.app(scope, receive, send)
            return
        self.lag.watch()
        refusal = self.refusal()
        if refusal is not None:
            await self._refuse(refusal, scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def refusal(self) -> GatewayBusyError | None:
        """Why a new model request cannot be admitted now, if it cannot."""
        config = self.gateway.config
        wait = config.busy_retry_after_s
        if self.in_flight >= config.max_in_flight:
            message = f"the gateway is at its limit of {config.max_in_flight} requests in flight"
            return GatewayBusyError(f"{message}; retry after {wait} s", wait)
        lag_ms = self.lag.smoothed * 1000
        if config.max_loop_lag_ms and lag_ms > config.max_loop_lag_ms:
            message = f"the gateway is saturated (its event loop runs {lag_ms:.0f} ms late)"
            return GatewayBusyError(f"{message}; retry after {wait} s", wait)
        try:
            behind = self.gateway.running.ledger.write_behind
        except RuntimeError:  # not started, or stopping: the routes answer for that
            return None
        if behind is not None and behind.backlogged:
            reason = behind.last_error or "the database is too slow"
            message = f"the ledger has {behind.pending} records waiting to be written ({reason})"
            return GatewayBusyError(f"{message}; retry after {wait} s", wait)
        return None

    async def _refuse(
        self, refusal: GatewayBusyError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        dialect = dialect_for_path(scope["path"], Headers(scope=scope))
        response = error_response(dialect, refusal)
        self.gateway.metrics.finished(dialect.api, None, response.status_code, 0.0)
        await response(scope, receive, send)
