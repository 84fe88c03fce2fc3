"""Deadlines for slow and idle clients, on uvicorn's own HTTP protocol.

uvicorn closes a kept-alive connection idle for ``timeout_keep_alive`` after an answer, and
nothing else: a connection that never sends its request, or sends it a byte at a time
(slowloris; uvicorn's keep-alive timer stops at the first byte), stays open; so does a request
whose body stops coming, holding its slot in ``max_in_flight``; and a client that stops
reading blocks the response's ``send`` on flow control for good, so a stream keeps its slot
and renews its budget reservation for as long as the client keeps the socket open. Nor does
httptools limit the headers' size: one client could send a gigabyte of them.

:func:`timed_protocol` subclasses uvicorn's protocol (httptools or h11) with three deadlines
and a size limit (``[gateway]``, :class:`ClientLimits`):

- ``header_timeout_s``, from the connection's opening (or, kept alive, the first byte of its
  next request) to the end of the headers; past it the connection is closed;
- ``max_header_bytes``: a request line and headers larger get a 431 and the connection closed;
- ``body_timeout_s``, from the end of the headers to the end of the body; past it the client
  gets a 408 in its API's envelope and the connection is closed. The app sees the client gone
  (``http.disconnect``), so the request ends and frees its slot;
- ``stream_send_timeout_s``: how long the transport's write buffer may stay full without
  the client reading any of it; past it the connection is aborted (a slow reader of a large
  answer is not cut: only one that reads nothing). The app's blocked ``send`` returns and it
  sees the disconnect: a stream ends as one whose client hung up does (its upstream stream
  closed, the call recorded with its cost unknown, the reservation settled as a cut stream's,
  see :mod:`tierwise.gateway.sse`); an answer already written is dropped, not kept in memory.

The hot path: one timer per connection (armed when it opens, cancelled when the first
request's headers are in) and a few attribute reads per read from the socket. The other
timers are armed only when a request's headers or body take more than one read, or when the
write buffer fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http
import logging
import sys
import termios
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from starlette.datastructures import Headers
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tierwise.errors import GatewayError, HeadersTooLargeError, RequestTimeoutError
from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.routes import error_response

logger = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class ClientLimits:
    """Seconds allowed for the headers, for the body, and for a client not reading; the
    largest request line and headers."""

    headers_s: float = 10.0
    body_s: float = 30.0
    send_s: float = 30.0
    header_bytes: int = 64 * 1024

    @classmethod
    def of(cls, config: GatewayConfig) -> ClientLimits:
        return cls(
            config.header_timeout_s,
            config.body_timeout_s,
            config.stream_send_timeout_s,
            config.max_header_bytes,
        )


_OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") else None
"""``SIOCOUTQ``: the bytes in a socket's send queue the peer has not acknowledged yet."""


def unsent(transport: asyncio.Transport) -> int:
    """Bytes written to ``transport`` that the client has not taken yet: its buffer and, on
    Linux, the socket's send queue (the client reading drains that one first)."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError):
            queued = fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4))
            pending += int.from_bytes(queued, sys.byteorder, signed=True)
    return pending


class _Timed(asyncio.Protocol):
    """The deadlines and the header limit, mixed in before one of uvicorn's HTTP protocols."""

    limits: ClassVar[ClientLimits] = ClientLimits()

    # uvicorn's protocol's own
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    server_state: ServerState
    client: tuple[str, int] | None

    _headers_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _send_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    """Bytes received since the last request's headers were in (the next one's so far)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_timer = self.loop.call_later(self.limits.headers_s, self._late_headers)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._headers_timer, self._body_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._headers_timer = self._body_timer = self._send_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle.more_body:  # its body is coming (or, answered, unread)
            if self._headers_timer is not None or self._header_bytes:
                self._headers_in()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_s, self._late_body, cycle)
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if cycle is not None and not cycle.response_complete:  # all in, being answered
            if self._headers_timer is not None or self._header_bytes:
                self._headers_in()
            return
        self._header_bytes += len(data)  # a next request's headers, not all in
        if self.transport.is_closing():
            return
        if self._header_bytes > self.limits.header_bytes:
            self._refuse(HeadersTooLargeError(self._too_large), self._partial_path())
        elif self._headers_timer is None:
            self._headers_timer = self.loop.call_later(self.limits.headers_s, self._late_headers)

    def _headers_in(self) -> None:
        self._header_bytes = 0
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._watch_reading(unsent(self.transport))

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _late_headers(self) -> None:
        self._headers_timer = None
        logger.debug("%s: headers not in after %s s; closed", self.client, self.limits.headers_s)
        self.transport.close()

    def _late_body(self, cycle: Any) -> None:
        self._body_timer = None
        if cycle is not self.cycle or not cycle.more_body or self.transport.is_closing():
            return
        logger.debug("%s: body not in after %s s; closed", self.client, self.limits.body_s)
        cycle.disconnected = True  # the app's receive says so, its sends go nowhere
        cycle.message_event.set()
        if cycle.response_started:
            self.transport.close()
        else:
            late = f"the request body did not arrive within {self.limits.body_s:g} s"
            self._refuse(RequestTimeoutError(late), cycle.scope["path"], cycle.scope["headers"])

    def _watch_reading(self, buffered: int) -> None:
        self._send_timer = self.loop.call_later(self.limits.send_s, self._reading, buffered)

    def _reading(self, buffered: int) -> None:
        """The write buffer is still full: cut the client unless it read some meanwhile."""
        left = unsent(self.transport)
        if left < buffered:  # slow (a large answer on a slow link), not stopped
            self._watch_reading(left)
            return
        self._send_timer = None
        logger.info("%s: read nothing for %s s; cut", self.client, self.limits.send_s)
        self.transport.abort()  # close() would wait for the client to read what is buffered

    @property
    def _too_large(self) -> str:
        return f"the request line and headers are over {self.limits.header_bytes} bytes"

    def _partial_path(self) -> str:
        """The path of a request whose headers are not all in, when the parser has it."""
        url = getattr(self, "url", b"")  # httptools's protocol gathers it; h11's does not
        return url.split(b"?", 1)[0].decode("latin-1") if isinstance(url, bytes) else ""

    def _refuse(
        self, error: GatewayError, path: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answer ``error`` in the API's envelope (by ``path`` and ``headers``), then close."""
        scope = {"type": "http", "path": path, "headers": headers or []}
        response = error_response(dialect_for_path(path, Headers(scope=scope)), error)
        status = http.HTTPStatus(response.status_code)
        fields = [*self.server_state.default_headers, *response.raw_headers]
        lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
        lines += [name + b": " + value for name, value in fields]
        lines.append(b"connection: close")
        self.transport.write(b"\r\n".join([*lines, b"", response.body]))
        self.transport.close()


class TimedHttpToolsProtocol(_Timed, HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and the header limit."""


class TimedH11Protocol(_Timed, H11Protocol):
    """uvicorn's h11 protocol with the deadlines and the header limit."""


def timed_protocol(http_protocol: object, config: GatewayConfig) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` option: its ``http_protocol`` ("httptools", "h11") with ``config``'s
    deadlines and header limit."""
    base: type[_Timed] = TimedH11Protocol if http_protocol == "h11" else TimedHttpToolsProtocol
    limits = ClientLimits.of(config)
    return cast("type[asyncio.Protocol]", type(base.__name__, (base,), {"limits": limits}))
