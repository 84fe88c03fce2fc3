"""Admission control: refuse the excess at once instead of queueing it into timeouts.

A pure ASGI middleware in front of the model endpoints. A request is admitted while fewer
than ``[gateway] max_in_flight`` model requests are in flight in this process (a stream counts
until its last byte), the event loop is not running more than ``max_loop_lag_ms`` late, no
more than ``max_accept_queue`` connections wait to be accepted on the listening socket, and
the ledger's write-behind queue is not backlogged; otherwise it gets a 503 in its API's own
error envelope with ``retry-after``, before its body is even read.

The loop lag is what catches a saturated CPU: requests then wait in socket buffers before
the app sees them, so the in-flight count stays low while latency grows without bound.
Answering the excess with a cheap 503 lets the process catch up. The lag is measured by a
timer callback that re-arms itself every :data:`LAG_PROBE_S` (a callback, not a task: no
cleanup needed when the loop closes).

The accept queue is where new connections wait when the workers are saturated: the kernel
completes their handshake and holds them (up to the listen backlog, 4096) until a worker
accepts one — seconds later under overload, and neither the loop lag nor the in-flight count
sees that wait. A request accepted from a long queue has waited long already, so while the
queue is deep every worker refuses what it accepts (cheaply) and the queue drains: the
requests served keep a bounded latency. The depth is read on Linux from the listening
socket's ``TCP_INFO`` (as ``ss -lt`` shows it) at each lag probe.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
from collections.abc import Callable

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


TCP_LISTEN = 10
"""``tcp_info.tcpi_state`` of a listening socket (Linux ``TCP_LISTEN``)."""
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_TCPI_UNACKED = 24
"""Offset of ``tcpi_unacked``: for a listening socket, the connections in its accept queue."""


def listening_fd(port: int) -> tuple[int, socket.AddressFamily] | None:
    """This process's listening TCP socket on ``port`` (its descriptor and family), found in
    ``/proc/self/fd``; None where there is none or no ``/proc``."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in names:
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)  # borrowed: detached below, never closed here
        except OSError:
            continue
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and sock.getsockname()[1] == port
            ):
                return fd, sock.family
        except OSError:
            continue
        finally:
            sock.detach()
    return None


class AcceptQueue:
    """How many connections wait on the listening socket for a worker to accept them.

    The socket is found once, by the port the first request came in on; its descriptor is
    borrowed, not duplicated (a copy would keep the port listening after the server closes
    it). Measuring is one ``getsockopt``; a descriptor that no longer is a listening socket
    is forgotten. Off (depth 0) where ``TCP_INFO`` does not exist.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._port: int | None = None
        self._fd: int | None = None
        self._family = socket.AF_INET

    def find(self, port: int) -> None:
        """Look for the listening socket on ``port`` (once per port)."""
        if self._port == port or _TCP_INFO is None:
            return
        self._port = port
        found = listening_fd(port)
        self._fd, self._family = found if found else (None, socket.AF_INET)

    def measure(self) -> None:
        if self._fd is None or _TCP_INFO is None:
            return
        try:
            sock = socket.socket(self._family, socket.SOCK_STREAM, 0, self._fd)
        except OSError:
            self._forget()
            return
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCPI_UNACKED + 4)
        except OSError:
            info = b""
        finally:
            sock.detach()
        if len(info) < _TCPI_UNACKED + 4 or info[0] != TCP_LISTEN:
            self._forget()  # closed (the server stopped), maybe its number reused
            return
        self.depth = struct.unpack_from("I", info, _TCPI_UNACKED)[0]

    @property
    def listener(self) -> tuple[int, socket.AddressFamily] | None:
        """The listening socket measured (descriptor, family), once found."""
        return None if self._fd is None else (self._fd, self._family)

    def _forget(self) -> None:
        self._fd, self.depth = None, 0


class LoopLag:
    """How late the running event loop wakes a timer (seconds), measured continuously;
    ``on_probe`` (optional) runs at each probe too."""

    def __init__(self, on_probe: Callable[[], None] | None = None) -> None:
        self.on_probe = on_probe
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
        if self.on_probe is not None:
            self.on_probe()
        if self._loop is loop and not loop.is_closed():
            loop.call_later(LAG_PROBE_S, self._tick, loop, now + LAG_PROBE_S)


class AdmissionControl:
    """Counts model requests in flight and refuses those past the limit with a 503."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self.in_flight = 0
        self.accept_queue = AcceptQueue()
        self.lag = LoopLag(self.accept_queue.measure)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in MODEL_PATHS:
            await self.app(scope, receive, send)
            return
        self.lag.watch()
        server = scope.get("server")
        if server and isinstance(server[1], int):
            self.accept_queue.find(server[1])
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
        waiting = self.accept_queue.depth
        if config.max_accept_queue and waiting > config.max_accept_queue:
            message = f"the gateway is saturated ({waiting} connections wait to be accepted)"
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
