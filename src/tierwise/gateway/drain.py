"""Graceful drain: on SIGTERM stop taking work, let in-flight requests finish, then close.

1. The first SIGTERM (or Ctrl-C) starts the drain: ``/readyz`` answers 503 (a load balancer
   takes the instance out) and every new ``/v1/...`` request gets a 503 with ``retry-after``
   in its API's envelope, while requests already running — streams included — go on.
2. When none is left, or ``[gateway] drain_s`` has passed, uvicorn's own shutdown runs
   (listeners closed, connections closed, lifespan shutdown: the ledger is flushed and
   closed). A stream still running at the deadline is stopped and ends with an in-band error
   event in its API's format, so the client knows its answer is incomplete. A second signal
   skips the wait: the deadline is then.

:class:`DrainMiddleware` does the counting and refusing; :class:`DrainingServer` is the
uvicorn server ``tierwise serve`` runs (in each worker with ``--workers N``, see
:mod:`tierwise.gateway.supervisor`), whose signal handler starts the drain.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from types import FrameType
from typing import Any

import uvicorn
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierwise.errors import GatewayBusyError
from tierwise.gateway.dialects import Dialect, dialect_for_path
from tierwise.gateway.failures import Failure
from tierwise.gateway.routes import error_response

MODEL_PATHS = "/v1/"
DRAIN_RETRY_AFTER_S = 1


class Drain:
    """The drain state one app shares: a flag and the model requests in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.expired = False
        self.requests: set[asyncio.Task[Any]] = set()

    def begin(self) -> None:
        self.draining = True

    @property
    def in_flight(self) -> int:
        return len(self.requests)

    @property
    def idle(self) -> bool:
        return not self.requests

    def expire(self) -> None:
        """The deadline passed: stop what is still running; a started stream ends with an
        in-band error event (see :class:`_Watched`), not a cut connection, and a request not
        yet answered gets a 503 in its API's format."""
        self.expired = True
        for task in self.requests:
            task.cancel("the drain deadline passed")


class _Watched:
    """A response's ``send``, watched: has a stream started and not yet ended?"""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.streaming = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = dict(message.get("headers", []))
            self.streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.streaming = False
        await self._send(message)

    async def end_in_band(self, dialect: Dialect) -> None:
        gone = Failure(503, "the gateway shut down before this answer was finished; retry")
        frame = dialect.stream_encoder({}, "").error(gone)
        await self._send({"type": "http.response.body", "body": frame, "more_body": False})


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
        task = asyncio.current_task()
        assert task is not None
        self.drain.requests.add(task)
        watched = _Watched(send)
        try:
            await self.app(scope, receive, watched.send)
        except asyncio.CancelledError:
            if not self.drain.expired or (watched.started and not watched.streaming):
                raise
            dialect = dialect_for_path(scope["path"], Headers(scope=scope))
            if watched.streaming:
                await watched.end_in_band(dialect)
            else:  # not answered yet: an error the client can retry elsewhere
                await error_response(dialect, _unfinished())(scope, receive, send)
            task.uncancel()  # the answer is over, not an error for uvicorn to log
        finally:
            self.drain.requests.discard(task)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_for_path(scope["path"], Headers(scope=scope))
        busy = GatewayBusyError(
            "the gateway is shutting down; retry (another instance will answer)",
            retry_after_s=DRAIN_RETRY_AFTER_S,
        )
        await error_response(dialect, busy)(scope, receive, send)


def _unfinished() -> GatewayBusyError:
    return GatewayBusyError(
        "the gateway shut down before this answer was finished; retry",
        retry_after_s=DRAIN_RETRY_AFTER_S,
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM/SIGINT drains before it shuts down."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self._deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if sig not in (signal.SIGTERM, signal.SIGINT) or self.should_exit:
            super().handle_exit(sig, frame)
        elif self._deadline is None:  # the first signal: drain
            self._captured_signals.append(sig)
            self._deadline = now + self.drain_s
            self.drain.begin()
        elif self._deadline > now:  # a second: the deadline is now (streams end in-band)
            self._deadline = now
        else:
            super().handle_exit(sig, frame)  # past the deadline: uvicorn's own (forced) exit

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            left = self._deadline - time.monotonic()
            if left <= 0 and not self.drain.idle and not self.drain.expired:
                self.drain.expire()  # streams end in-band; shut down at the next tick
            else:
                self.should_exit = self.drain.idle or left <= 0
            # uvicorn's own wait for what is still running may use only what is left of it
            self.config.timeout_graceful_shutdown = max(1, math.ceil(left))
        return await super().on_tick(counter)


class WorkerDrainingServer(DrainingServer):
    """A worker of :mod:`tierwise.gateway.supervisor`: it drains on SIGTERM only. Ctrl-C in a
    terminal signals the whole process group; the supervisor passes it on as SIGTERM."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGINT:
            super().handle_exit(sig, frame)
