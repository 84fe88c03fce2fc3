"""The gateway served by uvicorn on 127.0.0.1 (a free port, in a thread) over fake upstreams.

:func:`running_gateway` wires the real engine to :class:`FakeAnthropic` and
:class:`FakeOpenAI` (in process, through the official SDKs' HTTP client) and serves
``create_app`` with uvicorn; tests then point the real ``anthropic`` and ``openai`` clients
at it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai
import uvicorn

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tierwise.config import Settings, load_settings
from tierwise.engine import Engine
from tierwise.gateway.app import create_app
from tierwise.gateway.serving import client_timeouts
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider

ADMIN_KEY = "tw-admin-test-0123456789"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-secret"
UPSTREAM_OPENAI_KEY = "sk-openai-upstream-secret"


@dataclass
class Served:
    """A running gateway and the fakes behind it."""

    url: str
    anthropic_fake: FakeAnthropic
    openai_fake: FakeOpenAI
    settings: Settings
    engine: Engine | None = None

    def flush_ledger(self) -> None:
        """Wait for the gateway's write-behind ledger records (a reader elsewhere sees them)."""
        if self.engine is not None:
            self.engine.ledger.flush(10)

    def anthropic(self, key: str | None = ADMIN_KEY, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, **options)

    def openai(self, key: str = ADMIN_KEY, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **options)

    def http(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, timeout=10)


def fake_engine(settings: Settings, fa: FakeAnthropic, fo: FakeOpenAI) -> Engine:
    """The real engine whose Anthropic and OpenAI providers talk to the fakes in process."""
    anthropic_http = httpx2.AsyncClient(transport=httpx2.MockTransport(fa.handler))
    openai_http = httpx2.AsyncClient(transport=httpx2.MockTransport(fo.handler))
    providers = {
        "anthropic": AnthropicProvider(
            "anthropic",
            ProviderConfig(kind="anthropic", base_url="http://anthropic.fake"),
            UPSTREAM_ANTHROPIC_KEY,
            http_client=anthropic_http,
        ),
        "openai": OpenAICompatProvider(
            "openai",
            ProviderConfig(kind="openai", base_url="http://openai.fake/v1"),
            UPSTREAM_OPENAI_KEY,
            http_client=openai_http,
        ),
    }
    return Engine(settings, providers=providers)


@contextmanager
def serve_app(app: Any, engine: Engine | None = None, http: str = "httptools") -> Iterator[str]:
    """Serve ``app`` (``create_app``'s) with uvicorn on 127.0.0.1 (its ``http`` protocol), its
    ``[gateway]`` timeouts for slow clients as ``tierwise serve`` sets them; yields its base
    URL. ``engine`` is closed on the server's own loop when it stops."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    timeouts = client_timeouts(app.state.gateway.config, http)
    # no proxy_headers, as ``tierwise serve`` runs it: [gateway] trusted_proxies decides
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", proxy_headers=False, **timeouts
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            if engine is not None:
                await engine.aclose()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def assert_upstream_credentials(headers: httpx2.Headers, upstream_key: str) -> None:
    """The upstream saw the gateway's own provider key and no trace of the client's key."""
    values = [value for _, value in headers.multi_items()]
    assert any(upstream_key in value for value in values)
    assert not any(ADMIN_KEY in value for value in values)


def gateway_settings(ledger_url: str, **flags: Any) -> Settings:
    """Settings with the admin key set and ``flags`` (e.g. ``gateway={...}``) on top."""
    return load_settings(None, ledger_url=ledger_url, admin_key=ADMIN_KEY, **flags)


@contextmanager
def running_gateway(settings: Settings, http: str = "httptools") -> Iterator[Served]:
    fa, fo = FakeAnthropic(), FakeOpenAI()
    engine = fake_engine(settings, fa, fo)
    with serve_app(create_app(settings, engine=engine), engine, http) as url:
        yield Served(url, fa, fo, settings, engine)
