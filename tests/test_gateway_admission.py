"""Admission control and the write-behind ledger in the served gateway, through the real SDKs.

The upstream is a FakeAnthropic behind an async gate, so a request can be held in flight.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest
from starlette.applications import Starlette

from tests.fakes import anthropic_upstream as fx
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import (
    ADMIN_KEY,
    fake_engine,
    gateway_settings,
    running_gateway,
    serve_app,
)
from tierwise.engine import Engine
from tierwise.gateway.admission import AcceptQueue, AdmissionControl, LoopLag, listening_fd
from tierwise.gateway.app import create_app
from tierwise.gateway.service import Gateway
from tierwise.ledger.store import Ledger
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig

HELLO = [{"role": "user", "content": "Hello"}]


class GatedUpstream:
    """FakeAnthropic answers only once the gate opens; ``entered`` says a request waits."""

    def __init__(self) -> None:
        self.fake = fx.FakeAnthropic()
        self.entered = threading.Event()
        self.gate = threading.Event()

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.entered.set()
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        return self.fake.handler(request)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[str, GatedUpstream]]:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'ledger.db'}", gateway={"max_in_flight": 1})
    upstream = GatedUpstream()
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream.handler))
    provider = AnthropicProvider(
        "anthropic",
        ProviderConfig(kind="anthropic", base_url="http://anthropic.fake", max_retries=0),
        "sk-ant-upstream",
        http_client=http,
    )
    engine = Engine(settings, providers={"anthropic": provider})
    with serve_app(create_app(settings, engine=engine), engine) as url:
        yield url, upstream


def test_past_max_in_flight_is_a_503_with_retry_after_in_each_envelope(gated) -> None:
    url, upstream = gated
    upstream.fake.reply_message(fx.text_message("first")).reply_message(fx.text_message("third"))
    claude = anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0)
    gpt = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            claude.messages.create, model="claude-haiku-4-5", max_tokens=64, messages=HELLO
        )
        assert upstream.entered.wait(10)
        with pytest.raises(anthropic.InternalServerError) as refused:
            claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
        with pytest.raises(openai.InternalServerError) as refused_openai:
            gpt.chat.completions.create(model="anthropic:claude-haiku-4-5", messages=HELLO)
        upstream.gate.set()
        assert first.result(10).content[0].text == "first"
    assert refused.value.status_code == 503
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "the gateway is at its limit of 1 requests in flight; retry after 1 s",
        },
    }
    assert refused_openai.value.status_code == 503
    assert refused_openai.value.response.headers["retry-after"] == "1"
    assert refused_openai.value.body["type"] == "server_error"
    assert len(upstream.fake.requests) == 1  # the refused ones never reached the upstream
    third = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
    assert third.content[0].text == "third"  # admitted again once the first finished


def test_records_written_behind_are_all_stored_at_shutdown(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    task_ids = []
    with running_gateway(gateway_settings(url)) as gw:
        for i in range(5):
            gw.anthropic_fake.reply_message(fx.text_message(f"answer {i}"))
            raw = gw.anthropic().messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=64, messages=HELLO
            )
            task_ids.append(raw.headers["x-tierwise-task-id"])
        assert gw.engine is not None
        assert gw.engine.ledger.write_behind is not None  # the gateway's default
        gw.flush_ledger()
        with gw.http() as http:
            auth = {"authorization": f"Bearer {ADMIN_KEY}"}
            metrics = http.get("/metrics", headers=auth).text
        assert "tierwise_gateway_ledger_pending_records 0.0" in metrics
    with Ledger.open(url) as ledger:  # no flush asked for: shutdown wrote them
        assert [t.id for t in ledger.tasks()] == task_ids
        assert len(ledger.calls()) == 5
        assert [o.outcome for o in ledger.outcomes()] == ["success"] * 5


def test_write_behind_can_be_turned_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_gateway(gateway_settings(url, gateway={"write_behind": False})) as gw:
        gw.anthropic_fake.reply_message(fx.text_message("hi"))
        gw.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
        assert gw.engine is not None and gw.engine.ledger.write_behind is None
        with Ledger.open(url) as ledger:  # written before the response
            assert len(ledger.calls()) == 1


async def test_loop_lag_is_measured_when_the_loop_is_blocked() -> None:
    lag = LoopLag()
    lag.watch()
    await asyncio.sleep(0.06)
    assert lag.seconds < 0.2
    time.sleep(0.3)  # the loop is blocked: the next probe fires late
    while lag.seconds < 0.2:  # the probe after the block records it (a state, not a speed)
        await asyncio.sleep(0.01)
    assert lag.seconds >= 0.2
    assert 0.05 <= lag.smoothed < lag.seconds  # one stall moves the average only partly


def test_a_late_loop_refuses_new_requests(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'l.db'}", gateway={"max_loop_lag_ms": 100})
    admission = AdmissionControl(create_app(settings), Gateway(settings))
    assert admission.refusal() is None
    admission.lag.smoothed = 0.25
    refusal = admission.refusal()
    assert refusal is not None and refusal.status == 503 and refusal.retry_after_s == 1
    assert refusal.message == (
        "the gateway is saturated (its event loop runs 250 ms late); retry after 1 s"
    )
    off = gateway_settings(f"sqlite:///{tmp_path / 'l.db'}", gateway={"max_loop_lag_ms": 0})
    unlimited = AdmissionControl(create_app(off), Gateway(off))
    unlimited.lag.smoothed = 5.0
    assert unlimited.refusal() is None


needs_tcp_info = pytest.mark.skipif(
    not hasattr(socket, "TCP_INFO") or not Path("/proc/self/fd").is_dir(),
    reason="the accept queue is read through Linux's TCP_INFO",
)


@needs_tcp_info
def test_the_accept_queue_counts_connections_no_one_has_accepted() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        port = listener.getsockname()[1]
        queue = AcceptQueue()
        queue.find(port)
        queue.measure()
        assert queue.depth == 0
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        queue.measure()
        assert queue.depth == 3  # the kernel completed their handshakes: they wait for us
        accepted, _ = listener.accept()
        queue.measure()
        assert queue.depth == 2
        for sock in [accepted, *clients]:
            sock.close()
    queue.measure()  # the listener is closed: forgotten, not misread
    assert queue.depth == 0
    assert listening_fd(port) is None


@needs_tcp_info
def test_the_listening_socket_is_found_by_port_and_only_borrowed() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_server(("127.0.0.1", 0)) as other,
    ):
        found = listening_fd(listener.getsockname()[1])
        assert found == (listener.fileno(), socket.AF_INET)
        assert other.getsockname()[1] != listener.getsockname()[1]
        listener.getsockname()  # still usable: finding it did not close it
    assert listening_fd(0) is None


def test_a_deep_accept_queue_refuses_new_requests(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    settings = gateway_settings(url, gateway={"max_accept_queue": 64})
    admission = AdmissionControl(create_app(settings), Gateway(settings))
    admission.accept_queue.depth = 64
    assert admission.refusal() is None
    admission.accept_queue.depth = 65
    refusal = admission.refusal()
    assert refusal is not None and refusal.status == 503 and refusal.retry_after_s == 1
    assert refusal.message == (
        "the gateway is saturated (65 connections wait to be accepted); retry after 1 s"
    )
    off = gateway_settings(url, gateway={"max_accept_queue": 0})
    unlimited = AdmissionControl(create_app(off), Gateway(off))
    unlimited.accept_queue.depth = 5000
    assert unlimited.refusal() is None


def _admission_of(app: Starlette) -> AdmissionControl:
    layer = app.middleware_stack
    while not isinstance(layer, AdmissionControl):
        layer = layer.app  # type: ignore[union-attr]
    return layer


@needs_tcp_info
def test_a_served_gateway_refuses_while_connections_queue_unaccepted(tmp_path: Path) -> None:
    """Through uvicorn: the gateway finds its own listening socket at the first request and
    refuses, in the API's envelope, while more connections than allowed wait on it."""
    settings = gateway_settings(f"sqlite:///{tmp_path / 'l.db'}", gateway={"max_accept_queue": 1})
    fake = fx.FakeAnthropic()
    engine = fake_engine(settings, fake, FakeOpenAI())
    app = create_app(settings, engine=engine)
    fake.reply_message(fx.text_message("first")).reply_message(fx.text_message("last"))
    with serve_app(app, engine) as url:
        claude = anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0)
        assert claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
        admission = _admission_of(app)
        port = int(url.rsplit(":", 1)[1])
        assert admission.accept_queue.listener == listening_fd(port) is not None
        admission.lag.on_probe = None  # hold the depth as a probe would read it:
        admission.accept_queue.depth = 2  # two connections waiting
        with pytest.raises(anthropic.InternalServerError) as refused:
            claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
        assert refused.value.status_code == 503
        assert refused.value.response.headers["retry-after"] == "1"
        assert "2 connections wait to be accepted" in refused.value.message
        admission.accept_queue.depth = 0
        answer = claude.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
        assert answer.content[0].text == "last"  # type: ignore[union-attr]
    assert len(fake.requests) == 2  # the refused one never reached the upstream
