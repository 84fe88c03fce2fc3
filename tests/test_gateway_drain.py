"""Graceful drain: ``tierwise serve`` in a subprocess gets SIGTERM in the middle of a stream.

The stream in flight finishes (every event, ``message_stop``); meanwhile ``/readyz`` says 503
and a new request gets a 503 with ``retry-after`` in its API's envelope; then the process
exits on its own, before the drain deadline. A stream still running at the deadline ends
with an in-band error event instead of a cut connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx2
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve

STREAM_GAP_S = 0.15
DRAIN_S = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(tmp_path: Path, upstream: str, port: int, drain_s: float = DRAIN_S) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
default_policy = "fixed:anthropic:claude-haiku-4-5"
ledger_url = "sqlite:///{tmp_path / "ledger.db"}"

[gateway]
port = {port}
auth = false
drain_s = {drain_s}

[providers.anthropic]
base_url = "{upstream}"
api_key = "sk-ant-upstream-secret"
max_retries = 0
""",
        "utf-8",
    )
    return path


@pytest.fixture
def fake() -> Iterator[tuple[FakeAnthropic, str]]:
    fa = FakeAnthropic()
    faults.RELEASE.clear()
    with serve(fa.handler) as url:
        yield fa, url
    faults.RELEASE.set()


def _wait_ready(http: httpx2.Client, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("tierwise serve did not become ready")


@contextmanager
def _serving(
    tmp_path: Path, upstream: str, drain_s: float = DRAIN_S
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``tierwise serve`` (one process) over ``upstream``, ready: its process and base URL;
    killed on the way out if it is still running."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    config = _config(tmp_path, upstream, port, drain_s=drain_s)
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=base, timeout=10) as http:
            _wait_ready(http, process)
        yield process, base
    finally:
        if process.poll() is None:
            process.kill()


def _wait_draining(base: str) -> None:
    deadline = time.monotonic() + 10
    with httpx2.Client(base_url=base, timeout=10) as http:
        while http.get("/readyz").status_code != 503:
            assert time.monotonic() < deadline, "/readyz never said draining"
            time.sleep(0.05)


def test_sigterm_mid_stream_drains_then_exits(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    fa, upstream = fake
    with (
        _serving(tmp_path, upstream) as (process, base),
        httpx2.Client(base_url=base, timeout=10) as http,
    ):
        paced_answer(fa, "a long answer " * 4, gap=STREAM_GAP_S)
        received: list[str] = []
        streamed = threading.Event()
        runner = threading.Thread(target=stream_into, args=(base, received, streamed))
        runner.start()
        assert streamed.wait(20)
        process.send_signal(signal.SIGTERM)
        time.sleep(STREAM_GAP_S)
        ready = http.get("/readyz")
        refused = http.post(
            "/v1/chat/completions",
            json={"model": "tierwise/auto", "messages": [{"role": "user", "content": "hi"}]},
        )
        runner.join(30)
        code = process.wait(30)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "shutting down" in refused.json()["error"]["message"]
    assert received[-1] == "message_stop"  # the stream in flight finished, whole
    assert "text" in received
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on


OnFirstEvent = Callable[["subprocess.Popen[bytes]", str], None]
"""What a test does to the server (its process, its base URL) once the stream has begun."""


def _stream_through_signals(
    tmp_path: Path,
    fake: tuple[FakeAnthropic, str],
    *,
    drain_s: float,
    answer: str,
    gap: float,
    on_first_event: OnFirstEvent,
    exit_within_s: float,
) -> tuple[list[str], anthropic.APIError, int, str]:
    """``tierwise serve`` (one process) streaming a paced ``answer`` through the Anthropic
    SDK, ``on_first_event`` done at its first event; the event types received, the error the
    SDK raised, the exit code and what the server logged."""
    fa, upstream = fake
    with _serving(tmp_path, upstream, drain_s) as (process, base):
        paced_answer(fa, answer, gap)
        received, error = stream_cut_short(base, lambda: on_first_event(process, base))
        code = process.wait(exit_within_s)
    assert process.stderr is not None
    return received, error, code, process.stderr.read().decode()


def stream_into(base: str, received: list[str], started: threading.Event) -> None:
    """Stream through the Anthropic SDK from the gateway at ``base``: ``received`` gets the
    event types, then any error; ``started`` is set at the first event."""
    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    try:
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
        ) as stream:
            for event in stream:
                received.append(event.type)
                started.set()
    except anthropic.APIError as exc:
        received.append(f"error: {exc}")


def paced_answer(fa: FakeAnthropic, text: str, gap: float) -> None:
    """The fake's next answer: ``text`` streamed in small events ``gap`` seconds apart."""
    events = afx.stream_events(afx.text_message(text), chunk_size=8)
    fa.reply(faults.paced(faults.split_events(afx.sse_body(events)), gap=gap))


def stream_cut_short(
    base: str, on_first_event: Callable[[], None]
) -> tuple[list[str], anthropic.APIError]:
    """A stream through the Anthropic SDK from the gateway at ``base`` that must end in an
    error (``on_first_event`` runs at its first event): the event types seen, the error."""
    client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIError) as caught,
        client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
        ) as stream,
    ):
        for event in stream:
            received.append(event.type)
            if len(received) == 1:
                on_first_event()
    return received, caught.value


def test_a_stream_still_running_at_the_deadline_ends_in_band(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    received, error, code, log = _stream_through_signals(
        tmp_path,
        fake,
        drain_s=1,
        answer="too long to finish " * 4,
        gap=0.4,
        on_first_event=lambda process, _: process.send_signal(signal.SIGTERM),
        exit_within_s=30,
    )
    assert "shut down before this answer was finished" in str(error)
    assert "message_stop" not in received
    assert code in (0, -signal.SIGTERM)
    assert "Traceback" not in log  # an answer ended in-band is no error


def test_a_second_signal_ends_the_drain_now(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    def signal_twice(process: subprocess.Popen[bytes], base: str) -> None:
        process.send_signal(signal.SIGTERM)
        _wait_draining(base)
        process.send_signal(signal.SIGTERM)  # a second signal: stop waiting

    received, error, code, log = _stream_through_signals(
        tmp_path,
        fake,
        drain_s=30,
        answer="half a minute to finish " * 8,
        gap=0.5,
        on_first_event=signal_twice,
        exit_within_s=5,  # not the 30 s drain
    )
    assert "shut down before this answer was finished" in str(error)
    assert len(received) < 10  # cut within a few events, not the whole answer
    assert code in (0, -signal.SIGTERM), log


def test_a_request_unanswered_at_the_deadline_gets_a_503_in_its_format(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    fa, upstream = fake
    fa.reply(faults.silent(30))  # the upstream never answers within the drain
    with _serving(tmp_path, upstream, drain_s=1) as (process, base):
        client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=20)
        caught: list[anthropic.APIStatusError] = []

        def ask() -> None:
            try:
                client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=64,
                    messages=[{"role": "user", "content": "Hi"}],
                )
            except anthropic.APIStatusError as exc:
                caught.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        deadline = time.monotonic() + 20
        while not fa.requests:  # the request is with the upstream
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        asking.join(20)
        code = process.wait(30)
    (error,) = caught
    assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
    assert "shut down before this answer was finished" in error.message
    assert code in (0, -signal.SIGTERM)
    assert process.stderr is not None
    assert b"Traceback" not in process.stderr.read()  # an honest answer, not a crash
