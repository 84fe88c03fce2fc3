"""One budget per task: refused before a call that may not fit, stopped after a call that
billed more than projected, the best answer so far handed back, nothing lost from the ledger.

Prices per million tokens: Haiku 4.5 $1 / $5, Sonnet 4.6 $3 / $15, Opus 4.7 $5 / $25.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import fake_engine, gateway_settings, running_gateway
from tests.test_cli import tierwise
from tierwise.budget import TaskBudget, projected
from tierwise.catalog import Catalog
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import BudgetExceededError, PolicyError
from tierwise.ledger.records import LedgerRecord
from tierwise.ledger.store import Ledger
from tierwise.messages import Request
from tierwise.providers.base import ProviderConfig
from tierwise.strategies.base import TaskContext
from tierwise.streaming import collect

HAIKU, SONNET, OPUS = (
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-6",
    "anthropic:claude-opus-4-7",
)
BAD_ADD = "```python\ndef add(a, b)\n    return a + b\n```"


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
def engine(settings: Settings, fake: FakeAnthropic) -> Engine:
    return fake_engine(settings, fake, FakeOpenAI())


_OLLAMA = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", requires_key=False)
"""A local host named in the config (no call reaches it: the budget refuses first)."""


def _ask(max_tokens: int) -> Request:
    return Request.from_prompt("Write add(a, b) in Python.", max_tokens=max_tokens)


def test_projection_is_input_estimate_plus_max_tokens_at_catalog_prices(catalog: Catalog) -> None:
    request = _ask(1000)  # "Write add(a, b) in Python." is 10 words and marks
    assert projected(request, catalog.get(OPUS)).usd == Decimal(10 * 5 + 1000 * 25) / 1_000_000
    assert projected(request, catalog.get(OPUS)).tokens == 1010


async def test_a_call_that_may_not_fit_is_refused_before_it_is_made(
    engine: Engine, fake: FakeAnthropic, settings: Settings
) -> None:
    policy = f"fixed:{OPUS}?budget_usd=0.02"
    async with engine:
        with pytest.raises(BudgetExceededError) as caught:
            await engine.complete(_ask(1000), policy)
    assert str(caught.value) == (
        f"task budget of $0.02 exceeded: a call to {OPUS} (up to $0.02505 projected) would "
        "take the task from $0 to over its budget of $0.02"
    )
    assert caught.value.partial is None and caught.value.result is None
    assert fake.requests == []
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (task,) = ledger.tasks()
        (outcome,) = ledger.outcomes()
        assert ledger.calls() == []
    assert task.policy == policy
    assert outcome.outcome == "failure" and outcome.detail == str(caught.value)


async def test_cascade_out_of_budget_stops_with_its_best_answer(
    engine: Engine, fake: FakeAnthropic, settings: Settings
) -> None:
    fake.reply_message(fa.text_message(BAD_ADD, usage_=fa.usage(40, 30)))
    policy = f"cascade:{HAIKU},{OPUS}?gates=python&retries=0&budget_usd=0.005"
    async with engine:
        with pytest.raises(BudgetExceededError, match=f"a call to {OPUS}") as caught:
            await engine.complete(_ask(300), policy)
    # Haiku fitted (10 + 300 * 5 = $0.00151 projected) and cost 40 * 1 + 30 * 5 = $0.00019;
    # Opus would add up to 10 * 5 + 300 * 25 = $0.00755: over $0.005 in all
    assert "from $0.00019 to over its budget of $0.005" in str(caught.value)
    partial = caught.value.result
    assert partial is not None and partial.response.text() == BAD_ADD
    assert partial.cost_usd == Decimal("0.00019")
    assert [c.model for c in partial.calls] == [HAIKU] and len(fake.requests) == 1
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
        (gate,) = ledger.gate_results()
        (escalation,) = ledger.escalations()
        (outcome,) = ledger.outcomes()
    assert call.cost_usd == Decimal("0.00019") and call.response_text == BAD_ADD
    assert gate.gate == "python" and not gate.passed
    assert (escalation.from_model, escalation.to_model) == (HAIKU, OPUS)
    assert outcome.outcome == "failure" and "budget of $0.005 exceeded" in outcome.detail


async def test_judge_calls_count_against_the_budget(engine: Engine, fake: FakeAnthropic) -> None:
    fake.reply_message(fa.text_message("Paris.", usage_=fa.usage(20, 5)))
    policy = f"cascade:{HAIKU},{SONNET}?gates=judge:{OPUS}&budget_usd=0.005"
    async with engine:
        with pytest.raises(BudgetExceededError, match=f"a call to {OPUS}") as caught:
            await engine.complete(_ask(200), policy)
    assert caught.value.result is not None
    assert caught.value.result.response.text() == "Paris."


async def test_a_call_billed_over_its_projection_stops_the_task(
    engine: Engine, fake: FakeAnthropic, settings: Settings
) -> None:
    # a native advisor exchange bills an Opus sub-inference the projection cannot foresee
    fake.reply_message(fa.advisor_message())
    async with engine:
        with pytest.raises(BudgetExceededError) as caught:
            await engine.complete(_ask(2048), f"fixed:{SONNET}?budget_usd=0.05")
    assert str(caught.value).endswith("the task spent $0.11192, over its budget of $0.05")
    assert caught.value.result is not None and caught.value.result.cost_usd == Decimal("0.11192")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
        (outcome,) = ledger.outcomes()
    assert call.cost_usd == Decimal("0.11192") and outcome.outcome == "failure"


async def test_token_budget_and_engine_argument(engine: Engine, fake: FakeAnthropic) -> None:
    fake.reply_message(fa.text_message("ok", usage_=fa.usage(12, 3)))
    async with engine:
        with pytest.raises(BudgetExceededError, match="~510 tokens projected"):
            await engine.complete(_ask(500), f"fixed:{HAIKU}?budget_tokens=400")
        result = await engine.complete(_ask(500), f"fixed:{HAIKU}", budget=TaskBudget(tokens=600))
    assert result.response.text() == "ok" and len(fake.requests) == 1


async def test_streamed_task_refused_before_any_event(
    engine: Engine, fake: FakeAnthropic, settings: Settings
) -> None:
    async with engine:
        with pytest.raises(BudgetExceededError):
            await collect(engine.stream(_ask(1000), f"fixed:{OPUS}?budget_usd=0.001"))
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        assert [o.outcome for o in ledger.outcomes()] == ["failure"]
    assert fake.requests == []


def test_named_policy_with_a_budget_and_bad_budgets(settings: Settings) -> None:
    engine = Engine(settings.model_copy(update={"policies": {"strong": f"fixed:{OPUS}"}}))
    assert engine.strategy("strong?budget_usd=0.5").name == "strong?budget_usd=0.5"
    with pytest.raises(PolicyError, match="budget_usd must be a number"):
        engine.strategy(f"fixed:{OPUS}?budget_usd=five")
    with pytest.raises(PolicyError, match="must be positive"):
        engine.strategy(f"fixed:{OPUS}?budget_tokens=0")


def test_cli_prints_the_partial_answer_and_a_clear_message(tmp_path: Path) -> None:
    fake = FakeAnthropic().reply_message(fa.text_message(BAD_ADD, usage_=fa.usage(40, 30)))
    policy = f"cascade:{HAIKU},{OPUS}?gates=python&retries=0&budget_usd=0.005"
    with serve(fake.handler) as base:
        result = tierwise(
            "--ledger",
            f"sqlite:///{tmp_path}/l.db",
            "ask",
            "Write add(a, b) in Python.",
            "--policy",
            policy,
            "--max-tokens",
            "300",
            env={"ANTHROPIC_API_KEY": "sk-test", "TIERWISE_PROVIDERS__ANTHROPIC__BASE_URL": base},
        )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "def add(a, b)" in result.stdout
    assert "partial answer: the task stopped at its budget after $0.00019" in result.stdout
    assert result.stderr.startswith("error: task budget of $0.005 exceeded: a call to")


def test_gateway_answers_a_task_over_budget_with_402(settings: Settings) -> None:
    with running_gateway(gateway_settings(settings.resolved_ledger_url())) as gw:
        reply = gw.http().post(
            "/v1/messages",
            headers={"x-api-key": "tw-admin-test-0123456789", "anthropic-version": "2023-06-01"},
            json={
                "model": f"tierwise/fixed:{OPUS}?budget_usd=0.001",
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    assert reply.status_code == 402
    assert "task budget of $0.001 exceeded" in reply.json()["error"]["message"]


async def test_a_dollar_budget_refuses_a_model_of_unknown_price(settings: Settings) -> None:
    local = settings.model_copy(update={"providers": {**settings.providers, "ollama": _OLLAMA}})
    async with fake_engine(local, FakeAnthropic(), FakeOpenAI()) as engine:
        with pytest.raises(BudgetExceededError, match=r"price of ollama:llama3\.1:8b is unknown"):
            await engine.complete(_ask(100), "fixed:ollama:llama3.1:8b?budget_usd=1")


async def test_sub_tasks_spend_from_their_task_budget(engine: Engine, fake: FakeAnthropic) -> None:
    fake.reply_message(fa.text_message("step one done", usage_=fa.usage(100, 100)))
    records: list[LedgerRecord] = []

    async def keep(record: LedgerRecord) -> None:
        records.append(record)

    task = TaskContext(
        "task-budget",
        catalog=engine.catalog,
        provider_for=engine.provider_for,
        record=keep,
        budget=TaskBudget(usd=Decimal("0.001")),
    )
    step = await task.subtask("plan step 1")
    haiku = engine.catalog.get(HAIKU)
    async with engine:
        await step.call(_ask(100), haiku)  # projected $0.00051, billed 100 + 500 = $0.0006
        with pytest.raises(BudgetExceededError, match=r"from \$0\.0006 to over") as caught:
            await task.call(_ask(100), haiku)
    assert caught.value.partial is not None
    assert caught.value.partial.text() == "step one done" and len(fake.requests) == 1


def test_gateway_refuses_a_streamed_task_over_budget_with_402(settings: Settings) -> None:
    with running_gateway(gateway_settings(settings.resolved_ledger_url())) as gw:
        client = gw.openai()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=f"tierwise/fixed:{OPUS}?budget_usd=0.001",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=1000,
                stream=True,
            )
    assert caught.value.status_code == 402
    assert "task budget of $0.001 exceeded" in caught.value.message
