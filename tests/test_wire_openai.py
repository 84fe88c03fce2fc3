"""The OpenAI Chat Completions wire format: lossless round trips and faithful readings."""

from __future__ import annotations

import copy
import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes import anthropic_upstream as fxa
from tests.fakes import openai_upstream as fx
from tierwise.errors import InvalidRequestError
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
    Response,
    ServerToolUseBlock,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UsageIteration,
)
from tierwise.streaming import StreamAccumulator
from tierwise.wire.anthropic import request_from_anthropic
from tierwise.wire.openai import (
    WireFormatError,
    request_from_openai,
    request_to_openai,
    response_from_openai,
    response_to_openai,
    usage_from_openai,
    usage_to_openai,
)
from tierwise.wire.openai_stream import (
    SSE_DONE,
    OpenAIStreamDecoder,
    OpenAIStreamEncoder,
    SSEParser,
    sse_encode,
)

MODEL_ID = "openai:gpt-4o-mini"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42"
    "mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def round_trip(body: dict) -> dict:
    return request_to_openai(request_from_openai(copy.deepcopy(body)), body["model"])


def chat_request() -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three primes."},
        ],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["\n\n", "END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": 7,
        "user": "user-42",
        "n": 1,
        "response_format": {"type": "json_object"},
        "metadata": {"team": "search"},
        "store": True,
        "logprobs": True,
        "top_logprobs": 2,
    }


def tool_conversation() -> dict:
    """A second-turn agent request: two parallel calls answered by two tool messages."""
    calls = [
        fx.tool_call("get_weather", {"city": "Paris", "unit": "c"}, call_id="call_paris"),
        fx.tool_call("get_weather", {"city": "Oslo", "unit": "c"}, call_id="call_oslo"),
    ]
    return {
        "model": "gpt-5-mini",
        "messages": [
            {"role": "developer", "content": "Use the tools; answer in one sentence."},
            {"role": "user", "content": "Is it warmer in Paris or Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_paris", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": "call_oslo", "content": '{"temp": 9}'},
            {"role": "assistant", "content": "Paris is warmer (18 °C vs 9 °C)."},
            {"role": "user", "content": "And in Fahrenheit?", "name": "ana"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current temperature for a city.",
                    "parameters": WEATHER_SCHEMA,
                    "strict": True,
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 1024,
        "reasoning_effort": "low",
    }


def vision_request() -> dict:
    return {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What differs between these two images?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/a.jpg", "detail": "high"},
                    },
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG_B64}"},
                    },
                ],
            }
        ],
        "max_tokens": 300,
    }


# --- requests: OpenAI -> canonical -> OpenAI ---------------------------------------------------


@pytest.mark.parametrize("body", [chat_request(), tool_conversation(), vision_request()])
def test_realistic_requests_round_trip_exactly(body):
    assert round_trip(body) == body


def test_chat_request_reads_into_canonical_fields():
    request = request_from_openai(chat_request())
    assert request.model == "gpt-4o-mini"
    assert request.system == [TextBlock(text="You are a terse assistant.")]
    assert request.system_role == "system"
    assert request.messages == [
        Message(role="user", content=[TextBlock(text="Name three primes.")])
    ]
    assert (request.max_tokens, request.temperature, request.top_p) == (256, 0.2, 0.9)
    assert request.stop == ["\n\n", "END"]
    assert set(request.extra) == {
        "stream",
        "stream_options",
        "seed",
        "user",
        "n",
        "response_format",
        "metadata",
        "store",
        "logprobs",
        "top_logprobs",
    }
    assert request.metadata == {}


def test_tool_messages_fold_into_one_user_message_of_tool_results():
    request = request_from_openai(tool_conversation())
    assert request.system_role == "developer"
    assistant, results = request.messages[1], request.messages[2]
    assert assistant.content == [
        ToolUseBlock(id="call_paris", name="get_weather", input={"city": "Paris", "unit": "c"}),
        ToolUseBlock(id="call_oslo", name="get_weather", input={"city": "Oslo", "unit": "c"}),
    ]
    assert results.role == "user"
    assert results.content == [
        ToolResultBlock(tool_use_id="call_paris", content='{"temp": 18}'),
        ToolResultBlock(tool_use_id="call_oslo", content='{"temp": 9}'),
    ]
    assert len(request.messages) == 5
    assert request.messages[4].model_extra == {"name": "ana"}


def test_tools_and_choice_become_canonical():
    request = request_from_openai(tool_conversation())
    assert request.tools == [
        Tool(
            name="get_weather",
            description="Current temperature for a city.",
            input_schema=WEATHER_SCHEMA,
            strict=True,
        )
    ]
    assert request.tool_choice == ToolChoice(type="any")
    assert request.max_tokens == 1024
    assert request.extra["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("wire", "canonical"),
    [
        ("auto", ToolChoice(type="auto")),
        ("none", ToolChoice(type="none")),
        ("required", ToolChoice(type="any")),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ToolChoice(type="tool", name="get_weather"),
        ),
    ],
)
def test_tool_choice_maps_both_ways(wire, canonical):
    body = {**tool_conversation(), "tool_choice": wire}
    assert request_from_openai(body).tool_choice == canonical
    assert round_trip(body)["tool_choice"] == wire


def test_tool_choice_without_canonical_twin_is_kept_verbatim():
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "x"}}],
        },
    }
    body = {**tool_conversation(), "tool_choice": allowed}
    request = request_from_openai(body)
    assert request.tool_choice is None
    assert round_trip(body) == body


def test_images_become_url_and_base64_sources():
    (message,) = request_from_openai(vision_request()).messages
    _, remote, inline = message.content
    assert remote == ImageBlock(
        source={"type": "url", "url": "https://example.com/a.jpg"}, detail="high"
    )
    assert inline == ImageBlock(
        source={"type": "base64", "media_type": "image/png", "data": PNG_B64}
    )


def test_tool_arguments_that_are_not_json_are_kept_raw():
    call = fx.tool_call("search", '{"q": "unterminated', call_id="call_bad")
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "search"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_bad", "content": "error: bad arguments"},
        ],
    }
    block = request_from_openai(body).messages[1].content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.input == {}
    assert block.model_extra == {"raw_arguments": '{"q": "unterminated'}
    assert round_trip(body) == body


def test_unmodelled_content_parts_survive_verbatim():
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    pdf = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    body = {
        "model": "gpt-4o-audio-preview",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Summarise"}, audio, pdf]}
        ],
    }
    blocks = request_from_openai(body).messages[0].content
    assert [type(b) for b in blocks] == [TextBlock, OtherBlock, OtherBlock]
    assert round_trip(body) == body


def test_text_parts_with_cache_breakpoints_round_trip():
    part = {"type": "text", "text": "Long manual…", "prompt_cache_breakpoint": {"mode": "explicit"}}
    body = {
        "model": "gpt-5.4",
        "messages": [{"role": "system", "content": [part]}, {"role": "user", "content": "Hi"}],
    }
    assert round_trip(body) == body


def test_a_single_stop_string_is_sent_as_a_list():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": "\n"}
    assert request_from_openai(body).stop == ["\n"]
    assert round_trip(body)["stop"] == ["\n"]


def test_both_token_limits_round_trip():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 100,
        "max_completion_tokens": 200,
    }
    assert request_from_openai(body).max_tokens == 200
    assert round_trip(body) == body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "m"}, "messages"),
        (
            {"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]},
            "function",
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "custom", "custom": {"name": "grep"}}],
            },
            "custom",
        ),
        ({"model": "m", "messages": [{"role": "user"}]}, "content"),
    ],
)
def test_invalid_requests_raise_invalid_request_error(body, needle):
    with pytest.raises(InvalidRequestError, match=needle):
        request_from_openai(body)


# --- requests: canonical (from an Anthropic client) -> OpenAI ----------------------------------


def anthropic_style_request() -> Request:
    advice = {"type": "advisor_result", "text": "Check the loop bound.", "stop_reason": "end_turn"}
    return Request(
        model="openai:gpt-4o-mini",
        system=[TextBlock(text="You are Claude Code.", cache_control={"type": "ephemeral"})],
        messages=[
            Message(role="user", content=[TextBlock(text="Fix the bug.")]),
            Message(
                role="assistant",
                content=[
                    ThinkingBlock(thinking="Let me look.", signature="sig"),
                    RedactedThinkingBlock(data="xyz"),
                    ServerToolUseBlock(id="srvtoolu_1", name="advisor"),
                    AdvisorToolResultBlock(tool_use_id="srvtoolu_1", content=advice),
                    AdvisorToolResultBlock(
                        tool_use_id="srvtoolu_2",
                        content={"type": "advisor_redacted_result", "encrypted_content": "e"},
                    ),
                    TextBlock(text="Reading the file."),
                    ToolUseBlock(id="toolu_1", name="Read", input={"path": "a.py"}),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResultBlock(
                        tool_use_id="toolu_1",
                        content=[
                            TextBlock(text="def f(): ..."),
                            ImageBlock(
                                source={
                                    "type": "base64",
                                    "media_type": "image/png",
                                    "data": PNG_B64,
                                }
                            ),
                        ],
                        is_error=True,
                    ),
                    TextBlock(text="Go on.", cache_control={"type": "ephemeral"}),
                ],
            ),
        ],
        max_tokens=4096,
        stop=["</done>"],
        tools=[
            Tool(name="Read", description="Read a file", input_schema={"type": "object"}),
            Tool(name="advisor", type="advisor_20260301", model="claude-opus-4-7"),
        ],
        tool_choice=ToolChoice(type="auto", disable_parallel_tool_use=True),
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "u-1"},
    )


def test_anthropic_only_content_is_dropped_or_rendered_deliberately():
    body = request_to_openai(anthropic_style_request(), "gpt-4o-mini")
    assert body["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "Fix the bug."},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Advisor's advice:\nCheck the loop bound."},
                {"type": "text", "text": "Reading the file."},
            ],
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "Read", "arguments": '{"path":"a.py"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": [{"type": "text", "text": "def f(): ..."}],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Go on."},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            ],
        },
    ]


def test_anthropic_request_options_map_to_openai_fields():
    body = request_to_openai(anthropic_style_request(), "gpt-4o-mini")
    assert body["model"] == "gpt-4o-mini"
    assert body["max_tokens"] == 4096
    assert body["stop"] == ["</done>"]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "Read",
                "description": "Read a file",
                "parameters": {"type": "object"},
            },
        }
    ]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False
    assert not {"thinking", "metadata", "system_role"} & set(body)


def test_tool_choice_is_left_out_when_only_server_tools_remain():
    request = Request.from_prompt(
        "hi",
        tools=[Tool(name="advisor", type="advisor_20260301")],
        tool_choice=ToolChoice(type="auto"),
    )
    body = request_to_openai(request, "m")
    assert "tools" not in body
    assert "tool_choice" not in body


def test_image_from_the_files_api_cannot_be_sent():
    image = ImageBlock(source={"type": "file", "file_id": "file_011"})
    request = Request(messages=[Message(role="user", content=[image])])
    with pytest.raises(InvalidRequestError, match="file"):
        request_to_openai(request, "m")


def walk_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


def test_bare_strings_from_anthropic_clients_are_sent_as_plain_strings():
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert request_to_openai(request_from_anthropic(body), "gpt-4o-mini") == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "max_tokens": 10,
    }


def test_a_claude_code_request_becomes_a_clean_openai_body():
    body = request_to_openai(request_from_anthropic(fxa.claude_code_request()), "gpt-4o-mini")
    foreign = {"cache_control", "string_content", "citations", "caller", "context_management"}
    assert not foreign & walk_keys(body)
    assert not {"thinking", "metadata"} & set(body)
    calls: set[str] = set()
    for message in body["messages"]:
        assert message["role"] in {"system", "user", "assistant", "tool"}
        for call in message.get("tool_calls") or []:
            assert isinstance(json.loads(call["function"]["arguments"]), dict)
            calls.add(call["id"])
        if message["role"] == "tool":
            assert message["tool_call_id"] in calls
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    (document,) = [p for p in parts if p["type"] == "file"]
    assert document["file"]["filename"] == "parser-spec.pdf"
    assert document["file"]["file_data"].startswith("data:application/pdf;base64,")


# --- usage -----------------------------------------------------------------------------------


def test_cached_prompt_tokens_are_taken_out_of_input_tokens():
    wire = fx.usage(2006, 300, cached_tokens=1920, reasoning_tokens=192)
    canonical = usage_from_openai(wire)
    assert canonical.input_tokens == 86
    assert canonical.cache_read_tokens == 1920
    assert canonical.output_tokens == 300
    assert canonical.reasoning_tokens == 192
    assert canonical.cache_write_tokens == 0
    assert canonical.total_tokens == 2306


def test_usage_round_trips_exactly():
    wire = fx.usage(2006, 300, cached_tokens=1920, reasoning_tokens=192)
    assert usage_to_openai(usage_from_openai(copy.deepcopy(wire))) == wire


def test_usage_without_details_means_nothing_cached():
    canonical = usage_from_openai({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
    assert (canonical.input_tokens, canonical.cache_read_tokens) == (12, 0)
    assert canonical.reasoning_tokens is None
    assert usage_from_openai(usage_to_openai(canonical)) == canonical


def test_cache_writes_reported_by_a_host_are_taken_out_of_input_tokens():
    wire = {
        "prompt_tokens": 194,
        "completion_tokens": 2,
        "total_tokens": 196,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 100, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost": 0.95,
    }
    canonical = usage_from_openai(copy.deepcopy(wire))
    assert (canonical.input_tokens, canonical.cache_write_5m_tokens) == (94, 100)
    assert usage_to_openai(canonical) == wire


def test_usage_with_iterations_reports_their_sum():
    usage = Usage(
        input_tokens=100,
        output_tokens=50,
        iterations=[
            UsageIteration(input_tokens=100, output_tokens=50, cache_read_tokens=10),
            UsageIteration(
                kind="advisor_message", model="claude-opus-4-7", input_tokens=900, output_tokens=200
            ),
        ],
    )
    wire = usage_to_openai(usage)
    assert wire["prompt_tokens"] == 1010
    assert wire["prompt_tokens_details"] == {"cached_tokens": 10}
    assert (wire["completion_tokens"], wire["total_tokens"]) == (250, 1260)


# --- responses -------------------------------------------------------------------------------


def test_text_completion_reads_and_round_trips():
    body = fx.completion("Hi there!", token_usage=fx.usage(1200, 8, cached_tokens=1024))
    response = response_from_openai(copy.deepcopy(body), MODEL_ID)
    assert response.model == MODEL_ID
    assert response.model_extra["upstream_model"] == fx.MODEL
    assert response.id == body["id"]
    assert response.content == [TextBlock(text="Hi there!")]
    assert response.stop_reason == "end_turn"
    assert (response.usage.input_tokens, response.usage.cache_read_tokens) == (176, 1024)
    assert response_to_openai(response, fx.MODEL) == body


def test_tool_call_completion_reads_and_round_trips():
    calls = [
        fx.tool_call("get_weather", {"city": "Paris", "unit": "c"}),
        fx.tool_call("get_weather", {"city": "Oslo", "unit": "c"}),
    ]
    body = fx.completion(None, tool_calls=calls)
    response = response_from_openai(copy.deepcopy(body), MODEL_ID)
    assert response.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in response.tool_calls()] == [
        ("get_weather", {"city": "Paris", "unit": "c"}),
        ("get_weather", {"city": "Oslo", "unit": "c"}),
    ]
    assert response_to_openai(response, fx.MODEL) == body


def test_refusal_reads_as_text_with_refusal_stop_and_round_trips():
    body = fx.completion(None, refusal="I can't help with that.")
    response = response_from_openai(copy.deepcopy(body), MODEL_ID)
    assert response.text() == "I can't help with that."
    assert response.stop_reason == "refusal"
    assert response_to_openai(response, fx.MODEL) == body


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reasons_map_both_ways(finish, stop):
    body = fx.completion("x", finish_reason=finish)
    response = response_from_openai(body, MODEL_ID)
    assert response.stop_reason == stop
    bare = Response(id="msg_1", model=MODEL_ID, content=[TextBlock(text="x")], stop_reason=stop)
    assert response_to_openai(bare, "m")["choices"][0]["finish_reason"] == finish


def test_anthropic_response_renders_as_a_valid_chat_completion():
    response = Response(
        id="msg_01",
        model="anthropic:claude-sonnet-4-6",
        content=[
            ThinkingBlock(thinking="hmm", signature="s"),
            ServerToolUseBlock(id="srvtoolu_1", name="advisor"),
            AdvisorToolResultBlock(
                tool_use_id="srvtoolu_1", content={"type": "advisor_result", "text": "t"}
            ),
            TextBlock(text="Let me read it. "),
            ToolUseBlock(id="toolu_1", name="Read", input={"path": "a.py"}),
        ],
        stop_reason="tool_use",
        usage=Usage(
            input_tokens=10, output_tokens=5, cache_read_tokens=90, cache_write_1h_tokens=7
        ),
    )
    body = response_to_openai(response, "tierwise-auto")
    parsed = ChatCompletion.model_validate(body)
    assert parsed.model == "tierwise-auto"
    assert parsed.choices[0].message.content == "Let me read it. "
    assert parsed.choices[0].finish_reason == "tool_calls"
    (call,) = parsed.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"path": "a.py"}
    assert body["usage"]["prompt_tokens"] == 107
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 90, "cache_write_tokens": 7}


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "model": "m", "choices": []},
        {"id": "x", "model": "m"},
        {"choices": [{"message": {}}]},
    ],
)
def test_malformed_completions_raise_wire_format_error(body):
    with pytest.raises(WireFormatError):
        response_from_openai(body, MODEL_ID)


# --- streaming -------------------------------------------------------------------------------


def decode(chunks: list[dict], model_id: str = MODEL_ID) -> list[StreamEvent]:
    decoder = OpenAIStreamDecoder(model_id)
    events = [e for chunk in chunks for e in decoder.feed(copy.deepcopy(chunk))]
    return events + decoder.finish()


def fold(events: list[StreamEvent]) -> Response:
    accumulator = StreamAccumulator()
    for event in events:
        accumulator.feed(event)
    return accumulator.response()


def parallel_tools_completion() -> dict:
    calls = [
        fx.tool_call("get_weather", {"city": "Paris", "unit": "c"}),
        fx.tool_call("get_weather", {"city": "Oslo", "unit": "c"}),
    ]
    return fx.completion(
        "Checking both.", tool_calls=calls, token_usage=fx.usage(300, 60, cached_tokens=256)
    )


def test_text_stream_emits_the_canonical_event_sequence():
    body = fx.completion("Hello world", token_usage=fx.usage(20, 3))
    events = decode(fx.stream_chunks(body, chunk_size=6))
    assert [type(e) for e in events] == [
        MessageStart,
        BlockStart,
        BlockDelta,
        BlockDelta,
        BlockStop,
        MessageDelta,
        MessageStop,
    ]
    assert [e.delta["text"] for e in events if isinstance(e, BlockDelta)] == ["Hello ", "world"]
    final = events[-2]
    assert isinstance(final, MessageDelta)
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        "end_turn",
        20,
        3,
    )


@pytest.mark.parametrize(
    "body",
    [
        fx.completion("Hello world, how are you?"),
        parallel_tools_completion(),
        fx.completion(None, refusal="I can't help with that."),
    ],
    ids=["text", "parallel-tools", "refusal"],
)
def test_streamed_response_equals_the_json_response(body):
    streamed = fold(decode(fx.stream_chunks(body)))
    whole = response_from_openai(copy.deepcopy(body), MODEL_ID)
    assert streamed.model_dump(exclude={"openai"}) == whole.model_dump(exclude={"openai"})


def test_parallel_tool_calls_become_separate_blocks_with_json_deltas():
    events = decode(fx.stream_chunks(parallel_tools_completion(), chunk_size=5))
    starts = [e for e in events if isinstance(e, BlockStart)]
    assert [(e.index, e.block.type) for e in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
    ]
    fragments = [
        e.delta["partial_json"] for e in events if isinstance(e, BlockDelta) and e.index == 2
    ]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"city": "Oslo", "unit": "c"}
    assert [e.index for e in events if isinstance(e, BlockStop)] == [0, 1, 2]


def test_encoder_output_decodes_to_the_same_events():
    events = decode(fx.stream_chunks(parallel_tools_completion()), model_id=MODEL_ID)
    encoder = OpenAIStreamEncoder(fx.MODEL, created=fx.CREATED)
    chunks = [c for e in events for c in encoder.encode(e)]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert decode(chunks) == events
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == parallel_tools_completion()["usage"]


def test_encoder_renders_an_anthropic_stream_for_openai_clients():
    start = MessageStart(message=Response(id="msg_1", model="anthropic:claude-sonnet-4-6"))
    events: list[StreamEvent] = [
        start,
        BlockStart(index=0, block=ThinkingBlock(thinking="")),
        BlockDelta(index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
        BlockStop(index=0),
        BlockStart(index=1, block=TextBlock(text="")),
        BlockDelta(index=1, delta={"type": "text_delta", "text": "Done."}),
        BlockStop(index=1),
        BlockStart(index=2, block=ToolUseBlock(id="toolu_1", name="ls")),
        BlockStop(index=2),
        MessageDelta(stop_reason="tool_use", usage=Usage(input_tokens=5, output_tokens=2)),
        MessageStop(),
    ]
    encoder = OpenAIStreamEncoder("tierwise-auto", include_usage=False)
    chunks = [c for e in events for c in encoder.encode(e)]
    assert all("usage" not in c for c in chunks)
    response = fold(decode(chunks, model_id="x:y"))
    assert response.content == [
        TextBlock(text="Done."),
        ToolUseBlock(id="toolu_1", name="ls", input={}),
    ]
    assert response.stop_reason == "tool_use"


def test_stream_without_finish_reason_is_an_error():
    chunks = fx.stream_chunks(fx.completion("Hello"))[:-2]
    decoder = OpenAIStreamDecoder(MODEL_ID)
    for chunk in chunks:
        decoder.feed(chunk)
    with pytest.raises(WireFormatError, match="finish_reason"):
        decoder.finish()


def test_interleaved_tool_fragments_are_an_error():
    body = parallel_tools_completion()
    chunks = fx.stream_chunks(body)
    late = fx.stream_chunks(body)[0] | {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}
        ]
    }
    decoder = OpenAIStreamDecoder(MODEL_ID)
    for chunk in chunks[:-2]:
        decoder.feed(chunk)
    with pytest.raises(WireFormatError, match="interleaved"):
        decoder.feed(late)


def test_malformed_chunk_is_an_error():
    decoder = OpenAIStreamDecoder(MODEL_ID)
    with pytest.raises(WireFormatError, match="id"):
        decoder.feed({"choices": []})


def test_sse_framing_round_trips_through_the_parser():
    chunk = fx.stream_chunks(fx.completion("é"))[1]
    payload = (sse_encode(chunk) + b": keep-alive\n\n" + SSE_DONE).decode()
    parser = SSEParser()
    data = [d for line in payload.split("\n") if (d := parser.feed(line)) is not None]
    assert data == [json.dumps(chunk, ensure_ascii=False, separators=(",", ":")), "[DONE]"]
    assert json.loads(data[0]) == chunk


def test_sse_parser_joins_multi_line_data():
    parser = SSEParser()
    lines = ["event: message", 'data: {"a":', "data: 1}", ""]
    assert [parser.feed(line) for line in lines] == [None, None, None, '{"a":\n1}']
