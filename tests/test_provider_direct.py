"""The direct (aiohttp) upstream transport: parity with the SDK path, pooling, and the gateway.

Completions, streams and the error kinds are proven on both transports by the parametrized
``test_provider_openai.py`` and ``test_provider_anthropic.py``; this file covers what is the
direct path's own: the headers sent compared with the SDKs', connection reuse, timeouts,
configuration, and a gateway worker that never imports an SDK.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes import openai_upstream as ofx
from tests.fakes.loopback import serve
from tierwise.catalog import ModelSpec, load_catalog
from tierwise.config import load_settings
from tierwise.errors import (
    ConfigError,
    RateLimitError,
    ServerError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
)
from tierwise.messages import MessageStart, Request
from tierwise.providers import direct
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import Provider, ProviderConfig
from tierwise.providers.factory import direct_by_default
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.streaming import collect
from tierwise.wire.openai_stream import SSEEvent, SSEParser

ROOT = Path(__file__).parents[1]
GPT = ModelSpec(id="openai:gpt-4o-mini")
HAIKU = load_catalog().get("anthropic:claude-haiku-4-5")
HEADERS = {"x-team": "routing"}
CLIENT_ONLY = (
    "x-stainless-",
    "user-agent",
    "accept-encoding",
    "content-length",
    "host",
    "connection",
)
"""Headers that differ by client, not by meaning: the SDK's telemetry, the client's name,
framing (the bodies' bytes are compared as JSON instead)."""


def _prompt() -> Request:
    beta = {"anthropic-beta": "advisor-tool-2026-03-01"}
    return Request.from_prompt("Say hi", max_tokens=32, headers=beta)


def _openai(url: str, http: str, **row: Any) -> OpenAICompatProvider:
    config = ProviderConfig(kind="openai", base_url=f"{url}/v1", headers=HEADERS, http=http, **row)
    return OpenAICompatProvider("openai", config, "sk-test")


def _anthropic(url: str, http: str, key: str | None = "sk-ant", **row: Any) -> AnthropicProvider:
    config = ProviderConfig(kind="anthropic", base_url=url, headers=HEADERS, http=http, **row)
    return AnthropicProvider("anthropic", config, key)


async def _call(provider: Provider, model: ModelSpec, streaming: bool) -> None:
    if streaming:
        await collect(provider.stream(_prompt(), model))
    else:
        await provider.complete(_prompt(), model)


def _meaningful(headers: httpx2.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.lower().startswith(CLIENT_ONLY)}


@asynccontextmanager
async def _closing(provider: Provider) -> AsyncIterator[Provider]:
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture(autouse=True)
def _release_paused_replies() -> Iterator[None]:
    faults.RELEASE.clear()
    yield
    faults.RELEASE.set()


# --- what goes upstream --------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_openai_requests_match_the_sdks_headers_and_body(streaming):
    fake = ofx.FakeOpenAI()
    with serve(fake.handler) as url:
        for http in ("sdk", "direct"):
            fake.reply_completion(ofx.completion("Hi"))
            async with _closing(_openai(url, http)) as provider:
                await _call(provider, GPT, streaming)
    via_sdk, via_direct = fake.requests
    assert _meaningful(via_direct.headers) == _meaningful(via_sdk.headers)
    assert via_direct.headers["authorization"] == "Bearer sk-test"
    assert via_direct.headers["x-team"] == "routing"
    assert via_direct.headers["user-agent"].startswith("tierwise/")
    assert via_direct.json() == via_sdk.json()


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_anthropic_requests_match_the_sdks_headers_and_body(streaming):
    fake = afx.FakeAnthropic()
    with serve(fake.handler) as url:
        for http in ("sdk", "direct"):
            fake.reply_message(afx.text_message())
            async with _closing(_anthropic(url, http)) as provider:
                await _call(provider, HAIKU, streaming)
    via_sdk, via_direct = fake.requests
    assert _meaningful(via_direct.headers) == _meaningful(via_sdk.headers)
    assert via_direct.headers["anthropic-beta"] == "advisor-tool-2026-03-01"
    assert via_direct.headers["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert via_direct.headers["authorization"] == "Bearer sk-ant"
    assert via_direct.json() == via_sdk.json()


async def test_a_keyless_anthropic_host_gets_no_credentials(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    fake = afx.FakeAnthropic().reply_message(afx.text_message())
    with serve(fake.handler) as url:
        async with _closing(_anthropic(url, "direct", key=None)) as provider:
            await provider.complete(_prompt(), HAIKU)
    assert "authorization" not in fake.last_request.headers
    assert "x-api-key" not in fake.last_request.headers


# --- errors the parametrized files do not script -------------------------------------------


@pytest.mark.parametrize("http", ["sdk", "direct"])
@pytest.mark.parametrize(
    ("headers", "expected"), [({"retry-after-ms": "1500"}, 1.5), ({"retry-after": "3"}, 3.0)]
)
async def test_retry_after_is_read_on_both_paths(http, headers, expected):
    fake = ofx.FakeOpenAI().reply_error(429, "slow down", "tokens", headers=headers)
    with serve(fake.handler) as url:
        async with _closing(_openai(url, http)) as provider:
            with pytest.raises(RateLimitError) as caught:
                await collect(provider.stream(_prompt(), GPT))
    assert caught.value.retry_after == expected
    assert caught.value.request_id == "req_" + "0" * 31 + "1"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_silent_upstream_is_an_upstream_timeout_after_one_attempt(kind, streaming):
    fake: Any = ofx.FakeOpenAI() if kind == "openai" else afx.FakeAnthropic()
    fake.reply(faults.silent(5))
    with serve(fake.handler) as url:
        build = _openai if kind == "openai" else _anthropic
        model = GPT if kind == "openai" else HAIKU
        async with _closing(build(url, "direct", timeout_s=0.2)) as provider:
            with pytest.raises(UpstreamTimeoutError) as caught:
                await _call(provider, model, streaming)
    assert caught.value.retryable
    assert caught.value.may_be_billed  # it reached the upstream, which may have run it
    assert (caught.value.provider, caught.value.model) == (kind, model.name)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("http", ["direct", "sdk"])
async def test_a_connect_timeout_is_an_upstream_timeout_that_cannot_be_billed(http):
    with _full_listener() as port:
        provider = _openai(f"http://127.0.0.1:{port}", http, connect_timeout_s=0.2, max_retries=0)
        async with _closing(provider):
            with pytest.raises(UpstreamTimeoutError) as caught:
                await provider.complete(_prompt(), GPT)
    assert not caught.value.may_be_billed  # the request never left
    assert caught.value.retryable


@contextmanager
def _full_listener() -> Iterator[int]:
    """A port whose accept queue is full: Linux drops new SYNs, so a connect hangs."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # room for one connection, taken by the filler, never accepted
        port = server.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        yield port


async def test_a_stream_that_stalls_mid_body_is_an_upstream_timeout():
    fake = afx.FakeAnthropic()
    parts = faults.split_events(afx.sse_body(afx.stream_events(afx.text_message())))
    fake.reply(faults.paced(parts[:3], ending="stall", stall_s=5))
    with serve(fake.handler) as url:
        async with _closing(_anthropic(url, "direct", timeout_s=0.2)) as provider:
            seen = []
            with pytest.raises(UpstreamTimeoutError):
                async for event in provider.stream(_prompt(), HAIKU):
                    seen.append(event)
    assert isinstance(seen[0], MessageStart)


async def test_connection_refused_is_an_upstream_connection_error_for_anthropic():
    with serve(afx.FakeAnthropic().handler) as url:
        pass  # the port is closed again
    async with _closing(_anthropic(url, "direct")) as provider:
        with pytest.raises(UpstreamConnectionError) as caught:
            await collect(provider.stream(_prompt(), HAIKU))
    assert type(caught.value) is UpstreamConnectionError
    assert caught.value.provider == "anthropic"


async def test_a_5xx_html_page_keeps_its_status_and_request_id():
    fake = afx.FakeAnthropic().reply_raw(502, b"<html>502 Bad Gateway</html>")
    with serve(fake.handler) as url:
        async with _closing(_anthropic(url, "direct")) as provider:
            with pytest.raises(ServerError) as caught:
                await provider.complete(_prompt(), HAIKU)
    assert (caught.value.status, caught.value.request_id) == (502, "req_fake000001")
    assert "502 Bad Gateway" in caught.value.message


# --- connection reuse ----------------------------------------------------------------------


class _CountingRelay:
    """A loopback TCP relay in front of ``target_port`` that counts the connections made."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _CountingRelay:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextmanager
def _served(fake: Any) -> Iterator[int]:
    with serve(fake.handler) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_completions_and_finished_streams_reuse_one_connection(kind):
    openai = kind == "openai"
    fake: Any = ofx.FakeOpenAI() if openai else afx.FakeAnthropic()
    for _ in range(4):
        fake.reply_completion(ofx.completion()) if openai else fake.reply_message(
            afx.text_message()
        )
    with _served(fake) as port:
        async with _CountingRelay(port) as relay:
            url = f"http://127.0.0.1:{relay.port}"
            provider = _openai(url, "direct") if openai else _anthropic(url, "direct")
            model = GPT if openai else HAIKU
            async with _closing(provider):
                for _ in range(2):
                    await provider.complete(_prompt(), model)
                    await collect(provider.stream(_prompt(), model))
    assert len(fake.requests) == 4
    assert relay.connections == 1


async def test_an_abandoned_stream_closes_its_connection_instead_of_pooling_it():
    fake = afx.FakeAnthropic()
    parts = faults.split_events(afx.sse_body(afx.stream_events(afx.text_message())))
    fake.reply(faults.paced(parts, gap=0.05)).reply_message(afx.text_message())
    with _served(fake) as port:
        async with _CountingRelay(port) as relay:
            provider = _anthropic(f"http://127.0.0.1:{relay.port}", "direct")
            async with _closing(provider):
                stream = provider.stream(_prompt(), HAIKU)
                assert isinstance(await anext(stream), MessageStart)
                await stream.aclose()
                response = await provider.complete(_prompt(), HAIKU)
    assert response.text()
    assert relay.connections == 2


# --- configuration -------------------------------------------------------------------------


def test_an_sdk_http_client_and_direct_do_not_go_together():
    config = ProviderConfig(kind="openai", base_url="http://x.test/v1", http="direct")
    with pytest.raises(ConfigError, match="http_client"):
        OpenAICompatProvider("openai", config, "sk", http_client=httpx2.AsyncClient())


def test_direct_by_default_sets_only_the_rows_that_leave_http_unset(tmp_path):
    rows = {
        "openai": {"kind": "openai", "api_key": "sk"},
        "local": {"kind": "openai", "base_url": "http://l.test/v1", "http": "sdk"},
    }
    settings = load_settings(None, ledger_url=f"sqlite:///{tmp_path / 'l.db'}", providers=rows)
    changed = direct_by_default(settings)
    assert changed.providers["openai"].http == "direct"
    assert changed.providers["local"].http == "sdk"
    assert settings.providers["openai"].http is None


async def test_aclose_closes_the_session_and_a_new_call_opens_another():
    fake = ofx.FakeOpenAI().reply_completion(ofx.completion()).reply_completion(ofx.completion())
    with serve(fake.handler) as url:
        provider = _openai(url, "direct")
        assert isinstance(provider, Provider)
        await provider.complete(_prompt(), GPT)
        await provider.aclose()
        await provider.complete(_prompt(), GPT)
        await provider.aclose()
    assert len(fake.requests) == 2


def test_the_user_agent_names_tierwise_and_aiohttp():
    assert direct.user_agent().startswith("tierwise/")
    assert " aiohttp/" in direct.user_agent()


# --- a gateway worker ----------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import asyncio, json, socket, sys, threading, time, urllib.request
    sys.path.insert(0, {bench!r})
    import fake_upstream
    import uvicorn
    from tierwise.config import load_settings
    from tierwise.gateway.app import create_app

    up = fake_upstream.listening_socket()
    options = fake_upstream.Options(latency_s=0.0, chunks=3, chunk_interval_s=0.0)
    threading.Thread(target=fake_upstream.run, args=(up, options), daemon=True).start()
    base = "http://127.0.0.1:%d" % up.getsockname()[1]
    providers = {{
        "openai": {{"kind": "openai", "base_url": base + "/v1", "api_key": "sk"}},
        "anthropic": {{"kind": "anthropic", "base_url": base, "api_key": "sk"}},
    }}
    settings = load_settings(
        None, ledger_url={ledger!r}, admin_key="tw-admin-0123456789", providers=providers
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    threading.Thread(target=server.run, kwargs={{"sockets": [sock]}}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    head = {{"authorization": "Bearer tw-admin-0123456789", "content-type": "application/json"}}
    hello = [{{"role": "user", "content": "Hi"}}]
    calls = [
        ("/v1/chat/completions", {{"model": "gpt-4.1-mini", "messages": hello}}),
        ("/v1/messages", {{"model": "claude-haiku-4-5", "max_tokens": 9, "messages": hello}}),
    ]
    answers = []
    for path, body in calls:
        for stream in (False, True):
            data = json.dumps(body | {{"stream": stream}}).encode()
            request = urllib.request.Request(url + path, data=data, headers=head)
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append([response.status, response.read().decode()])
    loaded = [m for m in ("openai", "anthropic", "httpx2") if m in sys.modules]
    print(json.dumps({{"answers": answers, "loaded": loaded}}))
    server.should_exit = True
    """
)


def test_a_gateway_worker_on_the_direct_path_never_imports_an_sdk(tmp_path):
    script = _WORKER.format(bench=str(ROOT / "bench"), ledger=f"sqlite:///{tmp_path / 'ledger.db'}")
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    statuses = [status for status, _ in report["answers"]]
    assert statuses == [200, 200, 200, 200]
    openai_complete, openai_stream, anthropic_complete, anthropic_stream = (
        text for _, text in report["answers"]
    )
    assert json.loads(openai_complete)["choices"][0]["message"]["content"] == "hello " * 3
    assert openai_stream.rstrip().endswith("data: [DONE]")
    assert json.loads(anthropic_complete)["content"][0]["text"] == "hello " * 3
    assert "event: message_stop" in anthropic_stream
    assert report["loaded"] == []


def test_the_environment_proxy_is_read_once_as_httpx_reads_it(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    proxy, headers = direct._env_proxy("https://api.openai.com/v1")
    assert str(proxy) == "http://proxy.test:3128"
    assert headers == {"proxy-authorization": "Basic dXNlcjpzZWNyZXQ="}
    assert direct._env_proxy("https://internal.test/v1") == (None, None)
    assert direct._env_proxy("http://127.0.0.1:8000/v1") == (None, None)


@pytest.mark.parametrize("http", ["sdk", "direct"])
async def test_a_host_holding_the_connection_after_message_stop_does_not_stall_the_stream(http):
    """After ``message_stop`` (as after ``[DONE]``) the body is drained for at most a second,
    then the stream ends cleanly: a stall there is not an error."""
    fake = afx.FakeAnthropic()
    parts = faults.split_events(afx.sse_body(afx.stream_events(afx.text_message("Done."))))
    fake.reply(faults.paced(parts, ending="stall", stall_s=10))
    with serve(fake.handler) as url:
        async with _closing(_anthropic(url, http)) as provider:
            response = await collect(provider.stream(_prompt(), HAIKU))
    assert response.text() == "Done."


def test_the_sse_parser_reads_raw_bytes_split_anywhere():
    """Both transports hand the providers raw body bytes in whatever pieces the network made."""
    body = (
        'event: message_start\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        ": a comment\n\nevent: ping\ndata: {}\n\ndata: caf\u00e9 \u2713\n\n"
    ).encode()
    for size in (1, 2, 3, 7, len(body)):
        parser = SSEParser()
        events = [
            e for i in range(0, len(body), size) for e in parser.feed_bytes(body[i : i + size])
        ]
        assert events == [
            SSEEvent("message_start", '{"a":\n1}'),
            SSEEvent("ping", "{}"),
            SSEEvent(None, "caf\u00e9 \u2713"),
        ]
