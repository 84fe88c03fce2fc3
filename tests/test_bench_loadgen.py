"""bench/loadgen.py: an open-loop schedule whose every request is tallied, by how it ended."""

from __future__ import annotations

import errno
import socket
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from tests.bench_modules import fake_upstream, load_bench_module

BODY = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "Hi"}]}


def _spec(loadgen: ModuleType, port: int, rate: float, duration: float) -> Any:
    headers = {"authorization": "Bearer sk-bench"}
    return loadgen.LoadSpec(
        "127.0.0.1", port, "/v1/chat/completions", headers, BODY, rate, duration, timeout=5.0
    )


def test_every_scheduled_request_is_sent_and_answered() -> None:
    loadgen = load_bench_module("loadgen")
    with fake_upstream() as url:
        port = urlsplit(url).port
        assert port is not None
        result = loadgen.run_load(_spec(loadgen, port, rate=50, duration=0.4))
    assert result.sent == 20
    assert result.ok == 20
    assert dict(result.statuses) == {"200": 20}
    assert len(result.total_ms) == len(result.first_byte_ms) == 20
    assert all(
        0 < f <= t < 5000 for f, t in zip(result.first_byte_ms, result.total_ms, strict=True)
    )


def test_refused_connections_are_tallied_by_their_type() -> None:
    loadgen = load_bench_module("loadgen")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, not listening: connections are refused
        result = loadgen.run_load(_spec(loadgen, port, rate=20, duration=0.2))
    assert result.ok == 0
    assert dict(result.statuses) == {"ConnectionRefusedError": result.sent}


def test_a_bare_os_error_is_tallied_with_its_errno_name() -> None:
    kind = load_bench_module("loadgen")._failure_kind
    assert kind(OSError(errno.EMFILE, "Too many open files")) == "OSError EMFILE"
    assert kind(ConnectionResetError(errno.ECONNRESET, "reset")) == "ConnectionResetError"
    assert kind(OSError("no errno")) == "OSError"
