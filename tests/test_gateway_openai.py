"""The real OpenAI client against the gateway (uvicorn on 127.0.0.1) over a fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import (
    ADMIN_KEY,
    UPSTREAM_OPENAI_KEY,
    Served,
    assert_upstream_credentials,
    gateway_settings,
    running_gateway,
)
from tierwise.config import Settings
from tierwise.ledger.store import Ledger

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    with running_gateway(gateway_settings(settings.resolved_ledger_url())) as served:
        yield served


def _calls(gw: Served):
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        return ledger.calls()


def _sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_completion_round_trip_with_exact_cost(gw: Served) -> None:
    usage = ofx.usage(2000, 300, cached_tokens=1500)
    gw.openai_fake.reply_completion(ofx.completion("Hi there", token_usage=usage))
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=HELLO, temperature=0.2, seed=7
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hi there"
    assert completion.model == "gpt-4.1-mini"
    assert completion.usage.prompt_tokens == 2000
    assert completion.usage.prompt_tokens_details.cached_tokens == 1500
    # gpt-4.1-mini: 500 uncached * $0.40 + 1500 cached * $0.10 + 300 out * $1.60 = 830 per million
    assert raw.headers["x-tierwise-cost-usd"] == "0.00083"
    (call,) = _calls(gw)
    assert call.cost_usd == Decimal("0.00083")
    upstream = gw.openai_fake.last_request
    assert upstream.json() == {
        "model": "gpt-4.1-mini",
        "messages": HELLO,
        "temperature": 0.2,
        "seed": 7,
    }
    assert_upstream_credentials(upstream.headers, UPSTREAM_OPENAI_KEY)


def test_stream_sends_chunks_usage_and_done(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("Streaming works fine."))
    stream = gw.openai().chat.completions.create(
        model="gpt-4.1-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streaming works fine."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 29
    (call,) = _calls(gw)
    # 19 * $0.40 + 10 * $1.60 = 23.6 per million
    assert call.stream and call.cost_usd == Decimal("0.0000236")


def test_stream_ends_with_done_and_no_usage_unless_asked(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    body = {"model": "gpt-4.1-mini", "messages": HELLO, "stream": True}
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with (
        gw.http() as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r,
    ):
        data = _sse_data(r.read().decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_parallel_tool_calls_streamed_and_not(gw: Served) -> None:
    calls = [
        ofx.tool_call("get_weather", {"city": "Oslo"}),
        ofx.tool_call("get_weather", {"city": "Lima"}),
    ]
    gw.openai_fake.reply_completion(ofx.completion(None, tool_calls=calls))
    gw.openai_fake.reply_completion(ofx.completion(None, tool_calls=calls))
    client = gw.openai()
    message = (
        client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO, tools=[WEATHER])
        .choices[0]
        .message
    )
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [
        {"city": "Oslo"},
        {"city": "Lima"},
    ]
    assert [c.id for c in message.tool_calls] == [c["id"] for c in calls]
    arguments: dict[int, str] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model="gpt-4.1-mini", messages=HELLO, tools=[WEATHER], stream=True
    ):
        for delta in chunk.choices[0].delta.tool_calls or []:
            arguments[delta.index] = arguments.get(delta.index, "") + delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert {i: json.loads(a) for i, a in arguments.items()} == {
        0: {"city": "Oslo"},
        1: {"city": "Lima"},
    }
    assert finish == "tool_calls"
    assert gw.openai_fake.last_request.json()["tools"] == [WEATHER]


def test_mid_stream_drop_ends_with_an_error_chunk_not_done(gw: Served) -> None:
    chunks = ofx.stream_chunks(ofx.completion("This will be cut"), include_usage=False)
    gw.openai_fake.reply_chunks(chunks[:3], done=False, drop=True)
    gw.openai_fake.reply_chunks(chunks[:3], done=False, drop=True)
    stream = gw.openai().chat.completions.create(model="gpt-4.1-mini", messages=HELLO, stream=True)
    with pytest.raises(openai.APIError, match="connection"):
        for _ in stream:
            pass
    body = {"model": "gpt-4.1-mini", "messages": HELLO, "stream": True}
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with (
        gw.http() as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as r,
    ):
        data = _sse_data(r.read().decode())
    assert "[DONE]" not in data
    assert json.loads(data[-1])["error"]["type"] == "server_error"
    assert all(c.status == "error" for c in _calls(gw))


def test_upstream_rate_limit_keeps_status_and_retry_after(gw: Served) -> None:
    gw.openai_fake.reply_error(
        429,
        "Rate limit reached",
        "requests",
        code="rate_limit_exceeded",
        headers={"retry-after": "3"},
    )
    with pytest.raises(openai.RateLimitError) as caught:
        gw.openai().chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["type"] == "rate_limit_error"
    assert "Rate limit reached" in caught.value.body["message"]


def test_errors_use_the_openai_envelope(gw: Served) -> None:
    client = gw.openai()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4.1-mimi", messages=HELLO)
    assert unknown.value.body["code"] == "model_not_found"
    assert "did you mean 'gpt-4.1-mini'" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "wizard"}])
    assert bad.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        gw.openai(key="sk-wrong").chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert unauthorized.value.body["code"] == "invalid_api_key"
    assert gw.openai_fake.requests == []


def test_stream_failing_before_its_first_byte_is_a_real_http_error(gw: Served) -> None:
    gw.openai_fake.reply_error(500, "The server had an error", "server_error")
    with pytest.raises(openai.InternalServerError) as caught:
        gw.openai().chat.completions.create(model="gpt-4.1-mini", messages=HELLO, stream=True)
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "server_error"
    (call,) = _calls(gw)
    assert call.status == "error" and call.http_status == 500
