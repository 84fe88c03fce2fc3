"""Plan/execute and decomposition end to end: scripted fake models over the real Anthropic and
OpenAI wire formats, through the real providers, the engine and a real SQLite ledger."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo
from tests.fakes.loopback import serve
from tests.fakes.scripted import Answer, Asked, answer_on
from tierwise.catalog import load_catalog
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import (
    BudgetExceededError,
    PlanError,
    PolicyError,
    ServerError,
    UnknownModelError,
    WorkflowError,
)
from tierwise.ledger.store import Ledger
from tierwise.policies import resolve_policy
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.routing.registry import RouterEnv
from tierwise.workflows.plan import PLAN_SCHEMA, parse_plan
from tierwise.workflows.structured import AnswerError

HAIKU, SONNET, OPUS = (
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-6",
    "anthropic:claude-opus-4-7",
)
PRICES: dict[str, tuple[Decimal, Decimal]] = {  # USD per million tokens: input, output
    "claude-haiku-4-5": (Decimal(1), Decimal(5)),
    "claude-sonnet-4-6": (Decimal(3), Decimal(15)),
    "claude-opus-4-7": (Decimal(5), Decimal(25)),
    "gpt-5-mini": (Decimal("0.25"), Decimal(2)),
}
TASK = "Write slugify(title) for our blog and a pytest test for it."
SKILLS = ("reasoning", "coding", "math", "long_context", "tool_use", "writing")


def step(
    step_id: str,
    goal: str,
    *,
    kind: str = "simple",
    deps: tuple[str, ...] = (),
    check: tuple[str, str, str] = ("none", "", ""),
    **levels: int,
) -> dict[str, Any]:
    skills = {name: levels.get(name, 1) for name in SKILLS}
    acceptance = dict(zip(("kind", "criteria", "pattern"), check, strict=True))
    capability = {"task_kind": kind, "skills": skills}
    return {
        "id": step_id,
        "goal": goal,
        "depends_on": list(deps),
        "capability": capability,
        "acceptance": acceptance,
    }


def plan(*steps: dict[str, Any], summary: str = "Write it, then test it.") -> str:
    return json.dumps({"summary": summary, "steps": list(steps)})


def cost(calls: list[tuple[str, int, int]]) -> Decimal:
    """Exact cost of (upstream model, input tokens, output tokens) calls."""
    total = sum(
        (Decimal(i) * PRICES[m][0] + Decimal(o) * PRICES[m][1] for m, i, o in calls), Decimal(0)
    )
    return total / Decimal(1_000_000)


def engine(
    settings: Settings, anthropic: fa.FakeAnthropic, openai: fo.FakeOpenAI | None = None
) -> Engine:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(anthropic.handler))
    config = ProviderConfig(kind="anthropic", base_url="http://anthropic.fake")
    providers: dict[str, Any] = {
        "anthropic": AnthropicProvider("anthropic", config, "sk-test", http_client=client)
    }
    if openai is not None:
        oconfig = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
        providers["openai"] = OpenAICompatProvider(
            "openai", oconfig, "sk-test", http_client=openai.client()
        )
    return Engine(settings, providers=providers)


def is_planner(asked: Asked) -> bool:
    return asked.system.startswith(("You are the planner", "You are the orchestrator"))


def is_judge(asked: Asked) -> bool:
    return asked.system.startswith("You review the output")


def step_of(asked: Asked) -> str:
    """The id of the step an executor request is for."""
    return asked.conversation.split('<step id="', 1)[1].split('"', 1)[0]


# --- the plan artifact ------------------------------------------------------------------------


def test_a_valid_plan_parses_and_knows_its_final_steps() -> None:
    parsed = parse_plan(
        plan(
            step("s1", "Write slugify", check=("regex", "a def", r"def slugify\(")),
            step("s2", "Write the test", deps=("s1",), kind="standard", coding=4),
        )
    )
    assert [s.id for s in parsed.steps] == ["s1", "s2"]
    assert [s.id for s in parsed.sinks()] == ["s2"]
    needs = parsed.step("s2").requirement()
    assert needs.tier == 3 and needs.skills == {"coding": 4}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Here is my plan: first ...", "not JSON"),
        (json.dumps({"steps": []}), "'summary' is a required property"),
        (plan(), "1 to 8 steps"),
        (plan(*(step(f"s{i}", "x") for i in range(9))), "1 to 8 steps"),
        (plan(step("s1", "a"), step("s1", "b")), "steps.1: id 's1' is used twice"),
        (plan(step("s1", "a", deps=("s2",)), step("s2", "b")), "'s2' is not an earlier step"),
        (plan(step("s1", "a", check=("regex", "x", "(unclosed"))), "not a valid regex"),
        (plan(step("s1", "a", check=("contains", "x", ""))), "needs a pattern"),
        (plan(step("s 1", "a")), "must be 1-40 letters"),
        (plan(step("s1", "a", kind="epic")), "'epic' is not one of"),
    ],
)
def test_an_invalid_plan_says_what_is_wrong(answer: str, problem: str) -> None:
    with pytest.raises(AnswerError, match=problem.replace("(", r"\(")):
        parse_plan(answer)


def test_a_replan_may_build_on_finished_steps_but_not_reuse_their_ids() -> None:
    later = parse_plan(plan(step("r1", "b", deps=("s1",))), finished=["s1"])
    assert later.steps[0].depends_on == ("s1",)
    with pytest.raises(AnswerError, match="used twice"):
        parse_plan(plan(step("s1", "again")), finished=["s1"])


def test_the_schema_fits_strict_structured_outputs() -> None:
    """Strict mode (OpenAI, Anthropic) needs every property required and no extra keys."""

    def objects(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for value in node.values() for o in objects(value)]
        if isinstance(node, list):
            return [o for value in node for o in objects(value)]
        return []

    for node in objects(PLAN_SCHEMA):
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])


# --- plan and execute -------------------------------------------------------------------------

POLICY = f"plan:{OPUS}?executors={HAIKU},{SONNET}"
SLUGIFY = "def slugify(title):\n    return '-'.join(title.lower().split())"
TEST = "def test_slugify():\n    assert slugify('Hello World') == 'hello-world'"


def slugify_script(asked: Asked) -> Answer:
    if is_planner(asked):
        return Answer(
            plan(
                step("s1", "Write slugify", check=("regex", "defines it", r"def slugify\(")),
                step(
                    "s2",
                    "Write a pytest test for slugify",
                    deps=("s1",),
                    kind="standard",
                    coding=4,
                    check=("judge", "a pytest test that exercises slugify", ""),
                ),
            ),
            900,
            300,
        )
    if is_judge(asked):
        return Answer('{"passed": true, "reason": "it tests slugify"}', 400, 20)
    return Answer(SLUGIFY if step_of(asked) == "s1" else TEST, 200, 60)


async def test_a_plan_is_made_validated_and_executed_step_by_step(settings: Settings) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, slugify_script)
    async with engine(settings, fake) as eng:
        result = await eng.complete(TASK, POLICY)
    asked = [fa_request.json() for fa_request in fake.requests]
    models = [body["model"] for body in asked]
    assert models == ["claude-opus-4-7", "claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-7"]
    assert asked[0]["output_config"] == {"format": {"type": "json_schema", "schema": PLAN_SCHEMA}}
    assert TASK in asked[0]["messages"][0]["content"][0]["text"]
    # the artifact of s1 is carried forward into s2's request
    assert SLUGIFY in asked[2]["messages"][0]["content"][0]["text"]
    assert result.response.text() == TEST  # the final step's output is the result
    assert [c.role for c in result.calls] == ["planner", "executor", "executor", "judge"]
    assert result.cost_usd == cost(
        [
            ("claude-opus-4-7", 900, 300),
            ("claude-haiku-4-5", 200, 60),
            ("claude-sonnet-4-6", 200, 60),
            ("claude-opus-4-7", 400, 20),
        ]
    )
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        steps = [t for t in ledger.tasks() if t.parent_id == result.task_id]
        assert [t.metadata["step"] for t in steps] == ["s1", "s2"]
        chosen = [ledger.decisions(task_id=t.id)[0] for t in steps]
        gates = [ledger.gate_results(task_id=t.id)[0] for t in steps]
        step_calls = [ledger.calls(task_id=t.id) for t in steps]
        (outcome,) = ledger.outcomes(task_id=result.task_id)
    assert [d.chosen_model for d in chosen] == [HAIKU, SONNET]
    assert "needs tier>=3, coding>=4" in chosen[1].reason and chosen[1].router == "plan"
    assert [(g.gate, g.passed) for g in gates] == [
        ("acceptance:regex", True),
        ("acceptance:judge", True),
    ]
    assert gates[0].call_id == step_calls[0][0].id
    assert all(c.parent_id == result.task_id for calls in step_calls for c in calls)
    assert [c.role for c in step_calls[1]] == ["executor", "judge"]
    assert outcome.outcome == "success"


async def test_a_stream_carries_the_assembled_result(settings: Settings) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, slugify_script)
    async with engine(settings, fake) as eng:
        events = [event async for event in eng.stream(TASK, POLICY)]
    text = "".join(e.delta.get("text", "") for e in events if e.type == "content_block_delta")
    assert text == TEST
    assert events[-1].type == "message_stop"


# --- re-planning ------------------------------------------------------------------------------


def failing_then_replanned(asked: Asked) -> Answer:
    if is_planner(asked):
        if "This is a re-plan" in asked.system:
            later = step(
                "r1", "Answer with the word fixed", deps=("s0",), check=("contains", "", "fixed")
            )
            return Answer(plan(later, summary="Say it plainly."), 1500, 200)
        first = step("s0", "Restate the task", check=("none", "", ""))
        hard = step("s1", "Answer OK", deps=("s0",), check=("regex", "starts OK", "^OK"))
        return Answer(plan(first, hard), 900, 300)
    said = {"s0": "The task: make it work.", "s1": "nope", "r1": "fixed it"}[step_of(asked)]
    return Answer(said, 100, 10)


async def test_failed_steps_escalate_then_the_planner_replans_from_the_artifacts(
    settings: Settings,
) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, failing_then_replanned)
    async with engine(settings, fake) as eng:
        result = await eng.complete(TASK, POLICY + "&replan_after=2")
    bodies = [r.json() for r in fake.requests]
    asked = [(b["model"], step_of_body(b)) for b in bodies]
    assert asked == [
        ("claude-opus-4-7", None),  # plan
        ("claude-haiku-4-5", "s0"),
        ("claude-haiku-4-5", "s1"),  # fails its regex
        ("claude-sonnet-4-6", "s1"),  # one capable candidate up; fails again
        ("claude-opus-4-7", None),  # re-plan
        ("claude-haiku-4-5", "r1"),
    ]
    replan = bodies[4]
    (message,) = replan["messages"]  # a fresh request, not the planner's earlier conversation
    prompt = message["content"][0]["text"]
    assert '"id": "s1"' in prompt  # the plan
    assert '<output step="s0" model="anthropic:claude-haiku-4-5">' in prompt  # a finished artifact
    assert "does not match '^OK'" in prompt and "nope" in prompt  # the failures
    r1_prompt = bodies[5]["messages"][0]["content"][0]["text"]
    assert "The task: make it work." in r1_prompt  # r1 builds on s0 from the first plan
    assert result.response.text() == "fixed it"
    assert [c.role for c in result.calls] == ["planner", *["executor"] * 3, "planner", "executor"]
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        moves = [(e.from_model, e.to_model) for e in ledger.escalations()]
        failed = [g for g in ledger.gate_results() if not g.passed]
    assert moves == [(HAIKU, SONNET), (SONNET, OPUS)]
    assert len(failed) == 2


def step_of_body(body: dict[str, Any]) -> str | None:
    text = body["messages"][0]["content"][0]["text"]
    return text.split('<step id="', 1)[1].split('"', 1)[0] if '<step id="' in text else None


async def test_a_plan_that_keeps_failing_ends_with_a_clear_error_and_nothing_lost(
    settings: Settings,
) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, failing_then_replanned)
    async with engine(settings, fake) as eng:
        with pytest.raises(WorkflowError, match=r"step\(s\) s1 failed their checks 2 time"):
            await eng.complete(TASK, POLICY + "&max_replans=0")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (task,) = [t for t in ledger.tasks() if t.parent_id is None]
        (outcome,) = ledger.outcomes(task_id=task.id)
        calls = ledger.calls()
    assert outcome.outcome == "error" and "last: step s1 on anthropic:claude-sonnet-4-6" in (
        outcome.detail
    )
    assert len(calls) == 4 and all(c.cost_usd is not None and c.cost_usd > 0 for c in calls)


# --- invalid plans ----------------------------------------------------------------------------


def reask_script(valid_on_reask: bool) -> Callable[[Asked], Answer]:
    def answer(asked: Asked) -> Answer:
        if is_planner(asked):
            if "That plan is invalid" in asked.last and valid_on_reask:
                return Answer(plan(step("s1", "Answer")), 300, 80)
            return Answer(plan(step("s1", "Answer", deps=("s9",))), 300, 80)
        return Answer("done", 50, 5)

    return answer


async def test_an_invalid_plan_gets_one_reask_quoting_the_problem(settings: Settings) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, reask_script(valid_on_reask=True))
    async with engine(settings, fake) as eng:
        result = await eng.complete(TASK, POLICY)
    reask = fake.requests[1].json()["messages"]
    assert [m["role"] for m in reask] == ["user", "assistant", "user"]
    assert "depends_on 's9' is not an earlier step" in reask[2]["content"][0]["text"]
    assert result.response.text() == "done"
    assert [c.role for c in result.calls] == ["planner", "planner", "executor"]


async def test_a_plan_invalid_twice_is_a_plan_error(settings: Settings) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, reask_script(valid_on_reask=False))
    async with engine(settings, fake) as eng:
        with pytest.raises(PlanError, match=r"gave an invalid plan twice: steps\.0: depends_on"):
            await eng.complete(TASK, POLICY)
    assert len(fake.requests) == 2  # bounded: the answer and one re-ask
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (outcome,) = ledger.outcomes()
        assert [c.role for c in ledger.calls()] == ["planner", "planner"]
    assert outcome.outcome == "error"


# --- decomposition ----------------------------------------------------------------------------


def decomposition(asked: Asked) -> Answer:
    if is_planner(asked):
        return Answer(
            plan(
                step("lookup", "List the blog's title rules", check=("none", "", "")),
                step("design", "Design the URL scheme", kind="complex", reasoning=5),
                step("combine", "Write the final answer", deps=("lookup", "design")),
                summary="Two independent parts, then combine.",
            ),
            700,
            250,
        )
    said = {"lookup": "rules: lowercase", "design": "scheme: /posts/<slug>"}
    return Answer(said.get(step_of(asked), "slug = lowercase title under /posts/"), 120, 40)


async def test_decomposition_dispatches_subtasks_by_capability(settings: Settings) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, decomposition)
    policy = f"decompose:{OPUS}?executors={HAIKU},{SONNET},{OPUS}"
    async with engine(settings, fake) as eng:
        result = await eng.complete(TASK, policy)
    planner = fake.requests[0].json()
    assert planner["system"][0]["text"].startswith("You are the orchestrator")
    dispatched = {step_of_body(r.json()): r.json()["model"] for r in fake.requests[1:]}
    assert dispatched == {
        "lookup": "claude-haiku-4-5",
        "design": "claude-opus-4-7",  # complex, reasoning 5: only the large tier
        "combine": "claude-haiku-4-5",
    }
    combine = fake.requests[-1].json()["messages"][0]["content"][0]["text"]
    assert "rules: lowercase" in combine and "scheme: /posts/<slug>" in combine
    assert result.response.text() == "slug = lowercase title under /posts/"


# --- OpenAI-compatible planner, and policies ---------------------------------------------------


async def test_an_openai_compatible_planner_gets_strict_json_schema(settings: Settings) -> None:
    anthropic, openai = fa.FakeAnthropic(), fo.FakeOpenAI()
    answer_on(anthropic, slugify_script)
    answer_on(openai, slugify_script)
    policy = f"plan:openai:gpt-5-mini?executors={HAIKU}&judge={HAIKU}"
    async with engine(settings, anthropic, openai) as eng:
        result = await eng.complete(TASK, policy)
    (asked,) = [r.json() for r in openai.requests]
    assert asked["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "plan", "strict": True, "schema": PLAN_SCHEMA},
    }
    assert asked["max_completion_tokens"] == 4096
    assert [c.model for c in result.calls] == ["openai:gpt-5-mini", HAIKU, HAIKU, HAIKU]
    assert result.cost_usd == cost(
        [
            ("gpt-5-mini", 900, 300),
            ("claude-haiku-4-5", 200, 60),
            ("claude-haiku-4-5", 200, 60),
            ("claude-haiku-4-5", 400, 20),
        ]
    )


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("plan", "needs a planner model"),
        (f"plan:{OPUS}?replan_after=0&executors={HAIKU}", "replan_after must be an integer"),
        (f"plan:{OPUS}?executors={HAIKU}&colour=blue", "does not take 'colour'"),
        (f"decompose:{OPUS}?executors=anthropic:claude-haiku-45", "did you mean"),
    ],
)
def test_bad_plan_policies_fail_before_any_call(
    settings: Settings, policy: str, message: str
) -> None:
    env = RouterEnv.for_settings(settings, load_catalog())
    with pytest.raises((PolicyError, UnknownModelError), match=message):
        resolve_policy(policy, env)


def test_plan_policies_resolve_with_their_options(settings: Settings) -> None:
    env = RouterEnv.for_settings(settings, load_catalog())
    strategy = resolve_policy(f"decompose:{OPUS}?executors={HAIKU},{SONNET}&max_steps=4", env)
    assert strategy.name == f"decompose:{OPUS}?executors={HAIKU},{SONNET}&max_steps=4"
    assert strategy.options.concurrency == 4 and strategy.options.max_steps == 4  # type: ignore[attr-defined]


async def test_independent_subtasks_run_at_the_same_time(settings: Settings) -> None:
    """Both independent sub-tasks must be in flight together: each executor reply waits at a
    barrier for the other (a real socket, so the replies are served on separate threads)."""
    both_in_flight = threading.Barrier(2, timeout=30)

    def answer(asked: Asked) -> Answer:
        if not is_planner(asked) and step_of(asked) in ("lookup", "design"):
            both_in_flight.wait()  # BrokenBarrierError (a failed reply) if run one by one
        return decomposition(asked)

    fake = fa.FakeAnthropic()
    answer_on(fake, answer)
    policy = f"decompose:{OPUS}?executors={HAIKU},{OPUS}&concurrency=2"
    with serve(fake.handler) as base:
        config = ProviderConfig(kind="anthropic", base_url=base, max_retries=0)
        provider = AnthropicProvider("anthropic", config, "sk-test")
        async with Engine(settings, providers={"anthropic": provider}) as eng:
            result = await eng.complete(TASK, policy)
    assert result.response.text() == "slug = lowercase title under /posts/"
    assert [c.status for c in result.calls] == ["ok"] * 4


async def test_a_budget_stop_hands_back_the_finished_steps(settings: Settings) -> None:
    """The planner and s1 fit the budget; s2 on sonnet, projected at its 8000-token cap,
    does not: the task stops with s1's output as its partial answer, nothing lost."""
    fake = fa.FakeAnthropic()
    answer_on(fake, slugify_script)
    policy = POLICY + "&step_tokens=8000&budget_usd=0.13"
    async with engine(settings, fake) as eng:
        with pytest.raises(BudgetExceededError, match="claude-sonnet-4-6") as stopped:
            await eng.complete(TASK, policy)
    assert [r.json()["model"] for r in fake.requests] == ["claude-opus-4-7", "claude-haiku-4-5"]
    assert stopped.value.result is not None
    partial = stopped.value.result.response.text()
    assert partial == f"## Write slugify\n\n{SLUGIFY}"
    spent = cost([("claude-opus-4-7", 900, 300), ("claude-haiku-4-5", 200, 60)])
    assert stopped.value.result.cost_usd == spent
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        assert sum(c.cost_usd or 0 for c in ledger.calls()) == spent
        outcomes = {o.task_id: o.outcome for o in ledger.outcomes()}
        steps = {t.metadata.get("step"): t.id for t in ledger.tasks() if t.parent_id}
    assert outcomes[steps["s1"]] == "success" and outcomes[steps["s2"]] == "failure"


# --- a judge check that cannot run --------------------------------------------------------------

MINI = "openai:gpt-5-mini"
JUDGED_PLAN = f"plan:{OPUS}?executors={HAIKU},{SONNET}&judge={MINI}"


def judged_step(asked: Asked) -> Answer:
    if is_planner(asked):
        check = ("judge", "a pytest test that exercises slugify", "")
        return Answer(plan(step("s1", "Write a pytest test for slugify", check=check)), 900, 300)
    return Answer(TEST, 200, 60)


def judge_down(openai: fo.FakeOpenAI) -> None:
    """The judge (GPT-5 mini) answers 500 with the real error envelope, once."""
    openai.reply_error(500, "The server had an error", "server_error")


async def test_a_step_whose_judge_answers_500_escalates_by_default(settings: Settings) -> None:
    fake, openai = fa.FakeAnthropic(), fo.FakeOpenAI()
    answer_on(fake, judged_step)
    judge_down(openai)
    verdict = '{"passed": true, "reason": "it tests slugify"}'
    openai.reply_completion(fo.completion(verdict, token_usage=fo.usage(400, 20)))
    async with engine(settings, fake, openai) as eng:
        result = await eng.complete(TASK, JUDGED_PLAN)
    assert result.response.text() == TEST and result.response.model == SONNET
    assert [(c.role, c.status) for c in result.calls] == [
        ("planner", "ok"),
        ("executor", "ok"),
        ("judge", "error"),
        ("executor", "ok"),
        ("judge", "ok"),
    ]
    assert result.calls[2].cost_usd == 0 and result.calls[2].http_status == 500
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        unchecked, checked = ledger.gate_results()
        (move,) = ledger.escalations()
    assert unchecked.gate == "acceptance:judge" and not unchecked.passed
    assert unchecked.reason.startswith("could not check (counted as a failed check): ServerError")
    assert "The server had an error" in unchecked.reason and checked.passed
    assert (move.from_model, move.to_model) == (HAIKU, SONNET)


async def test_a_step_whose_judge_answers_500_with_accept_stands_unverified(
    settings: Settings,
) -> None:
    fake, openai = fa.FakeAnthropic(), fo.FakeOpenAI()
    answer_on(fake, judged_step)
    judge_down(openai)
    async with engine(settings, fake, openai) as eng:
        result = await eng.complete(TASK, JUDGED_PLAN + "&on_gate_error=accept")
    assert result.response.text() == TEST and result.response.model == HAIKU
    assert [c.role for c in result.calls] == ["planner", "executor", "judge"]
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (gate,) = ledger.gate_results()
        step_outcome = next(o for o in ledger.outcomes() if o.source == "gate")
    assert not gate.passed
    assert gate.reason.startswith("could not check (answer accepted unverified)")
    assert step_outcome.outcome == "success" and step_outcome.detail == gate.reason


async def test_a_step_whose_judge_answers_500_with_fail_fails_the_task(settings: Settings) -> None:
    fake, openai = fa.FakeAnthropic(), fo.FakeOpenAI()
    answer_on(fake, judged_step)
    judge_down(openai)
    async with engine(settings, fake, openai) as eng:
        with pytest.raises(ServerError, match="The server had an error"):
            await eng.complete(TASK, JUDGED_PLAN + "&on_gate_error=fail")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (gate,) = ledger.gate_results()
        step_outcomes = [o for o in ledger.outcomes() if o.outcome == "error"]
    assert gate.reason.startswith("could not check (the task fails): ServerError")
    assert step_outcomes and "The server had an error" in step_outcomes[0].detail


def test_a_plan_refuses_an_unknown_on_gate_error(settings: Settings) -> None:
    with pytest.raises(PolicyError, match=r"on_gate_error must be escalate\|accept\|fail"):
        Engine(settings).strategy(JUDGED_PLAN + "&on_gate_error=maybe")
