"""The classifier router end to end: a cheap model is asked, in structured output over the
real wire format (scripted fake upstreams through the real provider classes), what a task
needs; its answer routes the task, is cached on disk, and its cost is the task's."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx2
import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo
from tierwise.catalog import Catalog
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import MalformedResponseError
from tierwise.ledger.store import Ledger
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.routing.classifier import CLASSIFICATION_SCHEMA, parse_classification

HAIKU, SONNET, OPUS = (
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-6",
    "anthropic:claude-opus-4-7",
)
POLICY = f"route:classifier?model={HAIKU}&candidates={HAIKU},{SONNET},{OPUS}"
TASK = "Design the sharding scheme for our ledger tables and say how to move existing rows."
COMPLEX = {
    "task_kind": "complex",
    "skills": {
        "reasoning": 5,
        "coding": 3,
        "math": 1,
        "long_context": 1,
        "tool_use": 1,
        "writing": 2,
    },
}


def _anthropic_engine(settings: Settings, fake: fa.FakeAnthropic) -> Engine:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    config = ProviderConfig(kind="anthropic", base_url="http://anthropic.fake")
    provider = AnthropicProvider("anthropic", config, "sk-test", http_client=client)
    return Engine(settings, providers={"anthropic": provider})


def _answer(body: object, model: str = "claude-haiku-4-5") -> dict[str, object]:
    text = body if isinstance(body, str) else json.dumps(body)
    return fa.text_message(text, model=model, usage_=fa.usage(310, 46))


def _executor(model: str = "claude-opus-4-7") -> dict[str, object]:
    return fa.text_message("Shard by task id ...", model=model, usage_=fa.usage(40, 900))


async def test_the_classifier_is_asked_in_structured_output_and_routes(settings: Settings):
    fake = fa.FakeAnthropic().reply_message(_answer(COMPLEX)).reply_message(_executor())
    async with _anthropic_engine(settings, fake) as engine:
        result = await engine.complete(TASK, POLICY)
    asked, executed = (r.json() for r in fake.requests)
    assert asked["model"] == "claude-haiku-4-5"
    assert asked["output_config"] == {
        "format": {"type": "json_schema", "schema": CLASSIFICATION_SCHEMA}
    }
    assert asked["system"][0]["text"].startswith("You triage tasks for a model router.")
    assert TASK in json.dumps(asked["messages"])
    assert executed["model"] == "claude-opus-4-7" and "output_config" not in executed
    assert [c.role for c in result.calls] == ["classifier", "executor"]
    # haiku $1/$5 for the classifier; opus $5/$25 for the task (per million tokens)
    expected = (Decimal(310 * 1 + 46 * 5) + Decimal(40 * 5 + 900 * 25)) / Decimal(1_000_000)
    assert result.cost_usd == expected
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (decision,) = ledger.decisions(task_id=result.task_id)
        roles = [call.role for call in ledger.calls(task_id=result.task_id)]
    assert roles == ["classifier", "executor"]
    assert decision.router == "classifier" and decision.chosen_model == OPUS
    assert decision.reason == (
        f"classifier {HAIKU} (answer) says kind 'complex'; reasoning 5, coding 3, writing 2 "
        f"-> needs tier>=4, coding>=3, reasoning>=5, writing>=2 -> {OPUS}, "
        "the cheapest candidate that meets it"
    )
    assert [c["predicted_quality"] for c in decision.candidates] == [0.0, 0.0, 1.0]


async def test_answers_are_cached_on_disk_by_prompt(settings: Settings):
    simple = {"task_kind": "simple", "skills": dict.fromkeys(COMPLEX["skills"], 1)}
    fake = fa.FakeAnthropic().reply_message(_answer(simple))
    fake.reply_message(_executor("claude-haiku-4-5")).reply_message(_executor("claude-haiku-4-5"))
    async with _anthropic_engine(settings, fake) as engine:
        first = await engine.complete("List the files in src/.", POLICY)
    assert [c.role for c in first.calls] == ["classifier", "executor"]
    assert len(list((settings.cache_dir / "classifier").glob("*.json"))) == 1
    async with _anthropic_engine(settings, fake) as engine:  # a new engine: only the disk
        second = await engine.complete("List the files in src/.", POLICY)
    assert [c.role for c in second.calls] == ["executor"]
    assert second.calls[0].model == HAIKU
    assert len(fake.requests) == 3
    assert f"classifier {HAIKU} (cached answer) says kind 'simple'" in second.explain()


async def test_an_unusable_answer_falls_back_to_the_rules_and_is_not_cached(settings):
    fake = fa.FakeAnthropic().reply_message(_answer("It is a hard one, I would say."))
    fake.reply_message(_executor()).reply_message(_answer(COMPLEX)).reply_message(_executor())
    async with _anthropic_engine(settings, fake) as engine:
        result = await engine.complete(TASK, POLICY)
        again = await engine.complete(TASK, POLICY)
    assert [c.role for c in result.calls] == ["classifier", "executor"]
    assert result.calls[0].cost_usd is not None  # the unusable answer was still billed
    assert result.explain().startswith(
        "classifier: anthropic:claude-opus-4-7 — no classification (classifier answer "
        "unusable: not JSON (Expecting value)); the rules decide: rule 'architecture' fired "
        "(architecture words: sharding)"
    )
    assert [c.role for c in again.calls] == ["classifier", "executor"]  # asked again


async def test_a_failed_classifier_call_is_recorded_and_the_task_goes_on(settings):
    fake = fa.FakeAnthropic().reply_error(400, "invalid_request_error", "output_config: bad")
    fake.reply_message(_executor())
    async with _anthropic_engine(settings, fake) as engine:
        result = await engine.complete(TASK, POLICY)
    failed, executed = result.calls
    assert failed.role == "classifier" and failed.status == "error" and failed.http_status == 400
    assert executed.model == OPUS and executed.status == "ok"
    assert "no classification (output_config: bad)" in result.explain()


async def test_openai_classifier_gets_a_strict_json_schema_response_format(settings: Settings):
    answer = {"task_kind": "standard", "skills": dict(COMPLEX["skills"], reasoning=2)}
    fake = fo.FakeOpenAI().reply_completion(fo.completion(json.dumps(answer), model="gpt-5-nano"))
    fake.reply_completion(fo.completion("Done.", model="gpt-4.1"))
    config = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    provider = OpenAICompatProvider("openai", config, "sk-test", http_client=fake.client())
    policy = "route:classifier?candidates=openai:gpt-5-nano,openai:gpt-4.1-mini,openai:gpt-4.1"
    async with Engine(settings, providers={"openai": provider}) as engine:
        result = await engine.complete("Add retries to the HTTP client.", policy)
    asked, executed = (r.json() for r in fake.requests)
    assert asked["model"] == "gpt-5-nano"  # the cheapest candidate classifies by default
    assert asked["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "task_capability", "strict": True, "schema": CLASSIFICATION_SCHEMA},
    }
    assert asked["max_completion_tokens"] == 1024 and "max_tokens" not in asked
    assert executed["model"] == "gpt-4.1" and "response_format" not in executed
    assert [c.role for c in result.calls] == ["classifier", "executor"]


def test_parse_accepts_fenced_json_and_rejects_out_of_range_levels(catalog: Catalog):
    spec = catalog.get(HAIKU)
    fenced = "```json\n" + json.dumps(COMPLEX) + "\n```"
    assert parse_classification(fenced, spec).requirement().tier == 4
    bad = dict(COMPLEX, skills=dict(COMPLEX["skills"], reasoning=7))
    with pytest.raises(MalformedResponseError, match="skills: skill reasoning must be 1 to 5"):
        parse_classification(json.dumps(bad), spec)
    with pytest.raises(MalformedResponseError, match="task_kind"):
        parse_classification(json.dumps(dict(COMPLEX, task_kind="epic")), spec)
