"""Serve an ``httpx2.MockTransport``-style handler on a real socket at 127.0.0.1.

The same handler function backs both the in-process transport and this loopback server, so
one fake upstream is tested both ways. A response whose content is an iterator (rather than
bytes) is sent as it is produced, in HTTP chunks, so a reply can pause between chunks; raising
:class:`Reset` (before or while answering) resets the connection (RST), raising :class:`Cut`
closes it without finishing the body. See :mod:`tests.fakes.faults`.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2

Handler = Callable[[httpx2.Request], httpx2.Response]


class Reset(Exception):
    """Raised by a handler or a body iterator: the server resets the connection (RST)."""


class Cut(Exception):
    """Raised by a body iterator: the server closes the connection mid-body (FIN)."""


def _make_request_handler(handler: Handler, base_url: str) -> type[BaseHTTPRequestHandler]:
    class _RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx2.Request(
                self.command, base_url + self.path, headers=dict(self.headers), content=body
            )
            try:
                response = handler(request)
                if isinstance(response.stream, httpx2.ByteStream):
                    self._send_whole(response)
                else:
                    self._send_chunked(response)
            except Reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.close_connection = True
            except Cut:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            except (BrokenPipeError, ConnectionResetError):  # the client went away first
                self.close_connection = True

        def _send_head(self, response: httpx2.Response) -> None:
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    self.send_header(key, value)

        def _send_whole(self, response: httpx2.Response) -> None:
            payload = response.read()
            self._send_head(response)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_chunked(self, response: httpx2.Response) -> None:
            self._send_head(response)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in response.iter_raw():
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            return

    return _RequestHandler


class _QuietServer(ThreadingHTTPServer):
    """A client hanging up on the fake (as a gateway cutting a stream does) is expected,
    not a traceback on stderr; other errors are still printed."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serve(handler: Handler) -> Iterator[str]:
    """Run ``handler`` on 127.0.0.1 on a free port; yields the base URL."""
    server = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = _make_request_handler(handler, base_url)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
