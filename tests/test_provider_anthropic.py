"""AnthropicProvider through the real SDK, against the fake upstream in process and on a socket."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx2
import pytest

from tests.fakes import anthropic_upstream as fx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve
from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    MalformedResponseError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ServerError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
)
from tierwise.messages import (
    AdvisorToolResultBlock,
    BlockDelta,
    BlockStart,
    MessageStart,
    Request,
    Tool,
    UsageIteration,
)
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import Provider, ProviderConfig
from tierwise.streaming import collect
from tierwise.wire.anthropic import request_from_anthropic

KEY = "sk-ant-test-key"
CONFIG = ProviderConfig(kind="anthropic", headers={"x-team": "routing"}, timeout_s=42.0)


@pytest.fixture
def sonnet(catalog: Catalog) -> ModelSpec:
    return catalog.get("anthropic:claude-sonnet-4-6")


@pytest.fixture(params=["mock_transport", "loopback", "direct"])
async def upstream(request) -> AsyncIterator[tuple[FakeAnthropic, AnthropicProvider]]:
    """The fake behind the real SDK (in process, or over a real 127.0.0.1 socket), or behind
    the direct (aiohttp) transport over a real socket."""
    fake = FakeAnthropic()
    if request.param == "mock_transport":
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
        config = CONFIG.model_copy(update={"base_url": "http://anthropic.fake"})
        provider = AnthropicProvider("anthropic", config, KEY, http_client=client)
        yield fake, provider
        await provider.aclose()
    else:
        with serve(fake.handler) as base_url:
            http = "direct" if request.param == "direct" else "sdk"
            config = CONFIG.model_copy(update={"base_url": base_url, "http": http})
            provider = AnthropicProvider("anthropic", config, KEY)
            yield fake, provider
            await provider.aclose()


def _prompt(**fields) -> Request:
    return Request.from_prompt("What's 17 * 23?", max_tokens=512, **fields)


# --- success paths -----------------------------------------------------------------------


async def test_is_a_provider(upstream):
    _, provider = upstream
    assert isinstance(provider, Provider)


async def test_complete_sends_the_wire_body_and_returns_the_canonical_response(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.text_message("391"))

    response = await provider.complete(_prompt(temperature=0.2), sonnet)

    assert response.text() == "391"
    assert response.model == "anthropic:claude-sonnet-4-6"
    assert response.model_extra["upstream_model"] == "claude-sonnet-4-6"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (25, 12)
    sent = fake.last_request
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.json() == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 512,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What's 17 * 23?"}]}],
    }


async def test_requests_carry_key_config_headers_version_and_timeout(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.text_message())

    await provider.complete(_prompt(), sonnet)

    headers = fake.last_request.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-team"] == "routing"
    assert headers["anthropic-version"]
    if "x-stainless-read-timeout" in headers:  # the SDK path says its read timeout
        assert headers["x-stainless-read-timeout"] == "42.0"
    else:  # the direct path names itself
        assert headers["user-agent"].startswith("tierwise/")


@pytest.mark.parametrize(
    "message",
    [fx.text_message(), fx.tool_use_message(), fx.thinking_message(), fx.advisor_message()],
    ids=["text", "tool_use", "thinking", "advisor"],
)
async def test_stream_collects_to_the_same_response_as_complete(upstream, sonnet, message):
    fake, provider = upstream
    fake.reply_message(message).reply_message(message)

    whole = await provider.complete(_prompt(), sonnet)
    streamed = await collect(provider.stream(_prompt(), sonnet))

    assert streamed == whole
    assert [r.json().get("stream") for r in fake.requests] == [None, True]


async def test_stream_yields_canonical_events_in_wire_order(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.thinking_message())

    events = [event async for event in provider.stream(_prompt(), sonnet)]

    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in kinds
    assert isinstance(events[0], MessageStart)
    assert events[0].message.model == "anthropic:claude-sonnet-4-6"
    signature = [
        e for e in events if isinstance(e, BlockDelta) and e.delta["type"] == "signature_delta"
    ]
    assert signature[0].delta["signature"] == fx.thinking_message()["content"][0]["signature"]


async def test_tool_calls_come_back_with_their_input(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.tool_use_message("get_weather", {"location": "Oslo", "unit": None}))
    tool = Tool(name="get_weather", input_schema={"type": "object"})

    response = await provider.complete(_prompt(tools=[tool]), sonnet)

    assert response.stop_reason == "tool_use"
    [call] = response.tool_calls()
    assert (call.name, call.input) == ("get_weather", {"location": "Oslo", "unit": None})
    assert fake.last_request.json()["tools"] == [
        {"name": "get_weather", "input_schema": {"type": "object"}}
    ]


async def test_advisor_beta_header_extra_body_and_iterations(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.advisor_message())
    advisor = Tool.model_validate(fx.claude_code_request()["tools"][-1])
    request = _prompt(
        tools=[advisor],
        headers={"anthropic-beta": fx.ADVISOR_BETA},
        extra={"context_management": {"edits": []}, "top_k": 40},
    )

    response = await provider.complete(request, sonnet)

    sent = fake.last_request
    assert sent.headers["anthropic-beta"] == fx.ADVISOR_BETA
    assert sent.json()["context_management"] == {"edits": []}
    assert sent.json()["top_k"] == 40
    assert sent.json()["tools"] == [fx.claude_code_request()["tools"][-1]]
    assert isinstance(response.content[2], AdvisorToolResultBlock)
    assert response.content[2].content == fx.advisor_result()
    assert response.usage.iterations[1] == UsageIteration(
        kind="advisor_message",
        model="claude-opus-4-7",
        input_tokens=9400,
        output_tokens=620,
        cache_write_1h_tokens=2800,
    )
    assert [i.model for i in response.usage.iterations] == [None, "claude-opus-4-7", None]


async def test_claude_code_request_reaches_the_upstream_unchanged(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.text_message())
    body = fx.claude_code_request()
    request = request_from_anthropic(body, model=sonnet.id).model_copy(
        update={"headers": fx.CLAUDE_CODE_HEADERS}
    )

    await collect(provider.stream(request, sonnet))

    assert fake.last_request.json() == body
    assert fake.last_request.headers["anthropic-beta"] == fx.CLAUDE_CODE_HEADERS["anthropic-beta"]


async def test_max_tokens_defaults_to_the_catalog_maximum(upstream, sonnet):
    fake, provider = upstream
    fake.reply_message(fx.text_message())

    await provider.complete(Request.from_prompt("hi"), sonnet)

    assert sonnet.max_output_tokens is not None
    assert fake.last_request.json()["max_tokens"] == sonnet.max_output_tokens


async def test_missing_max_tokens_without_a_catalog_maximum_is_refused_before_sending(upstream):
    fake, provider = upstream
    bare = ModelSpec(id="anthropic:claude-custom")

    with pytest.raises(InvalidRequestError, match="max_tokens"):
        await provider.complete(Request.from_prompt("hi"), bare)
    assert fake.requests == []


# --- errors --------------------------------------------------------------------------------


def _assert_one_attempt(fake: FakeAnthropic) -> None:
    assert len(fake.requests) == 1
    # the SDK says which attempt this is; the direct path makes one and says nothing
    assert fake.requests[0].headers.get("x-stainless-retry-count", "0") == "0"


async def test_429_is_a_rate_limit_error_with_retry_after_and_request_id(upstream, sonnet):
    fake, provider = upstream
    fake.reply_error(
        429, "rate_limit_error", "Number of requests exceeded", headers={"retry-after": "17"}
    )

    with pytest.raises(RateLimitError) as info:
        await provider.complete(_prompt(), sonnet)

    error = info.value
    assert (error.status, error.retry_after, error.request_id) == (429, 17.0, "req_fake000001")
    assert (error.provider, error.model) == ("anthropic", "claude-sonnet-4-6")
    assert error.message == "Number of requests exceeded"
    assert error.retryable
    _assert_one_attempt(fake)


@pytest.mark.parametrize(
    ("status", "error_type", "message", "cls"),
    [
        (500, "api_error", "Internal server error", ServerError),
        (529, "overloaded_error", "Overloaded", OverloadedError),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210012 tokens > 200000 maximum",
            ContextLengthError,
        ),
        (401, "authentication_error", "invalid x-api-key", AuthenticationError),
    ],
)
async def test_status_errors_map_to_the_error_tree(
    upstream, sonnet, status, error_type, message, cls
):
    fake, provider = upstream
    fake.reply_error(status, error_type, message)

    with pytest.raises(ProviderError) as info:
        await provider.complete(_prompt(), sonnet)

    assert type(info.value) is cls
    assert (info.value.status, info.value.message) == (status, message)
    assert info.value.request_id == "req_fake000001"
    _assert_one_attempt(fake)


async def test_status_error_on_a_stream_is_raised_on_first_iteration(upstream, sonnet):
    fake, provider = upstream
    fake.reply_error(529, "overloaded_error", "Overloaded")

    with pytest.raises(OverloadedError):
        await collect(provider.stream(_prompt(), sonnet))
    _assert_one_attempt(fake)


@pytest.mark.parametrize(
    "body", [b'{"id": "msg_1", "content": [', b"<html>502 Bad Gateway</html>", b"[]"]
)
async def test_malformed_body_is_a_malformed_response_error(upstream, sonnet, body):
    fake, provider = upstream
    fake.reply_raw(200, body)

    with pytest.raises(MalformedResponseError) as info:
        await provider.complete(_prompt(), sonnet)

    assert (info.value.status, info.value.request_id) == (200, "req_fake000001")
    assert not info.value.retryable
    _assert_one_attempt(fake)


async def test_json_that_is_not_a_message_is_malformed(upstream, sonnet):
    fake, provider = upstream
    fake.reply_raw(200, b'{"content": [{"type": "text"}]}')

    with pytest.raises(MalformedResponseError, match="unreadable Anthropic message"):
        await provider.complete(_prompt(), sonnet)


async def test_error_event_mid_stream_raises_after_the_events_before_it(upstream, sonnet):
    fake, provider = upstream
    events = fx.stream_events(fx.text_message("partial answer"))[:4]
    fake.reply_stream([*events, fx.error_body("overloaded_error", "Overloaded")])
    seen = []

    with pytest.raises(OverloadedError) as info:
        async for event in provider.stream(_prompt(), sonnet):
            seen.append(event)

    assert [e.type for e in seen] == ["message_start", "content_block_start", "content_block_delta"]
    assert (info.value.status, info.value.request_id) == (529, "req_fake000001")


async def test_stream_cut_before_message_stop_is_a_connection_error(upstream, sonnet):
    fake, provider = upstream
    fake.reply_stream(fx.stream_events(fx.text_message())[:-2])

    with pytest.raises(UpstreamConnectionError, match="before message_stop"):
        await collect(provider.stream(_prompt(), sonnet))


async def test_garbage_in_a_stream_is_malformed(upstream, sonnet):
    fake, provider = upstream
    fake.reply_raw(
        200, b"event: message_start\ndata: {not json\n\n", content_type="text/event-stream"
    )

    with pytest.raises(MalformedResponseError, match="not a JSON object"):
        await collect(provider.stream(_prompt(), sonnet))


class _CountingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner
        self.attempts = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.attempts += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_is_an_upstream_connection_error_after_one_attempt(sonnet):
    transport = _CountingTransport(httpx2.AsyncHTTPTransport())
    config = CONFIG.model_copy(update={"base_url": f"http://127.0.0.1:{_closed_port()}"})
    provider = AnthropicProvider(
        "local", config, KEY, http_client=httpx2.AsyncClient(transport=transport)
    )

    with pytest.raises(UpstreamConnectionError) as info:
        await provider.complete(_prompt(), sonnet)

    assert type(info.value) is UpstreamConnectionError
    assert (info.value.provider, info.value.retryable) == ("local", True)
    assert transport.attempts == 1
    await provider.aclose()


async def test_timeout_is_an_upstream_timeout_error_after_one_attempt(sonnet):
    attempts = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        attempts.append(request)
        raise httpx2.ReadTimeout("timed out", request=request)

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    provider = AnthropicProvider("anthropic", CONFIG, KEY, http_client=client)

    with pytest.raises(UpstreamTimeoutError):
        await provider.complete(_prompt(), sonnet)
    assert len(attempts) == 1
    await provider.aclose()


# --- credentials and lifecycle ---------------------------------------------------------------


async def test_keyless_provider_sends_no_credentials_even_with_a_key_in_the_env(
    sonnet, monkeypatch
):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    fake = FakeAnthropic().reply_message(fx.text_message())
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    config = ProviderConfig(kind="anthropic", base_url="http://local.fake", requires_key=False)
    provider = AnthropicProvider("local", config, None, http_client=client)

    await provider.complete(_prompt(), sonnet)

    assert "authorization" not in fake.last_request.headers
    assert "x-api-key" not in fake.last_request.headers
    await provider.aclose()


async def test_aclose_closes_the_http_client(sonnet):
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(FakeAnthropic().handler))
    provider = AnthropicProvider("anthropic", CONFIG, KEY, http_client=client)

    await provider.aclose()

    assert client.is_closed


class _TrackedBody(httpx2.AsyncByteStream):
    """A streamed response body that remembers whether it was closed."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for line in self.content.splitlines(keepends=True):
            yield line

    async def aclose(self) -> None:
        self.closed = True


async def test_abandoned_stream_closes_its_response(sonnet):
    body = _TrackedBody(fx.sse_body(fx.stream_events(fx.text_message())))

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    client = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    provider = AnthropicProvider("anthropic", CONFIG, KEY, http_client=client)
    stream = provider.stream(_prompt(), sonnet)

    assert isinstance(await anext(stream), MessageStart)
    assert isinstance(await anext(stream), BlockStart)
    assert not body.closed
    await stream.aclose()

    assert body.closed
    await provider.aclose()
