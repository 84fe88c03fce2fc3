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
from collections.abc import Iterator
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
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    command = [sys.executable, "-m", "tierwise", "--config", str(_config(tmp_path, upstream, port))]
    process = subprocess.Popen([*command, "serve"], env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=base, timeout=10) as http:
            _wait_ready(http, process)
            events = afx.stream_events(afx.text_message("a long answer " * 4), chunk_size=8)
            parts = faults.split_events(afx.sse_body(events))
            fa.reply(faults.paced(parts, gap=STREAM_GAP_S))
            client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
            received: list[str] = []
            streamed = threading.Event()

            def stream() -> None:
                with client.messages.stream(
                    model="claude-haiku-4-5",
                    max_tokens=64,
                    messages=[{"role": "user", "content": "Hello"}],
                ) as s:
                    for event in s:
                        received.append(event.type)
                        streamed.set()

            runner = threading.Thread(target=stream)
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
    finally:
        if process.poll() is None:
            process.kill()
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "shutting down" in refused.json()["error"]["message"]
    assert received[-1] == "message_stop"  # the stream in flight finished, whole
    assert "text" in received
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on


def test_a_stream_still_running_at_the_deadline_ends_in_band(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    fa, upstream = fake
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    config = _config(tmp_path, upstream, port, drain_s=1)
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    received: list[str] = []
    try:
        with httpx2.Client(base_url=base, timeout=10) as http:
            _wait_ready(http, process)
        events = afx.stream_events(afx.text_message("too long to finish " * 4), chunk_size=8)
        fa.reply(faults.paced(faults.split_events(afx.sse_body(events)), gap=0.4))
        client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
        with (
            pytest.raises(anthropic.APIError) as caught,
            client.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": "Hello"}],
            ) as stream,
        ):
            for event in stream:
                received.append(event.type)
                if len(received) == 1:
                    process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "shut down before this answer was finished" in str(caught.value)
    assert "message_stop" not in received
    assert code in (0, -signal.SIGTERM)
    assert process.stderr is not None
    assert b"Traceback" not in process.stderr.read()  # an answer ended in-band is no error


def test_a_second_signal_ends_the_drain_now(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    fa, upstream = fake
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    config = _config(tmp_path, upstream, port, drain_s=30)
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    received: list[str] = []
    try:
        with httpx2.Client(base_url=base, timeout=10) as http:
            _wait_ready(http, process)
        events = afx.stream_events(afx.text_message("half a minute to finish " * 8), chunk_size=8)
        fa.reply(faults.paced(faults.split_events(afx.sse_body(events)), gap=0.5))
        client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
        with (
            pytest.raises(anthropic.APIError) as caught,
            client.messages.stream(
                model="claude-haiku-4-5",
                max_tokens=64,
                messages=[{"role": "user", "content": "Hello"}],
            ) as stream,
        ):
            for event in stream:
                received.append(event.type)
                if len(received) == 1:
                    process.send_signal(signal.SIGTERM)
                    _wait_draining(base)
                    process.send_signal(signal.SIGTERM)  # a second signal: stop waiting
        code = process.wait(5)  # not the 30 s drain
    finally:
        if process.poll() is None:
            process.kill()
    assert "shut down before this answer was finished" in str(caught.value)
    assert len(received) < 10  # cut within a few events, not the whole answer
    assert process.stderr is not None
    assert code in (0, -signal.SIGTERM), process.stderr.read().decode()
