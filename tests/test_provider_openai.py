"""OpenAICompatProvider through the real ``openai`` SDK against a fake Chat Completions API.

Every behaviour is exercised both in process (``httpx2.MockTransport``) and over a real socket
(the loopback server); the fake speaks OpenAI's JSON, SSE and error envelopes.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes import faults
from tests.fakes import openai_upstream as fx
from tests.fakes.loopback import serve
from tierwise.catalog import ModelSpec, load_catalog
from tierwise.errors import (
    AuthenticationError,
    ContextLengthError,
    MalformedResponseError,
    ProviderError,
    RateLimitError,
    ServerError,
    UpstreamConnectionError,
)
from tierwise.messages import MessageStart, Request, StreamEvent, TextBlock
from tierwise.providers.base import Provider, ProviderConfig
from tierwise.providers.openai_compat import NO_KEY, OpenAICompatProvider
from tierwise.providers.retry import RetryingProvider
from tierwise.providers.transport import HttpMode
from tierwise.streaming import collect
from tierwise.wire.openai import response_from_openai

MODEL = ModelSpec(id="openai:gpt-4o-mini")
GPT5 = ("gpt-5-nano", "gpt-5-mini", "gpt-5")
CONFIG_HEADERS = {"X-Title": "tierwise-tests"}


def request_id(n: int) -> str:
    """The ``x-request-id`` the fake stamps on its ``n``-th answer."""
    return f"req_{n:032x}"


def make_provider(
    base_url: str,
    *,
    api_key: str | None = "sk-test",
    fake: fx.FakeOpenAI | None = None,
    http: HttpMode = "sdk",
) -> OpenAICompatProvider:
    config = ProviderConfig(kind="openai", base_url=base_url, headers=CONFIG_HEADERS, http=http)
    client = fake.client() if fake is not None else None
    return OpenAICompatProvider("openai", config, api_key, http_client=client)


@pytest.fixture
def fake() -> fx.FakeOpenAI:
    return fx.FakeOpenAI()


@pytest.fixture(params=["mock", "loopback", "direct"])
def mode(request: pytest.FixtureRequest) -> str:
    """``mock``: the SDK over an in-process transport; ``loopback``: the SDK over a real
    socket; ``direct``: the direct (aiohttp) transport over a real socket."""
    return str(request.param)


@pytest.fixture
def base_url(mode: str, fake: fx.FakeOpenAI) -> Iterator[str]:
    if mode == "mock":
        yield "https://api.openai.test/v1"
        return
    with serve(fake.handler) as url:
        yield f"{url}/v1"


@pytest.fixture
async def provider(
    mode: str, base_url: str, fake: fx.FakeOpenAI
) -> AsyncIterator[OpenAICompatProvider]:
    http: HttpMode = "direct" if mode == "direct" else "sdk"
    built = make_provider(base_url, fake=fake if mode == "mock" else None, http=http)
    yield built
    await built.aclose()


async def events_until_error(
    stream: AsyncIterator[StreamEvent],
) -> tuple[list[StreamEvent], ProviderError]:
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as caught:
        async for event in stream:
            seen.append(event)
    return seen, caught.value


def prompt() -> Request:
    return Request.from_prompt(
        "Say hi",
        system=[TextBlock(text="Be brief.")],
        max_tokens=50,
        extra={"seed": 3, "response_format": {"type": "text"}},
        headers={"X-Trace-Id": "trace-1"},
    )


def parallel_tools_completion() -> dict:
    calls = [
        fx.tool_call("get_weather", {"city": "Paris"}, call_id="call_a"),
        fx.tool_call("get_weather", {"city": "Oslo"}, call_id="call_b"),
    ]
    return fx.completion(
        "Checking.", tool_calls=calls, token_usage=fx.usage(300, 40, cached_tokens=256)
    )


# --- success ---------------------------------------------------------------------------------


async def test_complete_returns_the_canonical_response(provider, fake):
    fake.reply_completion(
        fx.completion("Hi there!", token_usage=fx.usage(1200, 8, cached_tokens=1024))
    )
    response = await provider.complete(prompt(), MODEL)
    assert response.model == "openai:gpt-4o-mini"
    assert response.model_extra["upstream_model"] == fx.MODEL
    assert response.model_extra["request_id"] == request_id(1)
    assert response.text() == "Hi there!"
    assert response.stop_reason == "end_turn"
    assert (response.usage.input_tokens, response.usage.cache_read_tokens) == (176, 1024)


async def test_the_upstream_receives_the_openai_body_and_headers(provider, fake, base_url):
    fake.reply_completion(fx.completion())
    await provider.complete(prompt(), MODEL)
    (received,) = fake.requests
    assert received.method == "POST"
    assert received.url == f"{base_url}/chat/completions"
    assert received.json() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hi"},
        ],
        "max_tokens": 50,
        "seed": 3,
        "response_format": {"type": "text"},
    }
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.headers["x-title"] == "tierwise-tests"
    assert received.headers["x-trace-id"] == "trace-1"


async def test_tool_calls_come_back_as_tool_use_blocks(provider, fake):
    fake.reply_completion(parallel_tools_completion())
    response = await provider.complete(prompt(), MODEL)
    assert response.stop_reason == "tool_use"
    assert [(c.id, c.input) for c in response.tool_calls()] == [
        ("call_a", {"city": "Paris"}),
        ("call_b", {"city": "Oslo"}),
    ]


@pytest.mark.parametrize(
    "body",
    [fx.completion("A longer answer, streamed in pieces."), parallel_tools_completion()],
    ids=["text", "parallel-tools"],
)
async def test_stream_collects_to_the_json_result(provider, fake, body):
    fake.reply_completion(copy.deepcopy(body)).reply_completion(copy.deepcopy(body))
    whole = await provider.complete(prompt(), MODEL)
    streamed = await collect(provider.stream(prompt(), MODEL))
    skip = {"openai", "request_id"}
    assert streamed.model_dump(exclude=skip) == whole.model_dump(exclude=skip)
    assert streamed.model_extra["request_id"] == request_id(2)
    assert streamed.usage == response_from_openai(body, MODEL.id).usage
    sent = fake.last_request.json()
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_client_transport_fields_are_not_passed_through(provider, fake):
    fake.reply_completion(fx.completion()).reply_completion(fx.completion())
    request = prompt().model_copy(
        update={"extra": {"stream": True, "stream_options": {"include_obfuscation": False}}}
    )
    await provider.complete(request, MODEL)
    assert not {"stream", "stream_options"} & set(fake.requests[0].json())
    await collect(provider.stream(request, MODEL))
    assert fake.requests[1].json()["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


# --- upstream errors: one attempt each, translated -------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_429_is_a_rate_limit_error_with_retry_after(provider, fake, streaming):
    fake.reply_error(
        429,
        "Rate limit reached for gpt-4o-mini on tokens per min (TPM): Limit 200000.",
        "tokens",
        code="rate_limit_exceeded",
        headers={"retry-after": "7"},
    )
    with pytest.raises(RateLimitError) as caught:
        if streaming:
            await collect(provider.stream(prompt(), MODEL))
        else:
            await provider.complete(prompt(), MODEL)
    error = caught.value
    assert (error.status, error.retry_after, error.request_id) == (429, 7.0, request_id(1))
    assert (error.provider, error.model) == ("openai", "gpt-4o-mini")
    assert error.message.startswith("Rate limit reached")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "message", "error_type", "code", "expected"),
    [
        (
            500,
            "The server had an error while processing your request.",
            "server_error",
            None,
            ServerError,
        ),
        (
            400,
            "This model's maximum context length is 128000 tokens. "
            "However, your messages resulted in 130412 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            ContextLengthError,
        ),
        (
            401,
            "Incorrect API key provided: sk-proj-****abcd.",
            "invalid_request_error",
            "invalid_api_key",
            AuthenticationError,
        ),
    ],
    ids=["500", "400-context", "401"],
)
async def test_status_errors_are_translated(
    provider, fake, status, message, error_type, code, expected
):
    fake.reply_error(status, message, error_type, code=code)
    with pytest.raises(expected) as caught:
        await provider.complete(prompt(), MODEL)
    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.request_id) == (status, request_id(1))
    assert caught.value.message == message
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "content",
    [
        b"<html><body>502 Bad Gateway</body></html>",
        b'{"id": "chatcmpl-1", "object": "chat.completion"}',
    ],
)
async def test_a_malformed_body_is_a_malformed_response_error(provider, fake, content):
    fake.reply_raw(200, content)
    with pytest.raises(MalformedResponseError) as caught:
        await provider.complete(prompt(), MODEL)
    assert caught.value.request_id == request_id(1)
    assert caught.value.provider == "openai"


async def test_an_error_envelope_in_a_200_body_is_raised_as_what_it_says(provider, fake):
    fake.reply_raw(200, b'{"error": {"message": "Provider returned error", "code": 502}}')
    with pytest.raises(ServerError) as caught:
        await provider.complete(prompt(), MODEL)
    assert (caught.value.status, caught.value.message) == (502, "Provider returned error")


# --- broken streams --------------------------------------------------------------------------


async def test_a_stream_cut_before_done_raises(provider, fake):
    fake.reply_chunks(fx.stream_chunks(fx.completion("Hello there, friend"))[:3], done=False)
    seen, error = await events_until_error(provider.stream(prompt(), MODEL))
    assert type(error) is UpstreamConnectionError
    assert error.request_id == request_id(1)
    assert isinstance(seen[0], MessageStart)


async def test_a_stream_that_ends_without_finish_reason_raises(provider, fake):
    fake.reply_chunks(fx.stream_chunks(fx.completion("Hello"), include_usage=False)[:-1])
    _, error = await events_until_error(provider.stream(prompt(), MODEL))
    assert type(error) is MalformedResponseError
    assert "finish_reason" in error.message


async def test_an_error_event_inside_a_stream_raises(provider, fake):
    chunks = fx.stream_chunks(fx.completion("Hello"))[:2]
    in_band = fx.error_body(
        "The server had an error while processing your request.", "server_error"
    )
    fake.reply_chunks([*chunks, in_band])
    seen, error = await events_until_error(provider.stream(prompt(), MODEL))
    assert type(error) is ServerError
    assert error.message.startswith("The server had an error")
    assert len(seen) == 3


async def test_a_dropped_connection_mid_stream_raises_a_connection_error(fake):
    provider = make_provider("https://api.openai.test/v1", fake=fake)
    fake.reply_chunks(fx.stream_chunks(fx.completion("Hello there"))[:2], done=False, drop=True)
    seen, error = await events_until_error(provider.stream(prompt(), MODEL))
    await provider.aclose()
    assert type(error) is UpstreamConnectionError
    assert isinstance(seen[0], MessageStart)


@pytest.mark.parametrize("ending", ["cut", "reset"])
@pytest.mark.parametrize("http", ["sdk", "direct"])
async def test_a_connection_cut_or_reset_mid_stream_raises_a_connection_error(fake, http, ending):
    parts = faults.split_events(fx.sse_body(fx.stream_chunks(fx.completion("Hello there"))))
    fake.reply(faults.paced(parts[:2], ending=ending, request_id_header="x-request-id"))
    with serve(fake.handler) as url:
        provider = make_provider(f"{url}/v1", http=http)
        seen, error = await events_until_error(provider.stream(prompt(), MODEL))
        await provider.aclose()
    assert type(error) is UpstreamConnectionError
    assert isinstance(seen[0], MessageStart)
    assert error.retryable


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("http", ["sdk", "direct"])
@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_connection_refused_is_an_upstream_connection_error(streaming, http):
    provider = make_provider(f"http://127.0.0.1:{closed_port()}/v1", http=http)
    with pytest.raises(UpstreamConnectionError) as caught:
        if streaming:
            await collect(provider.stream(prompt(), MODEL))
        else:
            await provider.complete(prompt(), MODEL)
    await provider.aclose()
    assert (caught.value.provider, caught.value.model) == ("openai", "gpt-4o-mini")
    assert caught.value.retryable


# --- configuration ---------------------------------------------------------------------------


async def test_a_host_without_key_gets_a_placeholder_not_the_environment_key(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    provider = make_provider("http://localhost:11434/v1", api_key=None, fake=fake)
    fake.reply_completion(fx.completion(model="llama3.2:3b"))
    response = await provider.complete(prompt(), MODEL)
    await provider.aclose()
    assert fake.last_request.headers["authorization"] == f"Bearer {NO_KEY}"
    assert fake.last_request.url == "http://localhost:11434/v1/chat/completions"
    assert response.model_extra["upstream_model"] == "llama3.2:3b"


async def test_base_url_with_a_path_prefix_is_respected(fake):
    provider = make_provider("https://openrouter.test/api/v1", fake=fake)
    fake.reply_completion(fx.completion())
    await provider.complete(prompt(), MODEL)
    await provider.aclose()
    assert fake.last_request.url == "https://openrouter.test/api/v1/chat/completions"


async def test_direct_keyless_host_and_path_prefix(fake, monkeypatch):
    """The direct path too sends the placeholder key, never the environment's, and keeps the
    base URL's path prefix."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    fake.reply_completion(fx.completion())
    with serve(fake.handler) as url:
        provider = make_provider(f"{url}/api/v1", api_key=None, http="direct")
        await provider.complete(prompt(), MODEL)
        await provider.aclose()
    assert fake.last_request.headers["authorization"] == f"Bearer {NO_KEY}"
    assert fake.last_request.url == f"{url}/api/v1/chat/completions"


async def test_the_retry_layer_retries_a_server_error_once(fake):
    inner = make_provider("https://api.openai.test/v1", fake=fake)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    provider = RetryingProvider(inner, max_retries=1, sleep=sleep)
    fake.reply_error(503, "Service unavailable", "server_error").reply_completion(
        fx.completion("ok")
    )
    response = await provider.complete(prompt(), MODEL)
    await provider.aclose()
    assert response.text() == "ok"
    assert len(fake.requests) == 2
    assert len(waits) == 1


async def test_provider_satisfies_the_protocol_and_aclose_closes_its_client(fake):
    client = fake.client()
    config = ProviderConfig(kind="openai", base_url="https://api.openai.test/v1")
    provider = OpenAICompatProvider("openai", config, "sk-test", http_client=client)
    assert isinstance(provider, Provider)
    await provider.aclose()
    assert client.is_closed


async def test_a_reasoning_model_gets_max_completion_tokens_and_no_sampling_fields(provider, fake):
    """OpenAI's reasoning models refuse ``max_tokens``, ``temperature``, ``top_p`` and ``stop``
    (400 ``unsupported_parameter``); an older chat model gets them as asked."""
    fake.reply_completion(fx.completion()).reply_completion(fx.completion())
    request = Request.from_prompt("Say hi", max_tokens=64, temperature=0.2, top_p=0.9, stop=["X"])
    reasoning = ModelSpec.model_validate(
        {"id": "openai:gpt-5-mini", "capabilities": {"thinking": True, "openai_reasoning": True}}
    )
    await provider.complete(request, reasoning)
    await provider.complete(request, MODEL)
    to_reasoning, to_chat = (r.json() for r in fake.requests)
    assert to_reasoning["max_completion_tokens"] == 64
    assert not {"max_tokens", "temperature", "top_p", "stop"} & to_reasoning.keys()
    assert (to_chat["max_tokens"], to_chat["temperature"], to_chat["stop"]) == (64, 0.2, ["X"])
    assert "max_completion_tokens" not in to_chat


def test_the_catalogs_gpt5_models_are_openai_reasoning_models():
    catalog = load_catalog()
    assert all(catalog.get(f"openai:{m}").capabilities.openai_reasoning for m in GPT5)
    assert not catalog.get("openai:gpt-4.1").capabilities.openai_reasoning
