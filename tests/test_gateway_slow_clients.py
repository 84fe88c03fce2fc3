"""Slow and idle clients are cut, on raw sockets against a served gateway.

A connection whose headers never finish (slowloris), a kept-alive connection left idle, a
request body that stops coming, and a client that stops reading its answer each hold a
connection (and, for the last two, a slot in ``max_in_flight`` and a budget reservation) for
as long as the client likes, unless the gateway cuts them: ``[gateway] header_timeout_s``,
``keepalive_timeout_s``, ``body_timeout_s`` and ``stream_send_timeout_s`` (0.5 s here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests import test_gateway_drain
from tests.fakes import anthropic_upstream as afx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tests.test_gateway_budgets import create_key, read_store
from tests.test_gateway_drain import _free_port, _wait_ready
from tierwise.budgets.limits import Limits
from tierwise.ledger.store import Ledger

SHORT_S = 0.5
"""Every deadline in these tests."""
NEVER_S = 4.0
"""How long a test waits for a cut that does not come (today's uvicorn never cuts)."""
HELLO = [{"role": "user", "content": "Hello"}]
HAIKU = "claude-haiku-4-5"
fake = test_gateway_drain.fake  # the fixture: the fake Anthropic upstream on loopback


def _settings(tmp_path: Path, **gateway: Any) -> Any:
    deadlines = {
        "header_timeout_s": SHORT_S,
        "keepalive_timeout_s": SHORT_S,
        "body_timeout_s": SHORT_S,
        "stream_send_timeout_s": SHORT_S,
    }
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    return gateway_settings(ledger, gateway={"key_cache_s": 0, **deadlines, **gateway})


@contextmanager
def _gateway(tmp_path: Path, http: str = "httptools", **gateway: Any) -> Iterator[Served]:
    with running_gateway(_settings(tmp_path, **gateway), http) as served:
        yield served


PROTOCOLS = pytest.mark.parametrize("http", ["httptools", "h11"])
"""uvicorn's two HTTP protocols (``tierwise serve`` runs httptools when installed)."""


# --- raw HTTP/1.1 ---------------------------------------------------------------------------


def _connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting: the window the server may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    return sock


def _request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: gateway"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _messages_request(token: str, body: dict[str, Any]) -> bytes:
    headers = {
        "content-type": "application/json",
        "x-api-key": token,
        "anthropic-version": "2023-06-01",
    }
    return _request("POST", "/v1/messages", json.dumps(body).encode(), headers)


def _read_response(
    sock: socket.socket, pace: tuple[int, float] = (65536, 0.0)
) -> tuple[int, bytes]:
    """One response with a content-length: its status and body (the connection kept);
    ``pace``: read this many bytes at a time, this many seconds apart."""
    size, gap_s = pace
    sock.settimeout(NEVER_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(size)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(": ") for x in lines) if k == "content-length")
    while len(body) < length:
        time.sleep(gap_s)
        chunk = sock.recv(size)
        assert chunk, f"closed after {len(body)} of {length} bytes"
        body += chunk
    return int(lines[0].split()[1]), body


def _closed_after(sock: socket.socket, started: float) -> tuple[float, bytes]:
    """Wait (reading) for the server to close the connection: seconds since ``started``,
    and what it sent meanwhile. Fails when it is still open after :data:`NEVER_S`."""
    sock.settimeout(0.05)
    received = b""
    while time.monotonic() - started < NEVER_S:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started, received
        if not chunk:
            return time.monotonic() - started, received
        received += chunk
    raise AssertionError(f"the connection is still open after {NEVER_S} s")


# --- slow headers -----------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path) -> None:
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        elapsed, received = _closed_after(sock, time.monotonic())
    assert SHORT_S * 0.8 < elapsed < SHORT_S + 2 and received == b""


@PROTOCOLS
def test_headers_trickling_in_are_cut_at_the_header_deadline(tmp_path: Path, http: str) -> None:
    """Slowloris: a byte every 0.1 s keeps the connection busy but never finishes the headers."""
    with _gateway(tmp_path, http) as gw, closing(_connect(gw.url)) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: gateway\r\n")
        cut = _trickle(sock, b"x-slow: " + b"a" * 100)
        elapsed = time.monotonic() - started
    assert cut and SHORT_S * 0.8 < elapsed < SHORT_S + 2


def _trickle(sock: socket.socket, data: bytes) -> bool:
    """Send ``data`` a byte every 0.1 s; has the server closed the connection meanwhile?"""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        sock.settimeout(0.1)
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
    return False


def test_a_kept_alive_connection_trickling_its_next_headers_is_cut(tmp_path: Path) -> None:
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        sock.sendall(_request("GET", "/healthz"))
        assert _read_response(sock) == (200, b'{"status":"ok"}')
        time.sleep(SHORT_S * 0.5)  # idle, under the keep-alive deadline
        started = time.monotonic()
        cut = _trickle(sock, b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nx-slow: " + b"a" * 50)
        elapsed = time.monotonic() - started
    assert cut and SHORT_S * 0.8 < elapsed < SHORT_S + 2


def test_headers_in_several_pieces_within_the_deadline_are_served(tmp_path: Path) -> None:
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        for _ in range(2):  # on a fresh connection, then kept alive
            request = _request("GET", "/healthz")
            for piece in (request[:10], request[10:30], request[30:]):
                sock.sendall(piece)
                time.sleep(SHORT_S / 5)
            assert _read_response(sock) == (200, b'{"status":"ok"}')


def test_headers_over_the_limit_get_a_431(tmp_path: Path) -> None:
    """httptools takes headers of any size (a gigabyte, kept in memory); the gateway stops at
    ``max_header_bytes``, at once, however fast they come."""
    padding = "".join(f"x-pad-{i}: {'a' * 1000}\r\n" for i in range(100)).encode()  # 100 KB
    head = b"POST /v1/messages HTTP/1.1\r\nhost: gateway\r\n" + padding
    with _gateway(tmp_path, max_header_bytes=64 * 1024) as gw, closing(_connect(gw.url)) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(head)  # the headers never end: the limit, not the deadline, stops it
        elapsed, received = _closed_after(sock, time.monotonic())
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    error = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert error["type"] == "error"  # Anthropic's envelope: the path was in
    assert error["error"]["message"] == "the request line and headers are over 65536 bytes"
    assert elapsed < SHORT_S * 0.8


def test_large_headers_under_the_limit_are_served(tmp_path: Path) -> None:
    padding = {f"x-pad-{i}": "a" * 1000 for i in range(40)}  # 40 KB
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        sock.sendall(_request("GET", "/healthz", headers=padding))
        assert _read_response(sock) == (200, b'{"status":"ok"}')


# --- idle keep-alive --------------------------------------------------------------------------


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        sock.sendall(_request("GET", "/healthz"))
        assert _read_response(sock)[0] == 200
        answered = time.monotonic()
        elapsed, received = _closed_after(sock, answered)
    assert SHORT_S * 0.8 < elapsed < SHORT_S + 2 and received == b""


# --- slow body --------------------------------------------------------------------------------

PARTIAL_BODY = b'{"model": "claude-haiku-4-5", "max_tokens": 64, "mess'


@PROTOCOLS
@pytest.mark.parametrize(
    ("path", "envelope"),
    [
        ("/v1/messages", {"type": "error", "error": {"type": "invalid_request_error"}}),
        ("/v1/chat/completions", {"error": {"type": "invalid_request_error"}}),
    ],
)
def test_a_body_that_stops_coming_gets_a_408_and_frees_its_slot(
    tmp_path: Path, path: str, envelope: dict[str, Any], http: str
) -> None:
    with _gateway(tmp_path, http, max_in_flight=1) as gw, closing(_connect(gw.url)) as sock:
        gw.anthropic_fake.reply_message(afx.text_message("served after the slow one"))
        head = _request("POST", path, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        sock.sendall(head.replace(b"content-length: 0", b"content-length: 1000") + PARTIAL_BODY)
        started = time.monotonic()
        elapsed, received = _closed_after(sock, started)
        answer = gw.anthropic().messages.create(model=HAIKU, max_tokens=64, messages=HELLO)
    assert SHORT_S * 0.8 < elapsed < SHORT_S + 2
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.split(b"\r\n")
    error = json.loads(body)
    assert error | {"error": error["error"] | envelope["error"]} == error  # the API's envelope
    assert "did not arrive within 0.5 s" in error["error"]["message"]
    assert answer.content[0].text == "served after the slow one"  # type: ignore[union-attr]


def test_a_body_in_pieces_within_the_deadline_is_served(tmp_path: Path) -> None:
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        gw.anthropic_fake.reply_message(afx.text_message("in pieces"))
        body = json.dumps({"model": HAIKU, "max_tokens": 64, "messages": HELLO}).encode()
        request = _messages_request(ADMIN_KEY, json.loads(body))
        split = len(request) - len(body) + 10
        for piece in (request[:split], request[split : split + 20], request[split + 20 :]):
            sock.sendall(piece)
            time.sleep(SHORT_S / 5)
        status, answer = _read_response(sock)
    assert status == 200 and json.loads(answer)["content"][0]["text"] == "in pieces"


def test_an_unread_body_after_its_answer_is_not_taken_for_headers(tmp_path: Path) -> None:
    """A request answered before its body was read (a 401 here): the rest of the body, however
    large, is skipped as uvicorn skips it, then the connection serves the next request."""
    body = b'{"pad": "' + b"a" * 200_000 + b'"}'
    request = _request("POST", "/v1/messages", body, {"x-api-key": "tw_not_a_key"})
    with _gateway(tmp_path) as gw, closing(_connect(gw.url)) as sock:
        head = request[: len(request) - len(body)]
        sock.sendall(head)
        status, answer = _read_response(sock)
        sock.sendall(body)  # the 200 KB nobody reads
        sock.sendall(_request("GET", "/healthz"))
        assert _read_response(sock) == (200, b'{"status":"ok"}')
    assert status == 401 and json.loads(answer)["error"]["type"] == "authentication_error"


# --- a client that does not read ----------------------------------------------------------------

SMALL_WINDOW = 4096
"""The non-reading client's receive buffer (so the gateway's send buffers fill soon)."""


def _sse_reply(content: AsyncIterator[bytes]) -> Any:
    def reply(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "request-id": request_id}
        return httpx2.Response(200, content=content, headers=headers)

    return reply


def _endless_stream(closed: threading.Event) -> Any:
    """An Anthropic stream that never ends (16 KB text deltas as fast as they are read);
    ``closed`` is set when the gateway closes it."""
    start = afx.sse_body(afx.stream_events(afx.text_message("x"))[:3])  # message, ping, block
    text = {"type": "text_delta", "text": "y" * 16384}
    delta = afx.sse_body([{"type": "content_block_delta", "index": 0, "delta": text}])

    async def content() -> AsyncIterator[bytes]:
        try:
            yield start
            while True:
                yield delta
                await asyncio.sleep(0)
        finally:
            closed.set()

    return _sse_reply(content())


def _paced_stream(text: str, gap_s: float) -> Any:
    """``text`` streamed in small events ``gap_s`` apart."""
    events = afx.stream_events(afx.text_message(text), chunk_size=8)

    async def content() -> AsyncIterator[bytes]:
        for event in events:
            yield afx.sse_body([event])
            await asyncio.sleep(gap_s)

    return _sse_reply(content())


def _served_once_free(url: str, key: str) -> str:
    """Ask until the gateway (``max_in_flight`` 1) takes a request: the answer's text."""
    client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    deadline = time.monotonic() + NEVER_S
    while True:
        try:
            answer = client.messages.create(model=HAIKU, max_tokens=64, messages=HELLO)
            return answer.content[0].text  # type: ignore[union-attr]
        except anthropic.InternalServerError as busy:  # 503: the slot is still held
            assert busy.status_code == 503
            assert time.monotonic() < deadline, "the non-reading client still holds the slot"
            time.sleep(0.1)


@PROTOCOLS
def test_a_streaming_client_that_never_reads_is_cut(tmp_path: Path, http: str) -> None:
    """Its slot comes back (another request gets through with ``max_in_flight`` 1), its
    upstream stream is closed, its reservation is settled as a cut stream's (nothing held,
    the reservation spent) and its call recorded as a stream of unknown cost — while the
    client still holds its socket open."""
    settings = _settings(tmp_path, max_in_flight=1)
    ledger_url = settings.resolved_ledger_url()
    token = create_key(ledger_url, Limits(usd_total=Decimal(10)))
    upstream_closed = threading.Event()
    with running_gateway(settings, http) as gw, closing(_connect(gw.url, SMALL_WINDOW)) as sock:
        gw.anthropic_fake.reply(_endless_stream(upstream_closed))
        gw.anthropic_fake.reply_message(afx.text_message("the next client's answer"))
        body = {"model": HAIKU, "max_tokens": 64, "stream": True, "messages": HELLO}
        sock.sendall(_messages_request(token, body))  # and never reads
        assert _served_once_free(gw.url, token) == "the next client's answer"
        assert upstream_closed.wait(NEVER_S)
        counter, held = read_store(ledger_url, "key:team:total")
        gw.flush_ledger()
        with Ledger.open(ledger_url) as ledger:
            cut, served = sorted(ledger.calls(), key=lambda call: call.cost_usd is not None)
    assert held == 0 and counter.reserved.usd == 0
    assert counter.spent.usd > served.cost_usd  # the cut stream: charged its reservation
    assert cut.stream and cut.cost_usd is None and cut.status == "error"
    assert not served.stream and served.status == "ok"


def test_a_large_answer_never_read_is_dropped(tmp_path: Path) -> None:
    """A non-streamed answer the client does not read is not kept in the gateway's buffers
    for as long as the client likes: the connection is aborted."""
    big = afx.text_message("z" * 8_000_000)
    with _gateway(tmp_path) as gw, closing(_connect(gw.url, SMALL_WINDOW)) as sock:
        gw.anthropic_fake.reply_message(big)
        body = {"model": HAIKU, "max_tokens": 64, "messages": HELLO}
        sock.sendall(_messages_request(ADMIN_KEY, body))
        time.sleep(SHORT_S * 4)  # not reading
        _, received = _closed_after(sock, time.monotonic())
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert len(received) < 8_000_000  # cut midway, not delivered whole


def test_a_slow_reader_that_keeps_reading_gets_its_whole_stream(tmp_path: Path) -> None:
    """The deadline is on not reading, not on the stream's length: a stream lasting longer
    than it, read as it comes, is whole."""
    with _gateway(tmp_path) as gw:
        gw.anthropic_fake.reply(_paced_stream("a long answer " * 10, gap_s=0.1))
        started = time.monotonic()
        with gw.anthropic().messages.stream(model=HAIKU, max_tokens=64, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
    assert time.monotonic() - started > SHORT_S * 2
    assert text == "a long answer " * 10


# --- tierwise serve, one process and several ----------------------------------------------------


def _serve_config(tmp_path: Path, port: int, upstream: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
default_policy = "fixed:anthropic:claude-haiku-4-5"
ledger_url = "sqlite:///{tmp_path / "ledger.db"}"

[gateway]
port = {port}
auth = false
max_in_flight = 1
header_timeout_s = {SHORT_S}
keepalive_timeout_s = {SHORT_S}
body_timeout_s = {SHORT_S}
stream_send_timeout_s = {SHORT_S}

[providers.anthropic]
base_url = "{upstream}"
api_key = "sk-ant-upstream-secret"
max_retries = 0
""",
        "utf-8",
    )
    return path


@contextmanager
def _tierwise_serve(tmp_path: Path, workers: int, upstream: str) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    config = _serve_config(tmp_path, port, upstream)
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen([*command, "--workers", str(workers)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=url, timeout=10) as http:
            _wait_ready(http, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()


def _endless_sync_stream(closed: threading.Event) -> Any:
    """:func:`_endless_stream` for the loopback fake (a plain iterator)."""
    start = afx.sse_body(afx.stream_events(afx.text_message("x"))[:3])
    text = {"type": "text_delta", "text": "y" * 16384}
    delta = afx.sse_body([{"type": "content_block_delta", "index": 0, "delta": text}])

    def content() -> Iterator[bytes]:
        try:
            yield start
            while True:
                yield delta
        finally:
            closed.set()

    def reply(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "request-id": request_id}
        return httpx2.Response(200, content=content(), headers=headers)

    return reply


@pytest.mark.parametrize("workers", [1, 2])
def test_tierwise_serve_cuts_slow_and_idle_clients(
    tmp_path: Path, fake: tuple[afx.FakeAnthropic, str], workers: int
) -> None:
    """The deadlines reach every process (uvloop there): a connection per check, twice per
    worker (either worker may take one)."""
    fa, upstream = fake
    with _tierwise_serve(tmp_path, workers, upstream) as url:
        for _ in range(workers * 2):
            with closing(_connect(url)) as silent:
                elapsed, _ = _closed_after(silent, time.monotonic())
                assert elapsed < SHORT_S + 2
            with closing(_connect(url)) as idle:
                idle.sendall(_request("GET", "/healthz"))
                assert _read_response(idle)[0] == 200
                elapsed, _ = _closed_after(idle, time.monotonic())
                assert elapsed < SHORT_S + 2
            with closing(_connect(url)) as slow:
                head = _request("POST", "/v1/messages", headers={"content-length": "100"})
                slow.sendall(head.replace(b"content-length: 0\r\n", b"") + PARTIAL_BODY)
                _, received = _closed_after(slow, time.monotonic())
                assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        closed = threading.Event()
        fa.reply(_endless_sync_stream(closed))
        fa.reply_message(afx.text_message("next"))
        with closing(_connect(url, SMALL_WINDOW)) as never_reads:
            body = {"model": HAIKU, "max_tokens": 64, "stream": True, "messages": HELLO}
            never_reads.sendall(_messages_request("unused", body))
            assert closed.wait(NEVER_S)  # cut, and its upstream stream closed
            assert _served_once_free(url, "unused") == "next"
