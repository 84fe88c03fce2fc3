"""The engine end to end on the replay provider and a real SQLite ledger."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tierwise.catalog import Catalog
from tierwise.config import Settings
from tierwise.datasets import RecordedOutcome
from tierwise.engine import Engine, SyncEngine
from tierwise.errors import InvalidRequestError, NotFoundError, PolicyError, UnknownModelError
from tierwise.ledger.store import Ledger
from tierwise.messages import Request
from tierwise.providers.replay import ReplayProvider
from tierwise.streaming import collect
from tierwise.tokens import estimate_tokens

PROMPT = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many?"
ANSWER = "In May she sold 48 / 2 = 24 clips. In total 48 + 24 = 72. The answer is 72."
STRONG = "openai:gpt-4-1106-preview"


def _replay() -> ReplayProvider:
    return ReplayProvider(
        "replay",
        [
            RecordedOutcome(
                row_id="1", prompt=PROMPT, model=STRONG, response_text=ANSWER, correct=True
            )
        ],
    )


def _expected_cost() -> Decimal:
    # GPT-4 Turbo: $10 / $30 per million input / output tokens
    tokens_in, tokens_out = estimate_tokens(PROMPT), estimate_tokens(ANSWER)
    return (Decimal(tokens_in) * 10 + Decimal(tokens_out) * 30) / Decimal(1_000_000)


async def test_complete_records_task_call_decision_and_outcome(settings: Settings) -> None:
    async with Engine(settings, providers={"openai": _replay()}) as engine:
        result = await engine.complete(PROMPT, policy=f"fixed:{STRONG}")
    assert result.response.text() == ANSWER
    assert result.response.model == STRONG
    assert result.cost_usd == _expected_cost()
    assert "pins the model" in result.explain()
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (task,) = ledger.tasks()
        (call,) = ledger.calls(task_id=task.id)
        (decision,) = ledger.decisions(task_id=task.id)
        (outcome,) = ledger.outcomes(task_id=task.id)
    assert task.id == result.task_id and task.policy == f"fixed:{STRONG}"
    assert call.model == STRONG and call.role == "executor" and call.cost_usd == _expected_cost()
    assert call.tokens_estimated and call.latency_ms is not None
    assert call.prompt_text == PROMPT and call.response_text == ANSWER
    assert decision.chosen_model == STRONG
    assert outcome.outcome == "success"


async def test_stream_is_recorded_with_ttft(settings: Settings) -> None:
    async with Engine(settings, providers={"openai": _replay()}) as engine:
        response = await collect(engine.stream(PROMPT, policy=f"fixed:{STRONG}"))
    assert response.text() == ANSWER
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
    assert call.stream and call.ttft_ms is not None and call.cost_usd == _expected_cost()


async def test_upstream_failure_is_recorded_then_raised(settings: Settings) -> None:
    async with Engine(settings, providers={"openai": _replay()}) as engine:
        with pytest.raises(NotFoundError):
            await engine.complete("a prompt nobody recorded", policy=f"fixed:{STRONG}")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
        (outcome,) = ledger.outcomes()
    assert call.status == "error" and call.error_type == "NotFoundError" and call.http_status == 404
    assert call.cost_usd == Decimal(0)  # failed before producing anything: not billed
    assert outcome.outcome == "error" and "no recorded answer" in outcome.detail


def test_named_policies_and_default_policy(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"policies": {"strong": f"fixed:{STRONG}"}, "default_policy": "strong"}
    )
    with SyncEngine(configured, providers={"openai": _replay()}) as engine:
        assert engine.complete(PROMPT).policy == f"fixed:{STRONG}"
        assert engine.complete(PROMPT, "strong").response.text() == ANSWER


@pytest.mark.parametrize(
    ("policy", "error", "message"),
    [
        ("fixed:openai:gpt-4-1106-previw", UnknownModelError, "did you mean"),
        ("teleport:now", PolicyError, "unknown policy"),
        ("fixed", PolicyError, "needs a model"),
    ],
)
def test_bad_policies_fail_before_any_call(
    settings: Settings, policy: str, error: type, message: str
) -> None:
    with (
        SyncEngine(settings, providers={"openai": _replay()}) as engine,
        pytest.raises(error, match=message),
    ):
        engine.complete(PROMPT, policy)


def test_malformed_request_is_invalid_request(settings: Settings) -> None:
    with SyncEngine(settings) as engine, pytest.raises(InvalidRequestError, match="messages"):
        engine.complete({"messages": "not a list"}, f"fixed:{STRONG}")


def test_unknown_model_cost_is_none(settings: Settings, catalog: Catalog) -> None:
    replay = ReplayProvider(
        "replay",
        [
            RecordedOutcome(
                row_id="1", prompt=PROMPT, model="ollama:llama3.1:8b", response_text="72"
            )
        ],
    )
    with SyncEngine(settings, providers={"ollama": replay}) as engine:
        result = engine.complete(PROMPT, "fixed:ollama:llama3.1:8b")
    assert result.cost_usd is None


async def test_abandoned_stream_is_recorded_as_an_error_outcome(settings: Settings) -> None:
    async with Engine(settings, providers={"openai": _replay()}) as engine:
        events = engine.stream(PROMPT, policy=f"fixed:{STRONG}")
        await anext(events)
        await events.aclose()
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (outcome,) = ledger.outcomes()
        (call,) = ledger.calls()
    assert outcome.outcome == "error" and "abandoned" in outcome.detail
    # it had started producing tokens we never saw counted: the cost is unknown, not zero
    assert call.status == "error" and call.stream and call.cost_usd is None


async def test_a_task_context_calls_through_the_engines_failover_advisor_and_ledger(
    settings: Settings,
) -> None:
    """What shadow runs and workflow comparisons judge through: the engine's own machinery."""
    async with Engine(settings, providers={"openai": _replay()}) as engine:
        context = engine.task_context("judging-1", parent_id="task-0")
        assert context.failover is engine.failover and context.advisor is engine.advisor
        response = await context.call(
            Request.from_prompt(PROMPT), engine.catalog.get(STRONG), role="judge"
        )
    assert response.text() == ANSWER
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
    assert (call.task_id, call.parent_id, call.role) == ("judging-1", "task-0", "judge")
    assert call.cost_usd == _expected_cost()
