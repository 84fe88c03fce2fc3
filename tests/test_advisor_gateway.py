"""The advisor through the gateway, with the real ``anthropic`` SDK as the client.

``tierwise/advisor`` names a policy whose executor is an OpenAI-compatible model (FakeOpenAI)
and whose advisor is Opus 4.7 (FakeAnthropic): the client sends Anthropic's advisor tool
with its beta, and gets back the blocks and iterations the native tool returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.fakes import anthropic_upstream as fx
from tests.gateway_harness import Served, gateway_settings, running_gateway
from tests.test_advisor import (
    ADVICE,
    ADVISOR_COST,
    AFTER,
    EXECUTOR_COST,
    FIRST,
    TASK,
    script_emulated_exchange,
)
from tierwise.config import Settings
from tierwise.ledger.records import ConsultRecord
from tierwise.ledger.store import Ledger

PROMPT = TASK[0]["content"]
POLICY = "advisor:openai:gpt-4o-mini?advisor=anthropic:claude-opus-4-7"
TOOL: dict[str, Any] = {
    "type": "advisor_20260301",
    "name": "advisor",
    "model": "claude-opus-4-7",
    "max_uses": 2,
    "max_tokens": 1024,
}


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    configured = gateway_settings(settings.resolved_ledger_url(), policies={"advisor": POLICY})
    with running_gateway(configured) as served:
        yield served


def _ledger(gw: Served) -> Ledger:
    gw.flush_ledger()  # the gateway writes its records behind the response
    return Ledger.open(gw.settings.resolved_ledger_url())


def test_emulated_advisor_answers_an_anthropic_client_like_the_native_tool(gw: Served) -> None:
    script_emulated_exchange(gw.anthropic_fake, gw.openai_fake)
    raw = gw.anthropic().beta.messages.with_raw_response.create(
        model="tierwise/advisor",
        max_tokens=1024,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[TOOL],  # type: ignore[list-item]
        betas=[fx.ADVISOR_BETA],
    )
    message = raw.parse()
    assert [block.type for block in message.content] == [
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "text",
    ]
    use, result = message.content[1], message.content[2]
    assert use.type == "server_tool_use" and result.type == "advisor_tool_result"
    assert (use.name, use.input, result.tool_use_id) == ("advisor", {}, use.id)
    assert result.content.type == "advisor_result" and result.content.text == ADVICE
    texts = [b.text for b in message.content if b.type == "text"]
    assert texts == [FIRST, AFTER]
    assert message.model == "openai:gpt-4o-mini"  # the executor that ran
    iterations = message.usage.iterations or []
    assert [(it.type, getattr(it, "model", None)) for it in iterations] == [
        ("message", None),
        ("advisor_message", "claude-opus-4-7"),
        ("message", None),
    ]
    assert raw.headers["x-tierwise-cost-usd"] == str(EXECUTOR_COST + ADVISOR_COST)
    advisor_request = gw.anthropic_fake.last_request.json()
    assert advisor_request["max_tokens"] == 1024 and "tools" not in advisor_request
    with _ledger(gw) as ledger:
        calls = ledger.calls()
        consults = ledger.read(ConsultRecord)
    costs: dict[str, Decimal] = {}
    for call in calls:
        assert call.cost_usd is not None
        costs[call.role] = costs.get(call.role, Decimal(0)) + call.cost_usd
    assert costs == {"executor": EXECUTOR_COST, "advisor": ADVISOR_COST}
    (consult,) = consults
    assert (consult.mode, consult.result, consult.advisor_cost_usd) == (
        "emulated",
        "advisor_result",
        ADVISOR_COST,
    )


def test_emulated_advisor_streams_to_an_anthropic_client(gw: Served) -> None:
    script_emulated_exchange(gw.anthropic_fake, gw.openai_fake)
    with gw.anthropic().beta.messages.stream(
        model="tierwise/advisor",
        max_tokens=1024,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[TOOL],  # type: ignore[list-item]
        betas=[fx.ADVISOR_BETA],
    ) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == [
        "text",
        "server_tool_use",
        "advisor_tool_result",
        "text",
    ]
    assert message.stop_reason == "end_turn"
    assert [it.type for it in message.usage.iterations or []] == [
        "message",
        "advisor_message",
        "message",
    ]


def test_native_pair_passes_the_tool_through(settings: Settings) -> None:
    """The shipped ``tierwise/advisor`` (Haiku consulting Opus) is Anthropic's own tool."""
    with running_gateway(gateway_settings(settings.resolved_ledger_url())) as gw:
        gw.anthropic_fake.reply_message(fx.advisor_message())
        message = gw.anthropic().messages.create(
            model="tierwise/advisor",
            max_tokens=1024,
            messages=[{"role": "user", "content": PROMPT}],
        )
        sent = gw.anthropic_fake.last_request
    assert sent.json()["model"] == "claude-haiku-4-5"
    assert sent.json()["tools"][0]["type"] == "advisor_20260301"
    assert sent.json()["tools"][0]["model"] == "claude-opus-4-7"
    assert fx.ADVISOR_BETA in sent.headers["anthropic-beta"]
    assert [block.type for block in message.content][1:3] == [
        "server_tool_use",
        "advisor_tool_result",
    ]


def test_an_openai_client_gets_the_executor_answer_and_all_the_tokens(gw: Served) -> None:
    """An OpenAI client cannot see advisor blocks; it gets the text, and usage over every
    iteration (executor and advisor)."""
    script_emulated_exchange(gw.anthropic_fake, gw.openai_fake)
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="tierwise/advisor", messages=[{"role": "user", "content": PROMPT}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == FIRST + AFTER
    usage = completion.usage
    assert usage is not None
    # prompt: 1200 + (9400 + 2800 written) + (1905 + 8600 cached); completion: 85 + 620 + 240
    assert (usage.prompt_tokens, usage.completion_tokens) == (23905, 945)
    assert raw.headers["x-tierwise-cost-usd"] == str(EXECUTOR_COST + ADVISOR_COST)


def test_an_openai_client_streams_the_executor_answer(gw: Served) -> None:
    script_emulated_exchange(gw.anthropic_fake, gw.openai_fake)
    stream = gw.openai().chat.completions.create(
        model="tierwise/advisor",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FIRST + AFTER
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 945
