"""The emulated advisor streamed live: each executor step as it comes, one message in all.

Executor and advisor are scripted fakes speaking the real wire (OpenAI chunks, Anthropic
SSE); the same script runs once through ``Engine.complete`` and once through
``Engine.stream`` on fresh fakes and ledgers, and both must end in the same message and the
same ledger records.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.fakes import anthropic_upstream as fx
from tests.fakes import openai_upstream as fo
from tests.fakes.anthropic_upstream import FakeAnthropic, Reply
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import Served, fake_engine, gateway_settings, running_gateway
from tests.test_advisor import (
    ADVICE,
    AFTER,
    EMULATED,
    FIRST,
    _advisor_call,
    _advisor_tool,
    _request,
    _settings,
    _shape,
    script_emulated_exchange,
)
from tests.test_advisor_gateway import POLICY, PROMPT, TOOL
from tierwise.config import Settings
from tierwise.errors import ProviderError
from tierwise.ledger.records import CallRecord, ConsultRecord
from tierwise.messages import (
    AdvisorToolResultBlock,
    BlockDelta,
    BlockStart,
    MessageDelta,
    Response,
    StreamEvent,
    ToolUseBlock,
)
from tierwise.streaming import collect

Script = Callable[[FakeAnthropic, FakeOpenAI], None]
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}
SONNET = "fixed:anthropic:claude-sonnet-4-6"


def script_over_max_uses(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """Two consults asked for with max_uses=1: the second is refused, the executor goes on."""
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))
    foa.reply_completion(_advisor_call("Once more.", prompt_tokens=200, completion_tokens=10))
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))


def script_client_tool(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """One step calls the advisor and the client's Bash tool: the turn ends after the consult."""
    bash = fo.tool_call("Bash", {"command": "pytest -q"}, call_id="call_bash")
    calls = [fo.tool_call("advisor", {}, call_id="call_a"), bash]
    foa.reply_completion(fo.completion(FIRST, tool_calls=calls, token_usage=fo.usage(100, 20)))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(400, 40)))


def script_anthropic_executor(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """Sonnet without the beta: thinking, text and the advisor call stream as Anthropic SSE."""
    thinking = {"type": "thinking", "thinking": "Ask first.", "signature": "sig=="}
    call = {"type": "tool_use", "id": "toolu_01Adv", "name": "advisor", "input": {}}
    content = [thinking, {"type": "text", "text": FIRST}, call]
    fa.reply_message(fx.message(content, stop_reason="tool_use", usage_=fx.usage(1200, 85)))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(9400, 620, cache_write_1h=2800)))
    fa.reply_message(fx.text_message(AFTER, usage_=fx.usage(1905, 240, cache_read=8600)))


def script_advisor_overloaded(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """The advisor answers 529: the executor gets the ``overloaded`` error and goes on."""
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_error(529, "overloaded_error", "Overloaded")
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))


def script_over_dollar_cap(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """The first consult ($0.00375) spends the conversation's $0.001: the second is refused."""
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))
    foa.reply_completion(_advisor_call("Again?", prompt_tokens=200, completion_tokens=10))
    foa.reply_completion(fo.completion("Done.", token_usage=fo.usage(300, 30)))


@dataclass(frozen=True)
class Case:
    script: Script
    results: tuple[str, ...]
    """The consults' results the script leads to."""
    policy: str = EMULATED
    body: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)


CASES = {
    "consult": Case(script_emulated_exchange, ("advisor_result",)),
    "over_max_uses": Case(
        script_over_max_uses,
        ("advisor_result", "max_uses_exceeded"),
        EMULATED.replace("max_uses=2", "max_uses=1"),
    ),
    "client_tool": Case(script_client_tool, ("advisor_result",), body={"tools": [BASH]}),
    "advisor_overloaded": Case(script_advisor_overloaded, ("overloaded",)),
    "over_dollar_cap": Case(
        script_over_dollar_cap,
        ("advisor_result", "max_uses_exceeded"),
        flags={"advisor": {"max_usd_per_conversation": "0.001"}},
    ),
    "anthropic_executor": Case(
        script_anthropic_executor,
        ("advisor_result",),
        SONNET,
        body={"tools": [_advisor_tool()]},
        flags={"providers": {"anthropic": {"advisor_beta": False}}},
    ),
}


@dataclass
class Turn:
    """One run of a case: the client's message, its events (streamed) and the ledger."""

    response: Response
    events: list[StreamEvent]
    calls: list[CallRecord]
    consults: list[ConsultRecord]
    fakes: tuple[FakeAnthropic, FakeOpenAI]


async def _turn(tmp_path: Path, case: Case, *, streamed: bool) -> Turn:
    fa, foa = FakeAnthropic(), FakeOpenAI()
    case.script(fa, foa)
    where = tmp_path / ("streamed" if streamed else "completed")
    where.mkdir()
    events: list[StreamEvent] = []
    async with fake_engine(_settings(where, **case.flags), fa, foa) as engine:
        if streamed:
            events = [e async for e in engine.stream(_request(**case.body), case.policy)]
            response = await collect(_replay(events))
        else:
            response = (await engine.complete(_request(**case.body), case.policy)).response
        calls = engine.ledger.calls()
        consults = engine.ledger.read(ConsultRecord)
    return Turn(response, events, calls, consults, (fa, foa))


async def _replay(events: list[StreamEvent]) -> Any:
    for event in events:
        yield event


def _call_facts(calls: list[CallRecord]) -> list[dict[str, Any]]:
    """What a call record says, less what differs from run to run (ids, times, streaming)."""
    varying = {"id", "created_at", "task_id", "parent_id", "latency_ms", "ttft_ms", "stream"}
    return [call.model_dump(exclude=varying) for call in calls]


def _consult_facts(consults: list[ConsultRecord], calls: list[CallRecord]) -> list[Any]:
    """Consult records with their calls named by position in the ledger."""
    position = {call.id: i for i, call in enumerate(calls)}
    varying = {"id", "created_at", "task_id", "executor_call_id", "advisor_call_id"}
    return [
        (
            c.model_dump(exclude=varying),
            position.get(c.executor_call_id or ""),
            position.get(c.advisor_call_id or ""),
        )
        for c in consults
    ]


def _starts(events: list[StreamEvent]) -> list[BlockStart]:
    return [e for e in events if isinstance(e, BlockStart)]


# --- the streamed message is the completed one -----------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
async def test_the_streamed_turn_equals_the_completed_turn(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    completed = await _turn(tmp_path, case, streamed=False)
    streamed = await _turn(tmp_path, case, streamed=True)
    got, want = streamed.response, completed.response
    assert _shape(got.content) == _shape(want.content)
    assert (got.model, got.stop_reason, got.usage) == (want.model, want.stop_reason, want.usage)
    assert _call_facts(streamed.calls) == _call_facts(completed.calls)
    assert _consult_facts(streamed.consults, streamed.calls) == _consult_facts(
        completed.consults, completed.calls
    )
    assert tuple(c.result for c in streamed.consults) == case.results
    # one message, its blocks numbered on across the steps, the turn's own ending last
    kinds = [e.type for e in streamed.events]
    assert kinds.count("message_start") == kinds.count("message_stop") == 1
    assert kinds[-2:] == ["message_delta", "message_stop"] and kinds.count("message_delta") == 1
    assert [s.index for s in _starts(streamed.events)] == list(range(len(got.content)))
    # the executor streamed every step; the advisor answered in one piece
    executor_calls = [c for c in streamed.calls if c.role == "executor"]
    assert all(c.stream for c in executor_calls)
    assert not any(c.stream for c in streamed.calls if c.role == "advisor")


async def test_the_advisor_call_never_reaches_the_client_as_a_tool_use(tmp_path: Path) -> None:
    streamed = await _turn(tmp_path, CASES["anthropic_executor"], streamed=True)
    blocks = [s.block for s in _starts(streamed.events)]
    assert [b.type for b in blocks] == [
        "thinking",
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "text",
    ]
    use, result = blocks[2], blocks[3]
    assert use.model_dump(include={"name", "input"}) == {"name": "advisor", "input": {}}
    assert isinstance(result, AdvisorToolResultBlock) and result.content["text"] == ADVICE
    assert streamed.response.content[0].model_dump() == {
        "type": "thinking",
        "thinking": "Ask first.",
        "signature": "sig==",
    }


# --- live --------------------------------------------------------------------------------------


async def test_step_one_text_streams_before_the_advisor_is_called(tmp_path: Path) -> None:
    fa, foa = FakeAnthropic(), FakeOpenAI()
    script_emulated_exchange(fa, foa)
    advisor_requests_at_first_text: int | None = None
    async with fake_engine(_settings(tmp_path), fa, foa) as engine:
        async for event in engine.stream(_request(), EMULATED):
            text = isinstance(event, BlockDelta) and event.delta.get("type") == "text_delta"
            if text and advisor_requests_at_first_text is None:
                advisor_requests_at_first_text = len(fa.requests)
    assert advisor_requests_at_first_text == 0
    assert len(fa.requests) == 1 and len(foa.requests) == 2
    assert all(r.json()["stream"] is True for r in foa.requests)


# --- how a turn ends ---------------------------------------------------------------------------


async def test_a_client_tool_call_ends_the_streamed_turn(tmp_path: Path) -> None:
    streamed = await _turn(tmp_path, CASES["client_tool"], streamed=True)
    tool_uses = [s.block for s in _starts(streamed.events) if isinstance(s.block, ToolUseBlock)]
    assert [(b.name, b.id) for b in tool_uses] == [("Bash", "call_bash")]
    (bash,) = streamed.response.tool_calls()
    assert bash.input == {"command": "pytest -q"}
    (final,) = [e for e in streamed.events if isinstance(e, MessageDelta)]
    assert final.stop_reason == "tool_use"
    assert len(streamed.fakes[1].requests) == 1  # no step after the client's tool call
    (consult,) = streamed.consults
    assert consult.followed_by == "tool_use:Bash"


async def test_a_consult_over_max_uses_streams_the_error_result(tmp_path: Path) -> None:
    streamed = await _turn(tmp_path, CASES["over_max_uses"], streamed=True)
    results = [
        s.block.content
        for s in _starts(streamed.events)
        if isinstance(s.block, AdvisorToolResultBlock)
    ]
    assert results == [
        {"type": "advisor_result", "text": ADVICE, "stop_reason": "end_turn"},
        {"type": "advisor_tool_result_error", "error_code": "max_uses_exceeded"},
    ]
    assert len(streamed.fakes[0].requests) == 1  # the refused consult asked no one
    assert [c.result for c in streamed.consults] == ["advisor_result", "max_uses_exceeded"]


async def test_a_step_cut_midway_fails_the_stream_after_what_was_sent(tmp_path: Path) -> None:
    fa, foa = FakeAnthropic(), FakeOpenAI()
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))
    chunks = fo.stream_chunks(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    foa.reply_chunks(chunks[:3], done=False, drop=True)
    events: list[StreamEvent] = []
    async with fake_engine(_settings(tmp_path), fa, foa) as engine:
        with pytest.raises(ProviderError):
            async for event in engine.stream(_request(), EMULATED):
                events.append(event)
        calls = engine.ledger.calls()
    sent = [s.block.type for s in _starts(events)]
    assert sent == ["text", "server_tool_use", "advisor_tool_result", "text"]
    assert "message_stop" not in [e.type for e in events]
    assert [(c.role, c.status) for c in calls] == [
        ("executor", "ok"),
        ("advisor", "ok"),
        ("executor", "error"),
    ]


# --- through the gateway, to the real Anthropic SDK --------------------------------------------


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    configured = gateway_settings(settings.resolved_ledger_url(), policies={"advisor": POLICY})
    with running_gateway(configured) as served:
        yield served


def _advice_once_seen(seen: threading.Event, answered: list[bool]) -> Reply:
    """The advisor's answer, sent once the client has seen the executor's first text (or
    after five seconds); ``answered`` gets whether it had been seen."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(500):
            if seen.is_set():
                break
            await asyncio.sleep(0.01)
        answered.append(seen.is_set())
        yield json.dumps(fx.text_message(ADVICE, usage_=fx.usage(500, 50))).encode()

    def build(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "application/json", "request-id": request_id}
        return httpx2.Response(200, content=body(), headers=headers)

    return build


def _stream(gw: Served) -> Any:
    return gw.anthropic().beta.messages.stream(
        model="tierwise/advisor",
        max_tokens=1024,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[TOOL],  # type: ignore[list-item]
        betas=[fx.ADVISOR_BETA],
    )


def test_an_anthropic_client_reads_step_one_while_the_advisor_thinks(gw: Served) -> None:
    seen, answered = threading.Event(), []
    gw.openai_fake.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    gw.anthropic_fake.reply(_advice_once_seen(seen, answered))
    gw.openai_fake.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    with _stream(gw) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                seen.set()
        message = stream.get_final_message()
    assert answered == [True]  # the advisor answered after the client read the first text
    assert [block.type for block in message.content] == [
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "text",
    ]
    assert [it.type for it in message.usage.iterations or []] == [
        "message",
        "advisor_message",
        "message",
    ]


def test_a_step_cut_midway_ends_the_clients_stream_with_an_error_event(gw: Served) -> None:
    gw.openai_fake.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    gw.anthropic_fake.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))
    chunks = fo.stream_chunks(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    gw.openai_fake.reply_chunks(chunks[:3], done=False, drop=True)
    texts: list[str] = []
    with pytest.raises(anthropic.APIError) as caught, _stream(gw) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                texts.append(event.delta.text)
    assert "".join(texts).startswith(FIRST)  # step one had reached the client
    assert isinstance(caught.value.body, dict) and caught.value.body["type"] == "error"


async def test_the_last_streamed_step_may_not_call_a_tool(tmp_path: Path) -> None:
    """max_uses=0 allows three steps; the third goes out with tool_choice none."""
    fa, foa = FakeAnthropic(), FakeOpenAI()
    for asked in ("Advice?", "Still nothing?"):
        foa.reply_completion(_advisor_call(asked, prompt_tokens=100, completion_tokens=10))
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    policy = EMULATED.replace("max_uses=2", "max_uses=0")
    async with fake_engine(_settings(tmp_path), fa, foa) as engine:
        streamed = await collect(engine.stream(_request(), policy))
        consults = engine.ledger.read(ConsultRecord)
    assert [r.json().get("tool_choice") for r in foa.requests] == [None, None, "none"]
    assert [c.result for c in consults] == ["max_uses_exceeded"] * 2 and not fa.requests
    assert streamed.text() == "Advice?Still nothing?" + AFTER
