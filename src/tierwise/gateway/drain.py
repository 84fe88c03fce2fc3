"""Graceful drain: on SIGTERM stop taking work, let in-flight requests finish, then close.

1. The first SIGTERM (or Ctrl-C) starts the drain: ``/readyz`` answers 503 (a load balancer
   takes the instance out) and every new ``/v1/...`` request gets a 503 with ``retry-after``
   in its API's envelope, while requests already running — streams included — go on.
2. When none is left, or ``[gateway] drain_s`` has passed, uvicorn's own shutdown runs
   (listeners closed, connections closed, lifespan shutdown: the ledger is flushed and
   closed). A second signal skips the wait.

:class:`DrainMiddleware` does the counting and refusing; :class:`DrainingServer` is the
uvicorn server ``tierwise serve`` runs, whose signal handler starts the drain.
"""

from __future__ import annotations

import math
import signal
import time
from types import FrameType

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tierwise.errors import GatewayBusyError
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.routes import error_response

MODEL_PATHS = "/v1/"
DRAIN_RETRY_AFTER_S = 1


class Drain:
    """The drain state one app shares: a flag and the number of model requests in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    def begin(self) -> None:
        self.draining = True

    @property
    def idle(self) -> bool:
        return self.in_flight == 0


class DrainMiddleware:
    """Counts ``/v1/`` requests until their last byte; refuses new ones while draining."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self.drain.draining and path == "/readyz":
            await JSONResponse({"status": "draining"}, status_code=503)(scope, receive, send)
            return
        if not path.startswith(MODEL_PATHS):
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_for_path(scope["path"], Headers(scope=scope))
        busy = GatewayBusyError(
            "the gateway is shutting down; retry (another instance will answer)",
            retry_after_s=DRAIN_RETRY_AFTER_S,
        )
        await error_response(dialect, busy)(scope, receive, send)


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM/SIGINT drains before it shuts down."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self._deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._deadline is None and sig in (signal.SIGTERM, signal.SIGINT):
            self._captured_signals.append(sig)
            self._deadline = time.monotonic() + self.drain_s
            self.drain.begin()
            return
        super().handle_exit(sig, frame)  # a second signal: shut down now

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            left = self._deadline - time.monotonic()
            self.should_exit = self.drain.idle or left <= 0
            # uvicorn's own wait for what is still running may use only what is left of it
            self.config.timeout_graceful_shutdown = max(1, math.ceil(left))
        return await super().on_tick(counter)
