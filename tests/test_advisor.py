"""The advisor rung: native pass-through and emulation, over fake upstreams speaking the wire.

Executor and advisor are scripted fakes (FakeOpenAI, FakeAnthropic) behind the real SDKs;
costs are checked to the exact Decimal against catalog prices worked by hand in comments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import anthropic_upstream as fx
from tests.fakes import openai_upstream as fo
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import fake_engine
from tierwise.advisor.report import consult_report
from tierwise.advisor.tool import ERROR_CODES, as_client_tool_history, strip_advisor
from tierwise.config import Settings, load_settings
from tierwise.engine import Engine, Result
from tierwise.errors import InvalidRequestError, PolicyError
from tierwise.ledger.records import CallRecord, ConsultRecord, OutcomeRecord
from tierwise.ledger.store import Ledger
from tierwise.messages import (
    AdvisorToolResultBlock,
    ContentBlock,
    Request,
    Response,
    ServerToolUseBlock,
    TextBlock,
)
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.streaming import collect
from tierwise.wire.anthropic import request_from_anthropic

EMULATED = "advisor:openai:gpt-4o-mini?advisor=anthropic:claude-opus-4-7&max_uses=2"
NATIVE = "advisor:anthropic:claude-sonnet-4-6?advisor=anthropic:claude-opus-4-7"
ADVICE = "Check the off-by-one in the loop bound first."
FIRST = "Let me get a second opinion before editing."
AFTER = "The loop should stop at len(items) - 1; fixing that."
TASK = [{"role": "user", "content": "The loop in parse() skips the last item. Fix it."}]

# gpt-4o-mini executor ($0.15 in, $0.60 out, $0.075 cached) and Opus 4.7 advisor ($5 in,
# $25 out, $10 1-hour cache write), per million tokens:
#   executor 1: 1200 * 0.15 + 85 * 0.60                 =    231
#   advisor:    9400 * 5 + 620 * 25 + 2800 * 10          = 90_500
#   executor 2: 1905 * 0.15 + 8600 * 0.075 + 240 * 0.60  =  1_074.75
EXECUTOR_COST = Decimal("0.00130575")
ADVISOR_COST = Decimal("0.0905")
# The native exchange (Sonnet 4.6 executor, see tests/test_cost_exactness.py).
NATIVE_COST = Decimal("0.11192")


# --- fixtures and scripts ---------------------------------------------------------------------


@pytest.fixture
def fakes() -> tuple[FakeAnthropic, FakeOpenAI]:
    return FakeAnthropic(), FakeOpenAI()


def _settings(tmp_path: Path, **flags: Any) -> Settings:
    return load_settings(None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", **flags)


@pytest.fixture
async def engine(tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]) -> AsyncIterator[Engine]:
    async with fake_engine(_settings(tmp_path), *fakes) as engine:
        yield engine


def _advisor_call(text: str | None = FIRST, **usage: Any) -> dict[str, Any]:
    """The executor's turn that calls the advisor function (``call_advisor``)."""
    call = fo.tool_call("advisor", {}, call_id="call_advisor")
    return fo.completion(text, tool_calls=[call], token_usage=fo.usage(**usage))


def script_emulated_exchange(fa: FakeAnthropic, foa: FakeOpenAI) -> None:
    """Executor asks, the advisor answers (1-hour cache write), the executor finishes."""
    foa.reply_completion(_advisor_call(prompt_tokens=1200, completion_tokens=85))
    fa.reply_message(
        fx.text_message(
            ADVICE, model=fx.ADVISOR_MODEL, usage_=fx.usage(9400, 620, cache_write_1h=2800)
        )
    )
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(10505, 240, cached_tokens=8600)))


def _advisor_tool(**fields: Any) -> dict[str, Any]:
    return {"type": "advisor_20260301", "name": "advisor", "model": fx.ADVISOR_MODEL} | fields


def _request(headers: dict[str, str] | None = None, **fields: Any) -> Request:
    """A request as an Anthropic client sends it (``fields`` are body fields)."""
    request = request_from_anthropic({"messages": TASK, "max_tokens": 1024} | fields)
    return request.model_copy(update={"headers": headers or {}})


def _shape(content: list[ContentBlock]) -> list[tuple[str, Any]]:
    """Blocks without their (fresh) ids: type and text or result."""
    out: list[tuple[str, Any]] = []
    for block in content:
        if isinstance(block, TextBlock):
            out.append(("text", block.text))
        elif isinstance(block, AdvisorToolResultBlock):
            out.append(("advisor_tool_result", block.content))
        elif isinstance(block, ServerToolUseBlock):
            out.append(("server_tool_use", (block.name, block.input)))
        else:
            out.append((block.type, None))
    return out


def _iterations(response: Response) -> list[tuple[str, str | None]]:
    return [(it.kind, it.model) for it in response.usage.iterations]


def _paired(content: list[ContentBlock]) -> None:
    """Every advisor result follows the server_tool_use with its id."""
    for i, block in enumerate(content):
        if isinstance(block, AdvisorToolResultBlock):
            before = content[i - 1]
            assert isinstance(before, ServerToolUseBlock) and before.id == block.tool_use_id


def _consults(engine: Engine, result: Result) -> list[ConsultRecord]:
    return engine.ledger.read(ConsultRecord, task_ids=[result.task_id])


def _calls(engine: Engine, result: Result) -> list[CallRecord]:
    return engine.ledger.calls(result.task_id)


# --- done when: emulated over loopback == native ----------------------------------------------


async def test_emulated_openai_executor_matches_native_and_splits_cost_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test")
    fa, foa = FakeAnthropic(), FakeOpenAI()
    script_emulated_exchange(fa, foa)
    fa.reply_message(fx.advisor_message())
    with serve(fa.handler) as anthropic_url, serve(foa.handler) as openai_url:
        providers = {
            "anthropic": {"base_url": anthropic_url},
            "openai": {"base_url": f"{openai_url}/v1"},
        }
        async with Engine(_settings(tmp_path, providers=providers)) as engine:
            tool = _advisor_tool(
                max_uses=3, max_tokens=2048, caching={"type": "ephemeral", "ttl": "1h"}
            )
            body = _request(tools=[tool])
            emulated = await engine.complete(body, "fixed:openai:gpt-4o-mini")
            native = await engine.complete(body, "fixed:anthropic:claude-sonnet-4-6")
            calls = _calls(engine, emulated)
            consults = _consults(engine, emulated)

    assert _shape(emulated.response.content) == _shape(native.response.content)
    assert _iterations(emulated.response) == _iterations(native.response)
    assert _iterations(native.response) == [
        ("message", None),
        ("advisor_message", fx.ADVISOR_MODEL),
        ("message", None),
    ]
    _paired(emulated.response.content)
    assert emulated.response.stop_reason == native.response.stop_reason == "end_turn"
    # the ledger splits executor and advisor exactly
    assert [(c.role, c.model) for c in calls] == [
        ("executor", "openai:gpt-4o-mini"),
        ("advisor", "anthropic:claude-opus-4-7"),
        ("executor", "openai:gpt-4o-mini"),
    ]
    by_role: dict[str, Decimal] = {}
    for call in calls:
        assert call.cost_usd is not None
        by_role[call.role] = by_role.get(call.role, Decimal(0)) + call.cost_usd
    assert by_role == {"executor": EXECUTOR_COST, "advisor": ADVISOR_COST}
    assert emulated.cost_usd == EXECUTOR_COST + ADVISOR_COST
    assert native.cost_usd == NATIVE_COST
    (consult,) = consults
    assert (consult.mode, consult.result, consult.followed_by) == (
        "emulated",
        "advisor_result",
        "text",
    )
    assert consult.advisor_cost_usd == ADVISOR_COST and consult.executor_cost_usd == Decimal(
        "0.000231"
    )
    assert consult.advisor_tokens["cache_write_1h_tokens"] == 2800
    # the advisor read the transcript, capped and cached as the tool says, with no tools
    advisor_body = fa.requests[0].json()
    assert advisor_body["max_tokens"] == 2048 and "tools" not in advisor_body
    transcript = json.dumps(advisor_body["messages"])
    assert "skips the last item" in transcript and FIRST in transcript
    assert advisor_body["messages"][0]["content"][-2]["cache_control"] == {
        "type": "ephemeral",
        "ttl": "1h",
    }
    # the executor saw an `advisor` function and got the advice as its result
    second = foa.requests[1].json()
    assert [t["function"]["name"] for t in second["tools"]] == ["advisor"]
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_advisor",
        "content": ADVICE,
    }


async def test_emulated_anthropic_executor_without_beta_equals_native_exactly(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    providers = {"anthropic": {"advisor_beta": False}}
    engine = fake_engine(_settings(tmp_path, providers=providers), fa, foa)
    first, advisor, last = (dict(it) for it in fx.ADVISOR_ITERATIONS)
    call = {"type": "tool_use", "id": "toolu_01Adv", "name": "advisor", "input": {}}
    fa.reply_message(
        fx.message(
            [{"type": "text", "text": FIRST}, call],
            stop_reason="tool_use",
            usage_=fx.usage(1200, 85, cache_read=8000, cache_write_5m=600),
        )
    )
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(9400, 620, cache_write_1h=2800)))
    fa.reply_message(fx.text_message(AFTER, usage_=fx.usage(1905, 240, cache_read=8600)))
    body = _request(
        tools=[_advisor_tool()],
    )
    async with engine:
        result = await engine.complete(body, "fixed:anthropic:claude-sonnet-4-6")
    native = Response.model_validate(
        {"id": "x", "model": "m", **{k: fx.advisor_message()[k] for k in ("content",)}}
    )
    assert _shape(result.response.content) == _shape(native.content)
    usage = result.response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (1200, 325, 8000)
    assert [it.model_dump(exclude={"kind", "model"}) for it in usage.iterations] == [
        {
            "input_tokens": i["input_tokens"],
            "output_tokens": i["output_tokens"],
            "cache_write_5m_tokens": i["cache_creation"]["ephemeral_5m_input_tokens"],
            "cache_write_1h_tokens": i["cache_creation"]["ephemeral_1h_input_tokens"],
            "cache_read_tokens": i["cache_read_input_tokens"],
        }
        for i in (first, advisor, last)
    ]
    assert result.cost_usd == NATIVE_COST  # the same tokens at the same prices
    executor_request = fa.requests[0]
    assert "advisor-tool" not in executor_request.headers.get("anthropic-beta", "")
    assert executor_request.json()["tools"][0]["name"] == "advisor"
    assert "type" not in executor_request.json()["tools"][0]


# --- native ----------------------------------------------------------------------------------


async def test_native_request_goes_through_untouched_and_consult_is_recorded(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    fa.reply_message(fx.advisor_message(fx.advisor_redacted_result()))
    body = fx.claude_code_request()
    del body["stream"]
    request = request_from_anthropic(body).model_copy(
        update={"headers": dict(fx.CLAUDE_CODE_HEADERS)}
    )
    result = await engine.complete(request, "fixed:anthropic:claude-sonnet-4-6")
    sent = fa.last_request
    assert sent.json() == {**body, "model": "claude-sonnet-4-6"}  # untouched
    assert sent.headers["anthropic-beta"] == fx.CLAUDE_CODE_HEADERS["anthropic-beta"]
    redacted = result.response.content[2]
    assert isinstance(redacted, AdvisorToolResultBlock)
    assert redacted.content == fx.advisor_redacted_result()  # verbatim
    assert result.cost_usd == NATIVE_COST
    (consult,) = _consults(engine, result)
    # Opus 4.7: 9400 * 5 + 620 * 25 + 2800 * 10 = 90_500 per million; the executor's first
    # iteration at Sonnet 4.6: 1200 * 3 + 85 * 15 + 8000 * 0.3 + 600 * 3.75 = 9_525
    assert (consult.mode, consult.result, consult.turn_index) == (
        "native",
        "advisor_redacted_result",
        2,
    )
    assert consult.consult_index == 2  # one consult earlier in the history (the redacted one)
    assert consult.advisor_cost_usd == Decimal("0.0905")
    assert consult.executor_cost_usd == Decimal("0.009525")
    assert consult.followed_by == "text"


async def test_policy_adds_the_tool_and_the_beta_for_a_native_pair(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    fa.reply_message(fx.advisor_message())
    result = await engine.complete(_request(), NATIVE + "&max_uses=2&caching=5m")
    sent = fa.last_request
    assert sent.json()["tools"] == [
        {
            "type": "advisor_20260301",
            "name": "advisor",
            "model": "claude-opus-4-7",
            "max_uses": 2,
            "max_tokens": 2048,
            "caching": {"type": "ephemeral", "ttl": "5m"},
        }
    ]
    assert fx.ADVISOR_BETA in sent.headers["anthropic-beta"]
    assert "(natively)" in result.decisions[0].reason


def _script_pause(fa: FakeAnthropic) -> dict[str, Any]:
    """The native exchange paused after the advisor's result, then finished; the paused
    message."""
    paused = fx.advisor_message()
    paused["content"] = paused["content"][:3]
    paused["stop_reason"] = "pause_turn"
    fa.reply_message(paused)
    fa.reply_message(fx.text_message(AFTER, usage_=fx.usage(2000, 50)))
    return paused


async def test_pause_turn_is_resumed_with_the_paused_content(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    paused = _script_pause(fa)
    result = await engine.complete(
        _request(tools=[_advisor_tool()]), "fixed:anthropic:claude-sonnet-4-6"
    )
    resumed = fa.requests[1].json()
    assert resumed["messages"][-1] == {"role": "assistant", "content": paused["content"]}
    assert _shape(result.response.content) == _shape(
        Response.model_validate(
            {"id": "x", "model": "m", "content": fx.advisor_message()["content"]}
        ).content
    )
    assert result.response.stop_reason == "end_turn"
    assert _iterations(result.response) == [
        ("message", None),
        ("advisor_message", fx.ADVISOR_MODEL),
        ("message", None),
        ("message", None),
    ]
    # both calls are billed: the exchange, then Sonnet 4.6 at 2000 * 3 + 50 * 15 = 6_750
    assert result.cost_usd == NATIVE_COST + Decimal("0.00675")
    first, _ = _calls(engine, result)
    (consult,) = _consults(engine, result)  # billed by the paused call
    assert consult.advisor_call_id == consult.executor_call_id == first.id
    assert consult.advisor_cost_usd == ADVISOR_COST


async def test_pause_turn_resumption_is_bounded(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    engine = fake_engine(_settings(tmp_path, advisor={"max_pause_turns": 1}), fa, foa)
    for _ in range(2):
        fa.reply_message(fx.text_message("...", stop_reason="pause_turn"))
    async with engine:
        result = await engine.complete(
            _request(tools=[_advisor_tool()]), "fixed:anthropic:claude-sonnet-4-6"
        )
    assert result.response.stop_reason == "pause_turn" and len(fa.requests) == 2


# --- emulated: consult / no consult / max_uses / errors ----------------------------------------


async def test_no_consult_is_one_executor_call(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    _, foa = fakes
    foa.reply_completion(fo.completion("Fixed: range(len(items)).", token_usage=fo.usage(100, 20)))
    result = await engine.complete(_request(), EMULATED)
    assert _shape(result.response.content) == [("text", "Fixed: range(len(items)).")]
    assert _iterations(result.response) == [("message", None)]
    # 100 * 0.15 + 20 * 0.60 = 27 per million
    assert result.cost_usd == Decimal("0.000027")
    assert _consults(engine, result) == []
    system = foa.last_request.json()["messages"][0]
    assert system["role"] == "system" and "`advisor` tool" in system["content"]
    assert "security" in system["content"] and "after 2 failed attempts" in system["content"]


async def test_over_max_uses_the_executor_gets_the_error_and_goes_on(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))
    foa.reply_completion(_advisor_call("Once more.", prompt_tokens=200, completion_tokens=10))
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    result = await engine.complete(_request(), EMULATED.replace("max_uses=2", "max_uses=1"))
    results = [b.content for b in result.response.content if isinstance(b, AdvisorToolResultBlock)]
    assert results == [
        {"type": "advisor_result", "text": ADVICE, "stop_reason": "end_turn"},
        {"type": "advisor_tool_result_error", "error_code": "max_uses_exceeded"},
    ]
    _paired(result.response.content)
    assert result.response.text().endswith(AFTER) and len(fa.requests) == 1
    assert (
        foa.last_request.json()["messages"][-1]["content"]
        == "advisor unavailable: max_uses_exceeded"
    )
    consults = _consults(engine, result)
    assert [(c.result, c.followed_by, c.consult_index) for c in consults] == [
        ("advisor_result", "text", 1),
        ("max_uses_exceeded", "text", 1),
    ]
    assert consults[1].advisor_cost_usd == 0 and consults[1].advisor_call_id is None
    assert _iterations(result.response) == [
        ("message", None),
        ("advisor_message", "claude-opus-4-7"),
        ("message", None),
        ("message", None),
    ]


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (529, "overloaded_error", "overloaded"),
        (429, "rate_limit_error", "too_many_requests"),
        (400, "invalid_request_error", "prompt_too_long"),
        (500, "api_error", "unavailable"),
    ],
)
async def test_an_advisor_failure_is_an_error_block_and_the_executor_goes_on(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], status: int, kind: str, code: str
) -> None:
    fa, foa = fakes
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_error(
        status,
        kind,
        "prompt is too long: 210000 tokens > 200000 maximum" if code == "prompt_too_long" else kind,
    )
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    result = await engine.complete(_request(), EMULATED)
    (block,) = [b for b in result.response.content if isinstance(b, AdvisorToolResultBlock)]
    assert block.content == {"type": "advisor_tool_result_error", "error_code": code}
    assert result.response.text().endswith(AFTER)
    calls = _calls(engine, result)
    assert [(c.role, c.status) for c in calls] == [
        ("executor", "ok"),
        ("advisor", "error"),
        ("executor", "ok"),
    ]
    (consult,) = _consults(engine, result)
    assert consult.result == code and consult.advisor_call_id == calls[1].id
    # a refused call is not billed: 100 * 0.15 + 10 * 0.6 + 300 * 0.15 + 30 * 0.6 = 84
    assert result.cost_usd == Decimal("0.000084")


async def test_client_tool_calls_beside_a_consult_end_the_turn(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    bash = fo.tool_call("Bash", {"command": "pytest -q"}, call_id="call_bash")
    both = fo.completion(FIRST, tool_calls=[fo.tool_call("advisor", {}, call_id="call_a"), bash])
    foa.reply_completion(both)
    fa.reply_message(fx.text_message(ADVICE))
    tool = {"name": "Bash", "description": "Run", "input_schema": {"type": "object"}}
    result = await engine.complete(_request(tools=[tool]), EMULATED)
    assert [b.type for b in result.response.content] == [
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "tool_use",
    ]
    assert result.response.stop_reason == "tool_use" and len(foa.requests) == 1
    (consult,) = _consults(engine, result)
    assert consult.followed_by == "tool_use:Bash"


async def test_conversation_consult_cap_refuses_without_calling_the_advisor(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    engine = fake_engine(_settings(tmp_path, advisor={"max_consults_per_conversation": 1}), fa, foa)
    history = fx.advisor_message()["content"]
    messages = [
        *TASK,
        {"role": "assistant", "content": history},
        {"role": "user", "content": "And the tests?"},
    ]
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    foa.reply_completion(fo.completion("Done.", token_usage=fo.usage(300, 30)))
    async with engine:
        result = await engine.complete(_request(messages=messages), EMULATED)
    assert not fa.requests
    (consult,) = _consults(engine, result)
    assert (consult.result, consult.turn_index) == ("max_uses_exceeded", 1)


async def test_dollar_cap_per_conversation(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    engine = fake_engine(
        _settings(tmp_path, advisor={"max_usd_per_conversation": "0.001"}), fa, foa
    )
    for _ in range(2):
        foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
        foa.reply_completion(fo.completion("Done.", token_usage=fo.usage(300, 30)))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))  # $0.00375 > cap
    async with engine:
        first = await engine.complete(_request(), EMULATED)
        second = await engine.complete(_request(), EMULATED)
    assert _consults(engine, first)[0].result == "advisor_result"
    assert _consults(engine, second)[0].result == "max_uses_exceeded"
    assert len(fa.requests) == 1


# --- multi-turn history ----------------------------------------------------------------------


async def test_earlier_consults_round_trip_to_an_emulated_executor(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    _, foa = fakes
    history = [*TASK, {"role": "assistant", "content": fx.advisor_message()["content"]}]
    messages = [*history, {"role": "user", "content": "Thanks. Now add a test."}]
    foa.reply_completion(fo.completion("Added.", token_usage=fo.usage(50, 5)))
    await engine.complete(_request(messages=messages), EMULATED)
    sent = foa.last_request.json()["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[2]["content"] == FIRST
    assert sent[2]["tool_calls"][0]["function"] == {"name": "advisor", "arguments": "{}"}
    assert sent[3] == {"role": "tool", "tool_call_id": fx.ADVISOR_TOOL_USE_ID, "content": ADVICE}
    assert sent[4]["content"] == AFTER


async def test_dropping_the_tool_strips_earlier_advisor_blocks(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    history = [*TASK, {"role": "assistant", "content": fx.advisor_message()["content"]}]
    messages = [*history, {"role": "user", "content": "Thanks."}]
    fa.reply_message(fx.text_message("You're welcome."))
    headers = {"anthropic-beta": f"claude-code-20250219,{fx.ADVISOR_BETA}"}
    result = await engine.complete(
        _request(messages=messages, headers=headers), "fixed:anthropic:claude-haiku-4-5"
    )
    sent = fa.last_request
    assert sent.json()["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": FIRST}, {"type": "text", "text": AFTER}],
    }
    assert sent.headers["anthropic-beta"] == "claude-code-20250219"
    assert result.response.text() == "You're welcome."


# --- streaming -------------------------------------------------------------------------------


async def test_emulated_stream_carries_the_same_blocks(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    script_emulated_exchange(*fakes)
    streamed = await collect(engine.stream(_request(), EMULATED))
    assert _shape(streamed.content) == [
        ("text", FIRST),
        ("server_tool_use", ("advisor", {})),
        (
            "advisor_tool_result",
            {"type": "advisor_result", "text": ADVICE, "stop_reason": "end_turn"},
        ),
        ("text", AFTER),
    ]
    assert _iterations(streamed)[1] == ("advisor_message", "claude-opus-4-7")


async def test_native_stream_resumes_a_pause_in_one_event_sequence(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    _script_pause(fa)
    events = [
        e
        async for e in engine.stream(
            _request(tools=[_advisor_tool()]), "fixed:anthropic:claude-sonnet-4-6"
        )
    ]
    assert [e.type for e in events].count("message_start") == 1
    assert [e.type for e in events].count("message_stop") == 1
    starts = [e.index for e in events if e.type == "content_block_start"]
    assert starts == [0, 1, 2, 3]
    response = await collect(_replay(events))
    assert response.stop_reason == "end_turn" and response.text() == FIRST + AFTER
    assert len(response.usage.iterations) == 4
    assert fa.requests[1].json()["stream"] is True
    (consult,) = engine.ledger.read(ConsultRecord)
    assert (consult.mode, consult.advisor_cost_usd) == ("native", ADVISOR_COST)


async def _replay(events: list[Any]) -> Any:
    for event in events:
        yield event


# --- policy ----------------------------------------------------------------------------------


def test_default_advisor_policy_and_bad_parameters(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.policies["advisor"] == (
        "advisor:anthropic:claude-haiku-4-5?advisor=anthropic:claude-opus-4-7"
    )
    engine = Engine(settings)
    strategy = engine.strategy("advisor")
    assert strategy.name.startswith("advisor:anthropic:claude-haiku-4-5")
    with pytest.raises(PolicyError, match="max_uses must be a whole number"):
        engine.strategy("advisor:openai:gpt-5-mini?max_uses=lots")
    with pytest.raises(PolicyError, match="no parameter 'model'"):
        engine.strategy("advisor:openai:gpt-5-mini?model=x")
    with pytest.raises(PolicyError, match="caching must be"):
        engine.strategy("advisor:openai:gpt-5-mini?caching=1d")


async def test_an_unknown_advisor_model_is_one_clear_error(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    with pytest.raises(InvalidRequestError, match="advisor model 'claude-opus-9'"):
        await engine.complete(
            _request(tools=[_advisor_tool(model="claude-opus-9")]), "fixed:openai:gpt-4o-mini"
        )
    assert not fakes[1].requests


async def test_early_nudge_on_the_first_turn_only(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    engine = fake_engine(_settings(tmp_path, advisor={"early_nudge": True}), fa, foa)
    foa.reply_completion(fo.completion("ok", token_usage=fo.usage(10, 1)))
    foa.reply_completion(fo.completion("ok", token_usage=fo.usage(10, 1)))
    later = [*TASK, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go on"}]
    async with engine:
        await engine.complete(_request(), EMULATED)
        await engine.complete(_request(messages=later), EMULATED)
    first, second = (r.json()["messages"][-1]["content"] for r in foa.requests)
    assert "consult the advisor" in json.dumps(first)
    assert second == "go on"


async def test_an_advisor_unknown_to_the_catalog_still_passes_through_natively(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, _ = fakes
    reply = fx.advisor_message()
    reply["usage"]["iterations"][1]["model"] = "claude-opus-9"
    fa.reply_message(reply)
    tool = _advisor_tool(model="claude-opus-9")
    result = await engine.complete(_request(tools=[tool]), "fixed:anthropic:claude-sonnet-4-6")
    assert fa.last_request.json()["tools"] == [tool]
    assert result.cost_usd is None  # the advisor iteration's price is not known
    (consult,) = _consults(engine, result)
    assert consult.advisor_model == "anthropic:claude-opus-9"
    assert consult.advisor_cost_usd is None


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
async def test_every_advisor_error_code_comes_back_verbatim_from_native(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI], code: str
) -> None:
    fa, _ = fakes
    fa.reply_message(fx.advisor_message(fx.advisor_error(code)))
    result = await engine.complete(
        _request(tools=[_advisor_tool()]), "fixed:anthropic:claude-sonnet-4-6"
    )
    block = result.response.content[2]
    assert isinstance(block, AdvisorToolResultBlock)
    assert block.content == {"type": "advisor_tool_result_error", "error_code": code}
    (consult,) = _consults(engine, result)
    assert consult.result == code and consult.advisor_cost_usd == 0


async def test_redacted_and_refused_consults_reach_an_emulated_executor_as_tool_results(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    _, foa = fakes
    body = fx.claude_code_request()
    foa.reply_completion(fo.completion("Running it.", token_usage=fo.usage(50, 5)))
    await engine.complete(request_from_anthropic(body), "fixed:openai:gpt-4o-mini")
    sent = foa.last_request.json()
    results = {
        m["tool_call_id"]: m["content"]
        for m in sent["messages"]
        if m["role"] == "tool" and m["tool_call_id"].startswith("srvtoolu_")
    }
    assert results == {
        fx.ADVISOR_TOOL_USE_ID: "(the advisor's advice is not readable here)",
        "srvtoolu_01Second": "advisor unavailable: max_uses_exceeded",
    }
    assert [t["function"]["name"] for t in sent["tools"]][-1] == "advisor"


async def test_an_executor_without_tool_calling_runs_without_the_advisor(tmp_path: Path) -> None:
    """Mixtral on Together has no tool calling: it answers alone, nothing else is sent."""
    foa = FakeOpenAI()
    config = ProviderConfig(kind="openai", base_url="http://together.fake/v1")
    together = OpenAICompatProvider("together", config, "key", http_client=foa.client())
    foa.reply_completion(fo.completion("Alone.", token_usage=fo.usage(10, 2)))
    async with Engine(_settings(tmp_path), providers={"together": together}) as engine:
        result = await engine.complete(
            _request(tools=[_advisor_tool()]),
            "fixed:together:mistralai/Mixtral-8x7B-Instruct-v0.1",
        )
    assert result.response.text() == "Alone."
    assert "tools" not in foa.last_request.json()


async def test_dollar_cap_counts_the_request_under_way(
    tmp_path: Path, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    fa, foa = fakes
    engine = fake_engine(
        _settings(tmp_path, advisor={"max_usd_per_conversation": "0.001"}), fa, foa
    )
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    fa.reply_message(fx.text_message(ADVICE, usage_=fx.usage(500, 50)))  # $0.00375 > cap
    foa.reply_completion(_advisor_call("Again?", prompt_tokens=200, completion_tokens=10))
    foa.reply_completion(fo.completion("Done.", token_usage=fo.usage(300, 30)))
    async with engine:
        result = await engine.complete(_request(), EMULATED)
    assert [c.result for c in _consults(engine, result)] == ["advisor_result", "max_uses_exceeded"]
    assert len(fa.requests) == 1


def test_an_orphaned_advisor_result_becomes_text_for_an_emulated_executor() -> None:
    """Compaction can drop a server_tool_use and keep its result; the executor still gets a
    valid transcript (no tool result without its call)."""
    orphan = {
        "type": "advisor_tool_result",
        "tool_use_id": "srvtoolu_gone",
        "content": fx.advisor_result(ADVICE),
    }
    assistant = {"role": "assistant", "content": [orphan, {"type": "text", "text": AFTER}]}
    request = _request(messages=[*TASK, assistant, {"role": "user", "content": "ok"}])
    (_, turn, _) = as_client_tool_history(request.messages, "advisor")
    assert _shape(turn.content) == [("text", f"(advisor: {ADVICE})"), ("text", AFTER)]


def test_stripping_leaves_a_history_without_advisor_blocks_as_it_was() -> None:
    twice = [*TASK, {"role": "user", "content": "and another thing"}]
    request = _request(messages=twice, tools=[_advisor_tool()])
    stripped = strip_advisor(request)
    assert stripped.messages == request.messages and stripped.tools == []


# --- the consult report ----------------------------------------------------------------------


def _consult(task: str, turn: int, index: int, result: str = "advisor_result") -> ConsultRecord:
    return ConsultRecord(
        task_id=task,
        mode="emulated",
        executor_model="openai:gpt-4o-mini",
        advisor_model="anthropic:claude-opus-4-7",
        turn_index=turn,
        consult_index=index,
        result=result,
        followed_by="text",
        advisor_cost_usd=Decimal("0.09"),
        executor_cost_usd=Decimal("0.001"),
    )


def _ledger_with_consults(path: Path) -> str:
    url = f"sqlite:///{path / 'consults.db'}"
    with Ledger.open(url) as ledger:
        ledger.append(
            _consult("early", 0, 1),
            _consult("early", 0, 2, "overloaded"),
            _consult("late", 8, 1),
            _consult("late2", 9, 1),
            OutcomeRecord(task_id="early", outcome="success"),
            OutcomeRecord(task_id="early", outcome="success", correct=True, source="user"),
            OutcomeRecord(task_id="late", outcome="success", correct=False, source="gate"),
            OutcomeRecord(task_id="late2", outcome="failure"),
        )
    return url


def test_report_buckets_first_consults_by_turn_against_outcomes(tmp_path: Path) -> None:
    url = _ledger_with_consults(tmp_path)
    with Ledger.open(url) as ledger:
        report = consult_report(ledger.read(ConsultRecord), ledger.read(OutcomeRecord))
    rows = {row.turns: row for row in report.by_first_turn}
    assert (rows["0"].conversations, rows["0"].correct_share, rows["0"].succeeded) == (1, 1.0, 1)
    assert (rows["7+"].conversations, rows["7+"].labelled, rows["7+"].correct_share) == (2, 1, 0.0)
    assert rows["7+"].succeeded == 1 and rows["1-2"].conversations == 0
    assert report.advisor_usd == Decimal("0.36") and report.executor_usd == Decimal("0.004")
    assert report.results == {"advisor_result": 3, "overloaded": 1}


def test_consults_command_prints_the_report(tmp_path: Path) -> None:
    url = _ledger_with_consults(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "tierwise", "--ledger", url, "consults"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "4 consults; advisor $0.36, executor side $0.004" in done.stdout
    seven = next(line for line in done.stdout.splitlines() if "7+" in line)
    assert seven.split("│")[2].strip() == "2" and "0%" in seven
    assert "results: advisor_result 3, overloaded 1" in done.stdout


async def test_a_pair_anthropic_would_refuse_is_emulated(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    """Opus 4.7 consulting Sonnet 4.6 is not a valid native pair (the advisor is weaker)."""
    fa, _ = fakes
    fa.reply_message(fx.text_message("Done without help."))
    tool = _advisor_tool(model="claude-sonnet-4-6")
    result = await engine.complete(_request(tools=[tool]), "fixed:anthropic:claude-opus-4-7")
    sent = fa.last_request
    assert sent.json()["tools"][0]["name"] == "advisor" and "type" not in sent.json()["tools"][0]
    assert fx.ADVISOR_BETA not in sent.headers.get("anthropic-beta", "")
    assert result.response.text() == "Done without help."


async def test_an_openai_reasoning_advisor_gets_its_cap_as_max_completion_tokens(
    engine: Engine, fakes: tuple[FakeAnthropic, FakeOpenAI]
) -> None:
    _, foa = fakes
    foa.reply_completion(_advisor_call(prompt_tokens=100, completion_tokens=10))
    foa.reply_completion(fo.completion(ADVICE, token_usage=fo.usage(400, 80)))
    foa.reply_completion(fo.completion(AFTER, token_usage=fo.usage(300, 30)))
    policy = "advisor:openai:gpt-4o-mini?advisor=openai:gpt-5&max_tokens=512"
    result = await engine.complete(_request(), policy)
    asked = foa.requests[1].json()
    assert asked["model"] == "gpt-5" and asked["max_completion_tokens"] == 512
    assert "max_tokens" not in asked and "tools" not in asked
    assert _iterations(result.response)[1] == ("advisor_message", "gpt-5")
    # gpt-5 at $1.25 in, $10 out: 400 * 1.25 + 80 * 10 = 1_300 per million
    (consult,) = _consults(engine, result)
    assert consult.advisor_cost_usd == Decimal("0.0013")
