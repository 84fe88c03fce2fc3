"""Graceful drain with ``tierwise serve --workers 2``: every worker drains as one process does.

The supervisor gets SIGTERM (or the whole process group a terminal's Ctrl-C) while a stream
runs: ``/readyz`` says 503 and new requests get a 503 with ``retry-after`` on every fresh
connection, whichever worker takes it; the stream finishes whole, the supervisor exits 0 on
its own, and the ledger holds the stream's record. A stream still running at ``drain_s``
ends with the in-band error event; a second signal skips the wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from tests import test_gateway_drain
from tests.fakes import anthropic_upstream as afx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.test_gateway_drain import (
    _config,
    _free_port,
    _wait_ready,
    paced_answer,
    stream_cut_short,
    stream_into,
)
from tierwise.ledger.store import Ledger

fake = test_gateway_drain.fake  # the fixture: the fake Anthropic upstream on loopback
FRESH_CONNECTIONS = 6  # new requests after the signal, each on its own connection
CHAT = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "hi"}]}


class Gateway:
    """``tierwise serve --workers 2`` in its own process group, as a terminal would run it."""

    def __init__(self, tmp_path: Path, upstream: str, drain_s: float) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        config = _config(tmp_path, upstream, self.port, drain_s=drain_s)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
        command = [sys.executable, "-m", "tierwise", "--config", str(config)]
        self.process = subprocess.Popen(
            [*command, "serve", "--workers", "2"],
            env=env,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def signal_supervisor(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)  # what a terminal does on Ctrl-C

    def on_fresh_connection(self, method: str, path: str) -> httpx2.Response:
        with httpx2.Client(base_url=self.base, timeout=10) as http:
            return http.request(method, path, json=CHAT if method == "POST" else None)

    def wait_draining(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.on_fresh_connection("GET", "/readyz").status_code == 503:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("/readyz never said draining")

    def stop(self) -> tuple[int, str]:
        """Wait for the exit; the exit code and what was logged."""
        try:
            code = self.process.wait(30)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
        assert self.process.stderr is not None
        return code, self.process.stderr.read().decode()

    def calls(self) -> int:
        with Ledger.open(self.ledger_url) as ledger:
            return len(ledger.calls())


def _stream_started(
    gateway: Gateway, fa: FakeAnthropic, text: str, gap: float
) -> tuple[list[str], threading.Thread]:
    """A paced ``text`` streaming through the gateway on a thread, once its first event came:
    the event types received so far (then any error) and the thread."""
    paced_answer(fa, text, gap)
    received: list[str] = []
    started = threading.Event()
    runner = threading.Thread(target=stream_into, args=(gateway.base, received, started))
    runner.start()
    assert started.wait(20)
    return received, runner


@pytest.mark.parametrize("stop", [Gateway.signal_supervisor, Gateway.ctrl_c])
def test_every_worker_drains_then_the_supervisor_exits(
    tmp_path: Path, fake: tuple[FakeAnthropic, str], stop: Callable[[Gateway], None]
) -> None:
    fa, upstream = fake
    gateway = Gateway(tmp_path, upstream, drain_s=20)
    try:
        with httpx2.Client(base_url=gateway.base, timeout=10) as http:
            _wait_ready(http, gateway.process)
        received, runner = _stream_started(gateway, fa, "a long answer " * 4, gap=0.15)
        stop(gateway)
        gateway.wait_draining()
        ready = [gateway.on_fresh_connection("GET", "/readyz") for _ in range(FRESH_CONNECTIONS)]
        refused = [
            gateway.on_fresh_connection("POST", "/v1/chat/completions")
            for _ in range(FRESH_CONNECTIONS)
        ]
        runner.join(30)
    finally:
        code, log = gateway.stop()
    assert all(r.status_code == 503 and r.json() == {"status": "draining"} for r in ready)
    assert all(r.status_code == 503 and r.headers["retry-after"] == "1" for r in refused)
    assert all("shutting down" in r.json()["error"]["message"] for r in refused)
    assert received[-1] == "message_stop"  # the stream in flight finished, whole
    assert code == 0, log
    assert "Traceback" not in log, log
    assert gateway.calls() == 1  # the stream's record was written before the worker exited
    assert len(fa.requests) == 1  # refused requests never reached the upstream


def test_a_stream_still_running_at_the_deadline_ends_in_band(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    fa, upstream = fake
    gateway = Gateway(tmp_path, upstream, drain_s=1)
    try:
        with httpx2.Client(base_url=gateway.base, timeout=10) as http:
            _wait_ready(http, gateway.process)
        paced_answer(fa, "too long to finish " * 4, gap=0.4)
        received, error = stream_cut_short(gateway.base, gateway.signal_supervisor)
    finally:
        code, log = gateway.stop()
    assert "shut down before this answer was finished" in str(error)
    assert "message_stop" not in received
    assert code == 0, log
    assert "Traceback" not in log, log
    assert gateway.calls() == 1  # the cut stream is recorded too


def test_a_second_signal_skips_the_wait(tmp_path: Path, fake: tuple[FakeAnthropic, str]) -> None:
    fa, upstream = fake
    gateway = Gateway(tmp_path, upstream, drain_s=30)
    try:
        with httpx2.Client(base_url=gateway.base, timeout=10) as http:
            _wait_ready(http, gateway.process)
        text = "an answer that takes half a minute " * 8
        received, runner = _stream_started(gateway, fa, text, gap=0.5)
        gateway.signal_supervisor()
        gateway.wait_draining()
        second = time.monotonic()
        gateway.signal_supervisor()
    finally:
        code, log = gateway.stop()
    stopped_after = time.monotonic() - second
    runner.join(30)
    assert stopped_after < 5  # not the 30 s drain
    assert "shut down before this answer was finished" in received[-1]  # ended in-band
    assert code == 0, log
    assert "Traceback" not in log, log
    assert gateway.calls() == 1


def _workers(supervisor: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    workers = set()
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(int(child))
    return workers


def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_dies_is_replaced(tmp_path: Path, fake: tuple[FakeAnthropic, str]) -> None:
    fa, upstream = fake
    gateway = Gateway(tmp_path, upstream, drain_s=5)
    try:
        with httpx2.Client(base_url=gateway.base, timeout=10) as http:
            _wait_ready(http, gateway.process)
        _poll(lambda: len(_workers(gateway.process.pid)) == 2, "two workers")
        dead = min(_workers(gateway.process.pid))
        os.kill(dead, signal.SIGKILL)

        def replaced() -> bool:
            workers = _workers(gateway.process.pid)
            return dead not in workers and len(workers) == 2

        _poll(replaced, "the dead worker replaced")
        fa.reply_message(afx.text_message("still here"))
        answer = gateway.on_fresh_connection("POST", "/v1/chat/completions")
        gateway.signal_supervisor()
    finally:
        code, log = gateway.stop()
    assert answer.status_code == 200
    assert f"Child process [{dead}] died" in log
    assert code == 0, log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_that_cannot_start_stops_the_supervisor_with_one_error(
    tmp_path: Path, fake: tuple[FakeAnthropic, str]
) -> None:
    _, upstream = fake
    gateway = Gateway(tmp_path, upstream, drain_s=5)
    try:
        with httpx2.Client(base_url=gateway.base, timeout=10) as http:
            _wait_ready(http, gateway.process)
        _poll(lambda: len(_workers(gateway.process.pid)) == 2, "two workers")
        (tmp_path / "config.toml").write_text("default_policy = [\n", "utf-8")  # broken meanwhile
        os.kill(min(_workers(gateway.process.pid)), signal.SIGKILL)  # its restart reads it
    finally:
        code, log = gateway.stop()
    assert code == 3  # uvicorn's startup failure, as one process exits
    assert "cannot start" in log and "config.toml" in log, log
    assert "Traceback" not in log, log


def test_workers_0_is_one_clear_error(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9", _free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve", "--workers", "0"]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Invalid value for '--workers'" in done.stderr
    assert "Traceback" not in done.stderr
