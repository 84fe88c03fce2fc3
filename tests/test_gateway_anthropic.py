"""The real Anthropic client against the gateway (uvicorn on 127.0.0.1) over a fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import pytest

from tests.fakes import anthropic_upstream as fx
from tests.gateway_harness import (
    ADMIN_KEY,
    UPSTREAM_ANTHROPIC_KEY,
    Served,
    assert_upstream_credentials,
    gateway_settings,
    running_gateway,
)
from tierwise.config import Settings
from tierwise.ledger.store import Ledger

# Sonnet 4.6 executor, Opus 4.7 advisor (see tests/test_cost_exactness.py for the hand sums).
ADVISOR_EXCHANGE_COST = Decimal("0.11192")
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    with running_gateway(gateway_settings(settings.resolved_ledger_url())) as served:
        yield served


def _calls(gw: Served):
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        return ledger.calls()


def test_message_round_trip_with_decision_headers_and_exact_cost(gw: Served) -> None:
    gw.anthropic_fake.reply_message(fx.text_message("Hi! How can I help?"))
    raw = gw.anthropic().messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=256, messages=HELLO
    )
    message = raw.parse()
    assert message.content[0].text == "Hi! How can I help?"
    assert message.model == "claude-haiku-4-5"  # the model that ran, in the client's naming
    assert message.usage.input_tokens == 25 and message.usage.output_tokens == 12
    assert raw.headers["x-tierwise-model"] == "anthropic:claude-haiku-4-5"
    assert raw.headers["x-tierwise-decision"].startswith("fixed; model=anthropic:claude-haiku")
    assert 0 < float(raw.headers["x-tierwise-overhead-ms"]) < 1000
    # Haiku 4.5: 25 input * $1 + 12 output * $5 = 85 per million
    assert raw.headers["x-tierwise-cost-usd"] == "0.000085"
    (call,) = _calls(gw)
    assert call.cost_usd == Decimal("0.000085") and call.model == "anthropic:claude-haiku-4-5"
    assert call.task_id == raw.headers["x-tierwise-task-id"]
    upstream = gw.anthropic_fake.last_request
    assert upstream.json() == {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": HELLO}
    assert_upstream_credentials(upstream.headers, UPSTREAM_ANTHROPIC_KEY)


def test_claude_code_request_streams_through_with_nothing_dropped(gw: Served) -> None:
    body = fx.claude_code_request()
    gw.anthropic_fake.reply_message(fx.advisor_message())
    typed = ("model", "max_tokens", "messages")  # the rest travels as the SDK's extra_body
    stream = gw.anthropic().messages.create(
        **{k: body[k] for k in typed},
        stream=True,
        extra_body={k: v for k, v in body.items() if k not in (*typed, "stream")},
        extra_headers=fx.CLAUDE_CODE_HEADERS,
    )
    events = list(stream)
    upstream = gw.anthropic_fake.last_request
    assert upstream.json() == body  # every field, block and cache_control, as the client sent
    assert upstream.headers["anthropic-beta"] == fx.CLAUDE_CODE_HEADERS["anthropic-beta"]
    assert_upstream_credentials(upstream.headers, UPSTREAM_ANTHROPIC_KEY)
    blocks = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert blocks == ["text", "server_tool_use", "advisor_tool_result", "text"]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    (call,) = _calls(gw)
    assert call.stream and call.cost_usd == ADVISOR_EXCHANGE_COST
    assert [it["kind"] for it in call.iterations] == ["message", "advisor_message", "message"]


def test_stream_content_events_are_the_upstreams_own(gw: Served) -> None:
    message = fx.thinking_message()
    gw.anthropic_fake.reply_message(message)
    headers = {"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4000, "messages": HELLO, "stream": True}
    with gw.http() as http, http.stream("POST", "/v1/messages", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-tierwise-model"] == "anthropic:claude-sonnet-4-6"
        text = r.read().decode()
    sent = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    expected = [e for e in fx.stream_events(message) if e["type"].startswith("content_block")]
    assert [e for e in sent if e["type"].startswith("content_block")] == expected
    assert [e["type"] for e in sent][-2:] == ["message_delta", "message_stop"]
    assert sent[-2]["usage"]["output_tokens"] == 160


def test_tool_use_comes_back_as_a_tool_call(gw: Served) -> None:
    gw.anthropic_fake.reply_message(fx.tool_use_message("get_weather", {"location": "Oslo"}))
    weather = {
        "name": "get_weather",
        "description": "Current weather",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    }
    message = gw.anthropic().messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=HELLO, tools=[weather]
    )
    assert message.stop_reason == "tool_use"
    assert message.content[1].type == "tool_use" and message.content[1].input == {
        "location": "Oslo"
    }
    assert gw.anthropic_fake.last_request.json()["tools"] == [weather]


def test_mid_stream_failure_ends_with_an_error_event(gw: Served) -> None:
    events = fx.stream_events(fx.text_message("This answer will be cut off midway."))
    overloaded = fx.error_body("overloaded_error", "Overloaded")
    gw.anthropic_fake.reply_stream([*events[:5], overloaded])
    stream = gw.anthropic().messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=HELLO, stream=True
    )
    received = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded") as caught:
        for event in stream:
            received.append(event.type)
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert "content_block_delta" in received and "message_stop" not in received
    (call,) = _calls(gw)
    assert call.status == "error" and call.error_type == "OverloadedError"


@pytest.mark.parametrize(
    ("status", "error_type", "headers", "client_status", "client_type"),
    [
        (429, "rate_limit_error", {"retry-after": "7"}, 429, "rate_limit_error"),
        (529, "overloaded_error", {}, 529, "overloaded_error"),
        (500, "api_error", {}, 502, "api_error"),
        (401, "authentication_error", {}, 502, "api_error"),
    ],
)
def test_upstream_errors_map_to_honest_statuses(
    gw: Served, status, error_type, headers, client_status, client_type
) -> None:
    gw.anthropic_fake.reply_error(status, error_type, "upstream says no", headers=headers)
    with pytest.raises(anthropic.APIStatusError) as caught:
        gw.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
    assert caught.value.status_code == client_status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == client_type
    assert "upstream says no" in caught.value.body["error"]["message"]
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "7"


def test_context_length_error_is_a_400(gw: Served) -> None:
    gw.anthropic_fake.reply_error(400, "invalid_request_error", "prompt is too long: 210000 tokens")
    with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
        gw.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)


def test_unknown_model_is_a_404_with_suggestions(gw: Served) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        gw.anthropic().messages.create(model="claude-haiku-4.5", max_tokens=64, messages=HELLO)
    error = caught.value.body["error"]
    assert error["type"] == "not_found_error"
    assert "did you mean 'claude-haiku-4-5'" in error["message"]
    assert gw.anthropic_fake.requests == []


def test_malformed_bodies_are_400s_in_the_anthropic_envelope(gw: Served) -> None:
    headers = {"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"}
    with gw.http() as http:
        not_json = http.post("/v1/messages", content=b"{not json", headers=headers)
        no_messages = http.post("/v1/messages", json={"model": "claude-haiku-4-5"}, headers=headers)
        no_model = http.post("/v1/messages", json={"messages": HELLO}, headers=headers)
    for response in (not_json, no_messages, no_model):
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in not_json.json()["error"]["message"]
    assert "messages" in no_messages.json()["error"]["message"]


def test_oversize_body_is_a_413(tmp_path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'l.db'}", gateway={"max_body_bytes": 4096})
    big = [{"role": "user", "content": "x" * 10_000}]
    with running_gateway(settings) as gw, pytest.raises(anthropic.APIStatusError) as caught:
        gw.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=64, messages=big)
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"


def test_count_tokens_estimates_without_calling_upstream(gw: Served) -> None:
    client = gw.anthropic()
    short = client.messages.count_tokens(model="claude-haiku-4-5", messages=HELLO)
    long = client.messages.count_tokens(
        model="claude-haiku-4-5",
        system="You are a careful assistant.",
        messages=[{"role": "user", "content": "Explain the Pythagorean theorem in two lines."}],
    )
    assert short.input_tokens == 1 and long.input_tokens == 6 + 8  # words and punctuation
    assert gw.anthropic_fake.requests == []
