"""``tierwise shadow``: logged prompts re-run on every tier through the engine (fake OpenAI and
Anthropic upstreams behind the official SDKs), judged by gates, written as traces."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.loopback import serve
from tests.learn_world import ALL, CHEAP, DEFAULT, STRONG, World, right, run_live
from tests.test_cli import tierwise
from tierwise.catalog import load_catalog
from tierwise.config import Settings
from tierwise.errors import GateError, InsufficientDataError, InvalidRequestError
from tierwise.evaluation.loaders import load_matrix
from tierwise.gates import GateEnv, build_gates
from tierwise.learning.shadow import ShadowOptions, ShadowReport, estimate_prompt_cost, shadow
from tierwise.ledger.store import Ledger
from tierwise.messages import Request
from tierwise.providers.base import ProviderConfig

JUDGE = f"judge:{STRONG}"


@pytest.fixture
async def world(settings: Settings) -> World:
    """18 live tasks routed by the shipped rules (no labels)."""
    world = World()
    async with world.engine(settings) as engine:
        await run_live(engine, ALL, feedback=False)
    return world


async def _shadow(world: World, settings: Settings, **options: object) -> ShadowReport:
    base = ShadowOptions(sample=100, out=settings.cache_dir / "shadow.jsonl")
    async with world.engine(settings) as engine:
        return await shadow(engine, base.model_copy(update=options))


async def test_every_prompt_runs_on_every_tier_and_the_judge_labels_it(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "shadow.jsonl"
    report = await _shadow(world, settings, out=out)
    assert (report.models, report.cheapest, report.gates) == ([CHEAP, STRONG], CHEAP, [JUDGE])
    assert (report.planned, report.prompts_run, report.labels) == (18, 18, 36)
    assert not report.stopped_at_cap and report.failed_calls == 0
    # where the cheap tier fails: the arithmetic prompts the rules send it by default
    weakest = report.by_kind[0]
    assert weakest.kind == "default" and weakest.prompts == 6
    assert (weakest.passed[CHEAP].hits, weakest.passed[STRONG].hits) == (0, 6)
    assert {prompt for _, prompt in report.cheap_failures} == set(DEFAULT)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        tasks = [t for t in ledger.tasks() if t.source == "shadow"]
        calls = ledger.calls(since=tasks[0].created_at)
        gates = ledger.gate_results()
        outcomes = [o for o in ledger.outcomes() if o.source == "judge"]
    assert len(tasks) == 36 and all(
        t.policy in {f"fixed:{CHEAP}", f"fixed:{STRONG}"} for t in tasks
    )
    executors = {c.id: c for c in calls if c.role == "executor"}
    judges = [c for c in calls if c.role == "judge"]
    assert len(executors) == len(judges) == len(gates) == len(outcomes) == 36
    assert all(j.model == STRONG and j.task_id in {t.id for t in tasks} for j in judges)
    for gate in gates:
        call = executors[gate.call_id or ""]
        assert gate.gate == JUDGE and gate.task_id == call.task_id
        assert gate.passed == right(call.model, call.prompt_text or "")
    # the spend is every shadow call, the judge's included, to the exact Decimal
    assert report.spent_usd == sum((c.cost_usd or Decimal(1) for c in calls), Decimal(0))
    # the traces are what `tierwise calibrate` reads: every prompt labelled for both models
    matrix = load_matrix(str(out), data_dir=None, cache_dir=tmp_path)
    assert matrix.models == [STRONG, CHEAP] and len(matrix) == 18
    for prompt, quality in zip(matrix.prompts, matrix.quality, strict=True):
        assert list(quality) == [1.0, 1.0 if right(CHEAP, prompt) else 0.0]
    line = json.loads(out.read_text("utf-8").splitlines()[0])
    assert line["metadata"]["label_source"] == "judge" and line["schema"] == 1


async def test_a_seeded_sample_of_live_prompts_only(world: World, settings: Settings) -> None:
    first = await _shadow(world, settings, sample=5, seed=7)
    again = await _shadow(world, settings, sample=5, seed=7)  # shadow tasks are not resampled
    other = await _shadow(world, settings, sample=5, seed=8)
    assert first.planned == again.planned == other.planned == 5
    assert first.labels == 10
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        shadowed = [t.prompt_text for t in ledger.tasks() if t.source == "shadow"]
    first_set = set(shadowed[:10])
    assert first_set <= set(ALL) and len(first_set) == 5
    assert set(shadowed[10:20]) == first_set and set(shadowed[20:]) != first_set


async def test_the_spend_cap_stops_cleanly_before_a_prompt_would_pass_it(
    world: World, settings: Settings
) -> None:
    catalog = load_catalog()
    models = [catalog.get(CHEAP), catalog.get(STRONG)]
    gates = build_gates([JUDGE], GateEnv(catalog=catalog))
    each = estimate_prompt_cost(Request.from_prompt(ALL[0], max_tokens=64), models, gates)
    one = await _shadow(world, settings, sample=1, max_tokens=64)
    assert one.spent_usd is not None and Decimal(0) < one.spent_usd < each  # a cautious estimate
    # the fakes bill every prompt alike: after 5 prompts the next estimate would pass the cap
    cap = 4 * one.spent_usd + each
    report = await _shadow(world, settings, max_cost=cap, max_tokens=64)
    assert report.stopped_at_cap and report.prompts_run == 5 and report.planned == 18
    assert report.spent_usd == 5 * one.spent_usd and report.spent_usd <= cap
    assert report.labels == 10  # every prompt run was run on both tiers and judged
    nothing = await _shadow(world, settings, max_cost=each / 2, max_tokens=64)
    assert nothing.stopped_at_cap and nothing.prompts_run == 0 and nothing.spent_usd == 0


async def test_other_gates_label_without_a_judge(world: World, settings: Settings) -> None:
    asked = len(world.anthropic.requests)
    report = await _shadow(world, settings, gates=["regex:^RIGHT"], sample=6, seed=0)
    assert report.gates == ["regex:^RIGHT"] and report.labels == 12
    assert len(world.anthropic.requests) - asked == 6  # the strong model's answers, no judge
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        outcomes = [o for o in ledger.outcomes() if o.source == "gate"]
        judged = [c for c in ledger.calls() if c.role == "judge"]
    assert len(outcomes) == 12 and not judged


async def test_bad_input_is_a_clear_error(world: World, settings: Settings, tmp_path: Path) -> None:
    ollama = ProviderConfig(kind="openai", base_url="http://127.0.0.1:9/v1", requires_key=False)
    local = settings.model_copy(update={"providers": {**settings.providers, "ollama": ollama}})
    for options, error, message in [
        ({"models": [CHEAP]}, InvalidRequestError, "two or more models"),
        ({"gates": ["telepathy"]}, GateError, "unknown gate 'telepathy'"),
        (
            {"models": [CHEAP, "ollama:llama3.1:8b"], "max_cost": Decimal("0.1")},
            InvalidRequestError,
            "--max-cost needs catalog prices",
        ),
    ]:
        with pytest.raises(error, match=message):
            await _shadow(world, local, **options)
    empty = settings.model_copy(update={"ledger_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    with pytest.raises(InsufficientDataError, match="nothing to shadow"):
        await _shadow(World(), empty, models=[CHEAP, STRONG])


async def test_cli_shadow_over_loopback_upstreams(
    world: World, settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "cli.jsonl"
    with serve(world.openai.handler) as openai_url, serve(world.anthropic.handler) as claude_url:
        result = tierwise(
            "--ledger", settings.resolved_ledger_url(), "shadow", "--models",
            f"{CHEAP},{STRONG}", "--sample", "6", "--seed", "1", "--out", str(out),
            env={
                "OPENAI_API_KEY": "sk-test",
                "ANTHROPIC_API_KEY": "sk-ant-test",
                "TIERWISE_PROVIDERS__OPENAI__BASE_URL": f"{openai_url}/v1",
                "TIERWISE_PROVIDERS__ANTHROPIC__BASE_URL": claude_url,
            },
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout.replace("\n", " ")
    assert "ran 6 of 6 prompts on 2 models, 12 labelled answers, 0 failed calls" in text
    assert str(out) in result.stdout.replace("\n", "") and len(out.read_text().splitlines()) == 12
    assert "Pass rate per task kind" in text and JUDGE in text


def test_cli_shadow_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'empty.db'}"
    for args, message in [
        (["shadow", "--models", f"{CHEAP},{STRONG}"], "nothing to shadow"),
        (["shadow", "--max-cost", "lots"], "--max-cost must be a dollar amount"),
    ]:
        result = tierwise("--ledger", ledger, *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
