"""The Anthropic Messages wire format: lossless round trips and faithful canonical readings."""

from __future__ import annotations

import copy
import json

import pytest

from tests.fakes import anthropic_upstream as fx
from tierwise.errors import (
    AuthenticationError,
    BadRequestError,
    ContextLengthError,
    InvalidRequestError,
    MalformedResponseError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ServerError,
)
from tierwise.messages import (
    AdvisorToolResultBlock,
    BlockDelta,
    BlockStart,
    BlockStop,
    ImageBlock,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    OtherBlock,
    RedactedThinkingBlock,
    Request,
    ServerToolUseBlock,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UsageIteration,
)
from tierwise.wire.anthropic import (
    error_from_anthropic,
    error_to_anthropic,
    event_from_anthropic,
    event_to_anthropic,
    merge_stream_usage,
    request_from_anthropic,
    request_to_anthropic,
    response_from_anthropic,
    response_to_anthropic,
    sse_encode,
    usage_from_anthropic,
    usage_to_anthropic,
)

SONNET_ID = "anthropic:claude-sonnet-4-6"


def _without_stream(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "stream"}


# --- requests --------------------------------------------------------------------------------


def test_claude_code_request_round_trips_exactly():
    body = fx.claude_code_request()
    request = request_from_anthropic(copy.deepcopy(body), model=SONNET_ID)
    assert request_to_anthropic(request, fx.EXECUTOR_MODEL) == _without_stream(body)


def test_claude_code_request_reads_as_canonical():
    request = request_from_anthropic(fx.claude_code_request(), model=SONNET_ID)

    assert request.model == SONNET_ID
    assert request.max_tokens == 32000
    assert [b.model_extra.get("cache_control") for b in request.system] == [
        None,
        {"type": "ephemeral"},
        {"type": "ephemeral", "ttl": "1h"},
    ]
    assert request.thinking == {"type": "enabled", "budget_tokens": 31999}
    assert request.tool_choice == ToolChoice(type="auto")
    assert request.metadata == {"user_id": "user_4f1c_account_9a2e_session_77d0"}
    assert request.extra == {"context_management": fx.claude_code_request()["context_management"]}
    assert request.prompt_text() == "Here is the screenshot of the CI run."


def test_claude_code_tools_keep_schemas_and_server_tool_fields():
    tools = request_from_anthropic(fx.claude_code_request()).tools

    assert [t.name for t in tools][:3] == ["Bash", "Read", "Edit"]
    assert tools[0].input_schema is not None
    assert tools[0].input_schema["required"] == ["command"]
    assert tools[5].model_extra == {"cache_control": {"type": "ephemeral"}}
    advisor = tools[-1]
    assert (advisor.type, advisor.name, advisor.input_schema) == (
        "advisor_20260301",
        "advisor",
        None,
    )
    assert advisor.model_extra == {
        "model": "claude-opus-4-7",
        "max_uses": 3,
        "max_tokens": 2048,
        "caching": {"type": "ephemeral", "ttl": "1h"},
    }


def test_claude_code_history_blocks_are_typed():
    messages = request_from_anthropic(fx.claude_code_request()).messages

    first, assistant, _, advised, last = messages
    assert isinstance(first.content[2], OtherBlock)
    assert first.content[2].model_extra["title"] == "parser-spec.pdf"
    assert [type(b) for b in assistant.content] == [
        ThinkingBlock,
        RedactedThinkingBlock,
        ToolUseBlock,
    ]
    assert assistant.content[0].signature == "EqMBCkgIBxABGAIiQL7p"
    assert [type(b) for b in advised.content] == [
        ServerToolUseBlock,
        AdvisorToolResultBlock,
        ServerToolUseBlock,
        AdvisorToolResultBlock,
        TextBlock,
        ToolUseBlock,
    ]
    assert advised.content[1].content == fx.advisor_redacted_result()
    assert advised.content[3].content == {
        "type": "advisor_tool_result_error",
        "error_code": "max_uses_exceeded",
    }
    assert advised.content[5].input == {
        "command": "pytest -q tests/test_parser.py",
        "timeout": None,
    }
    result = last.content[0]
    assert isinstance(result, ToolResultBlock)
    assert result.is_error is True
    assert [type(b) for b in result.content] == [TextBlock, ImageBlock]


def test_string_content_and_system_read_as_text_and_write_back_as_strings():
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": "Answer in one word.",
        "messages": [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Paris"}]},
            {"role": "user", "content": "And Italy?"},
        ],
    }
    request = request_from_anthropic(body)

    assert [b.text for b in request.system] == ["Answer in one word."]
    assert request.messages[0].text() == "Capital of France?"
    assert request.prompt_text() == "And Italy?"
    assert request_to_anthropic(request, "claude-haiku-4-5") == body


def test_string_marker_never_reaches_the_wire_once_blocks_are_added():
    request = request_from_anthropic(
        {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    )
    request.messages[0].content.append(TextBlock(text="there"))

    sent = request_to_anthropic(request, "m")["messages"][0]["content"]
    assert sent == [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]


def test_request_built_in_code_gets_required_wire_fields_only():
    request = Request(
        messages=[
            Message(role="user", content=[TextBlock(text="Weather in Paris?")]),
            Message(
                role="assistant",
                content=[
                    ThinkingBlock(thinking="Use the tool."),
                    ToolUseBlock(id="toolu_1", name="get_weather"),
                    ServerToolUseBlock(id="srvtoolu_1", name="advisor"),
                ],
            ),
            Message(
                role="user",
                content=[ToolResultBlock(tool_use_id="toolu_1", content=[TextBlock(text="18C")])],
            ),
        ],
        max_tokens=256,
        stop=["###"],
        tools=[Tool(name="get_weather", input_schema={"type": "object"})],
        tool_choice=ToolChoice(type="tool", name="get_weather"),
    )

    assert request_to_anthropic(request, "claude-haiku-4-5") == {
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "stop_sequences": ["###"],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Use the tool."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "advisor", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "18C"}],
                    }
                ],
            },
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }


def test_extra_cannot_smuggle_stream_or_override_modelled_fields():
    request = Request.from_prompt("hi", max_tokens=10, extra={"stream": True, "top_k": 5})
    body = request_to_anthropic(request, "m")
    assert "stream" not in body
    assert body["top_k"] == 5
    assert body["max_tokens"] == 10


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"model": "m", "max_tokens": 1}, "messages"),
        ({"messages": [{"role": "user"}]}, "content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "text"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": "hello"}, ""),
    ],
)
def test_malformed_request_is_a_clear_invalid_request_error(body, where):
    with pytest.raises(InvalidRequestError) as info:
        request_from_anthropic(body)
    assert info.value.message.startswith("invalid Anthropic Messages request")
    assert where in info.value.message
    assert info.value.exit_code == 2


# --- responses -------------------------------------------------------------------------------

RESPONSES = {
    "text": fx.text_message(),
    "tool_use": fx.tool_use_message(),
    "thinking": fx.thinking_message(),
    "advisor": fx.advisor_message(),
    "advisor_redacted": fx.advisor_message(fx.advisor_redacted_result()),
    "advisor_error": fx.advisor_message(fx.advisor_error("too_many_requests")),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_response_round_trips_exactly(name):
    body = RESPONSES[name]
    response = response_from_anthropic(copy.deepcopy(body), SONNET_ID)
    assert response_to_anthropic(response, body["model"]) == body


def test_response_names_the_catalog_model_and_keeps_the_upstream_one():
    response = response_from_anthropic(fx.text_message(), SONNET_ID)
    assert response.model == SONNET_ID
    assert response.model_extra == {"upstream_model": "claude-sonnet-4-6"}
    assert response.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert response.text() == "Hello! How can I help you today?"
    assert "upstream_model" not in response_to_anthropic(response, "claude-sonnet-4-6")


def test_advisor_response_reads_as_canonical_blocks():
    response = response_from_anthropic(
        fx.advisor_message(fx.advisor_redacted_result("ENC==")), SONNET_ID
    )

    kinds = [type(block) for block in response.content]
    assert kinds == [TextBlock, ServerToolUseBlock, AdvisorToolResultBlock, TextBlock]
    call, result = response.content[1], response.content[2]
    assert (call.name, call.input) == ("advisor", {})
    assert result.tool_use_id == call.id
    assert result.content == {
        "type": "advisor_redacted_result",
        "encrypted_content": "ENC==",
        "stop_reason": None,
    }
    assert response.stop_reason == "end_turn"


def test_pause_turn_and_unknown_blocks_and_fields_survive():
    search = {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_ws",
        "content": [{"type": "web_search_result", "url": "https://example.org", "title": "Ex"}],
    }
    body = fx.message(
        [
            {
                "type": "server_tool_use",
                "id": "srvtoolu_ws",
                "name": "web_search",
                "input": {"q": "x"},
            },
            search,
            {"type": "text", "text": "Found it.", "citations": None},
        ],
        stop_reason="pause_turn",
    )
    body["container"] = {"id": "container_1", "expires_at": "2026-01-01T00:00:00Z"}
    response = response_from_anthropic(copy.deepcopy(body), SONNET_ID)

    assert response.stop_reason == "pause_turn"
    assert isinstance(response.content[1], OtherBlock)
    assert response.model_extra["container"]["id"] == "container_1"
    assert response_to_anthropic(response, body["model"]) == body


@pytest.mark.parametrize(
    "body",
    [
        {"type": "message", "content": []},
        {"id": "msg_1", "content": [{"type": "tool_use", "id": "t"}]},
        {"id": "msg_1", "content": "not a list"},
        {"id": "msg_1", "content": [], "usage": {"input_tokens": "many"}},
    ],
)
def test_unreadable_response_is_malformed(body):
    with pytest.raises(MalformedResponseError) as info:
        response_from_anthropic(body, SONNET_ID, provider="anth-eu")
    assert info.value.provider == "anth-eu"
    assert info.value.model == "claude-sonnet-4-6"


# --- usage -----------------------------------------------------------------------------------


def test_advisor_usage_reads_every_iteration_with_its_model_and_ttl():
    usage = usage_from_anthropic(fx.advisor_message()["usage"])

    assert usage.iterations == [
        UsageIteration(
            kind="message",
            model=None,
            input_tokens=1200,
            output_tokens=85,
            cache_read_tokens=8000,
            cache_write_5m_tokens=600,
        ),
        UsageIteration(
            kind="advisor_message",
            model="claude-opus-4-7",
            input_tokens=9400,
            output_tokens=620,
            cache_write_1h_tokens=2800,
        ),
        UsageIteration(
            kind="message", input_tokens=1905, output_tokens=240, cache_read_tokens=8600
        ),
    ]
    assert (usage.input_tokens, usage.output_tokens) == (1200, 325)
    assert (usage.cache_read_tokens, usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (
        8000,
        600,
        0,
    )
    assert usage.model_extra == {"service_tier": "standard"}


def test_usage_without_ttl_breakdown_counts_all_cache_writes_as_5m():
    wire = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 700,
        "cache_read_input_tokens": 50,
        "output_tokens": 3,
    }
    usage = usage_from_anthropic(wire)
    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (700, 0)
    assert usage.total_tokens == 763
    assert usage_to_anthropic(usage) == wire


def test_usage_ttl_split_and_vendor_fields_round_trip():
    wire = fx.usage(5, 9, cache_read=40, cache_write_5m=100, cache_write_1h=300)
    wire |= {"server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 0}}
    wire["output_tokens_details"] = {"thinking_tokens": 4}
    usage = usage_from_anthropic(wire)

    assert (usage.cache_write_5m_tokens, usage.cache_write_1h_tokens) == (100, 300)
    assert usage.cache_write_tokens == 400
    assert usage.reasoning_tokens == 4
    assert usage_to_anthropic(usage) == wire


def test_usage_compaction_and_fallback_iterations_round_trip():
    wire = fx.usage(
        30,
        40,
        iterations=[
            fx.iteration("compaction", 150_000, 2_000),
            fx.iteration("message", 2_100, 15, model="claude-sonnet-4-6"),
            fx.iteration("fallback_message", 2_100, 25, model="claude-opus-4-7", cache_write_5m=9),
        ],
    )
    usage = usage_from_anthropic(wire)
    assert [(i.kind, i.model) for i in usage.iterations] == [
        ("compaction", None),
        ("message", "claude-sonnet-4-6"),
        ("fallback_message", "claude-opus-4-7"),
    ]
    assert usage_to_anthropic(usage) == wire


def test_usage_built_in_code_writes_the_four_axes():
    usage = Usage(input_tokens=7, output_tokens=2, cache_write_1h_tokens=5)
    assert usage_to_anthropic(usage) == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 0,
        "output_tokens": 2,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5},
    }


def test_stream_usage_merge_keeps_absent_fields_and_drops_a_stale_breakdown():
    start = fx.usage(100, 1, cache_read=20, cache_write_1h=30)

    same = merge_stream_usage(start, {"output_tokens": 42})
    assert same == start | {"output_tokens": 42}

    grown = merge_stream_usage(start, {"cache_creation_input_tokens": 80, "output_tokens": 42})
    assert "cache_creation" not in grown
    assert usage_from_anthropic(grown).cache_write_5m_tokens == 80


# --- stream events ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", RESPONSES)
def test_stream_events_round_trip_exactly(name):
    events = fx.stream_events(RESPONSES[name], chunk_size=7)
    parsed = [event_from_anthropic(copy.deepcopy(e), model_id=SONNET_ID) for e in events]

    assert parsed[1] is None  # ping
    written = [event_to_anthropic(e, "claude-sonnet-4-6") for e in parsed if e is not None]
    assert written == [e for e in events if e["type"] != "ping"]


def test_stream_events_read_as_canonical_events():
    events = fx.stream_events(fx.tool_use_message(), chunk_size=1000)
    parsed = [event_from_anthropic(e, model_id=SONNET_ID) for e in events]

    start, _, text_start, text_delta, text_stop, tool_start, tool_delta = parsed[:7]
    assert isinstance(start, MessageStart)
    assert start.message.model == SONNET_ID
    assert start.message.content == []
    assert isinstance(text_start, BlockStart)
    assert text_start.block == TextBlock(text="")
    assert text_delta == BlockDelta(
        index=0, delta={"type": "text_delta", "text": "I'll check the weather for you."}
    )
    assert text_stop == BlockStop(index=0)
    assert isinstance(tool_start, BlockStart)
    assert tool_start.block == ToolUseBlock(
        id="toolu_01A09q90qw90lq917835lq9", name="get_weather", input={}
    )
    assert json.loads(tool_delta.delta["partial_json"]) == {"location": "Paris, FR", "unit": None}
    delta, stop = parsed[-2:]
    assert isinstance(delta, MessageDelta)
    assert (delta.stop_reason, delta.usage.input_tokens, delta.usage.output_tokens) == (
        "tool_use",
        412,
        68,
    )
    assert stop == MessageStop()


def test_canonical_events_survive_the_wire():
    events = [
        MessageStart(message=response_from_anthropic(fx.text_message(), SONNET_ID)),
        BlockStart(index=0, block=OtherBlock(type="compaction", content=None)),
        BlockDelta(index=0, delta={"type": "compaction_delta", "content": "summary"}),
        BlockStop(index=0),
        MessageDelta(stop_reason="max_tokens", usage=Usage(input_tokens=3, output_tokens=9)),
        MessageStop(),
    ]
    back = [
        event_from_anthropic(event_to_anthropic(e, "claude-sonnet-4-6"), model_id=SONNET_ID)
        for e in events
    ]
    assert back == events


def test_unknown_event_types_are_skipped():
    assert event_from_anthropic({"type": "ping"}) is None
    assert event_from_anthropic({"type": "message_heartbeat_v2", "x": 1}) is None


def test_message_start_without_catalog_id_keeps_the_upstream_name():
    event = fx.stream_events(fx.text_message())[0]
    parsed = event_from_anthropic(event)
    assert isinstance(parsed, MessageStart)
    assert parsed.message.model == "claude-sonnet-4-6"


def test_malformed_event_is_a_malformed_response():
    with pytest.raises(MalformedResponseError, match="content_block_delta"):
        event_from_anthropic({"type": "content_block_delta", "delta": {}}, provider="a")


@pytest.mark.parametrize(
    ("error_type", "message", "cls", "status"),
    [
        ("overloaded_error", "Overloaded", OverloadedError, 529),
        (
            "rate_limit_error",
            "Number of request tokens has exceeded your rate limit",
            RateLimitError,
            429,
        ),
        ("api_error", "Internal server error", ServerError, 500),
        ("authentication_error", "invalid x-api-key", AuthenticationError, 401),
        (
            "invalid_request_error",
            "prompt is too long: 210012 tokens > 200000 maximum",
            ContextLengthError,
            400,
        ),
        ("invalid_request_error", "messages.1: tool_use ids must be unique", BadRequestError, 400),
        ("brand_new_error", "something", ServerError, 500),
    ],
)
def test_error_event_raises_the_matching_tierwise_error(error_type, message, cls, status):
    event = fx.error_body(error_type, message, "req_011CStream")
    with pytest.raises(ProviderError) as info:
        event_from_anthropic(event, model_id=SONNET_ID, provider="anthropic")
    error = info.value
    assert type(error) is cls
    assert (error.status, error.message, error.request_id) == (status, message, "req_011CStream")
    assert (error.provider, error.model) == ("anthropic", "claude-sonnet-4-6")


@pytest.mark.parametrize(
    "error_type",
    [
        "invalid_request_error",
        "authentication_error",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
    ],
)
def test_error_envelope_round_trips(error_type):
    body = fx.error_body(error_type, "details here", "req_1")
    assert error_to_anthropic(error_from_anthropic(body, provider="p")) == body


def test_sse_encode_writes_the_event_name_and_compact_utf8_json():
    event = event_to_anthropic(
        BlockDelta(index=2, delta={"type": "text_delta", "text": "17 \u00d7 23"}), "m"
    )
    encoded = sse_encode(event)

    head, data, tail = encoded.split(b"\n", 2)
    assert head == b"event: content_block_delta"
    assert data.startswith(b"data: {")
    assert "\u00d7".encode() in data
    assert b", " not in data
    assert tail == b"\n"
    assert json.loads(data.removeprefix(b"data: ")) == event
