"""``tierwise workflow compare``: the four variants run against scripted fake models (a fake
Anthropic and a fake OpenAI-compatible upstream on loopback), costed exactly and scored;
bad task files fail in one line."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo
from tests.fakes.loopback import serve
from tests.fakes.scripted import Answer, Asked, answer_on
from tests.test_cli import _one_clean_line, tierwise
from tests.test_workflows import PRICES, cost, engine, plan, step
from tierwise.catalog import load_catalog
from tierwise.config import Settings
from tierwise.errors import TaskFileError
from tierwise.ledger.store import Ledger
from tierwise.workflows.compare import CompareSetup, compare, load_tasks
from tierwise.workflows.rubric import DIMENSIONS

OPUS, MINI = "anthropic:claude-opus-4-7", "openai:gpt-5-mini"
TASKS = [
    {
        "id": "slugify",
        "prompt": "Write slugify(title) and a pytest test.",
        "reference": "Lowercase, hyphens, tested.",
        "checks": [{"kind": "regex", "criteria": "defines slugify", "pattern": r"def slugify\("}],
    },
    {
        "id": "last-n",
        "prompt": "Fix last_n for n == 0 and test it.",
        "checks": [{"kind": "python", "criteria": "parses"}],
        "gates": ["command:python check_it.py"],
        "files": {"check_it.py": "from solution import slugify\nassert slugify('AB') == 'ab'\n"},
    },
]
PLANNER = (800, 200)
EXECUTOR = (300, 150)
JUDGE = (500, 60)


def grade(asked: Asked) -> Answer:
    """Planner: a one-step plan; executor: code signed by its model; rubric judge: 5s for
    code written by the strong model, 3s for the cheap one."""
    if asked.system.startswith("You are the planner"):
        check = ("regex", "defines a function", r"def \w+\(")
        return Answer(plan(step("s1", "Write the code and its test", check=check)), *PLANNER)
    if asked.system.startswith("You grade the outcome"):
        level = 5 if "# by claude-opus-4-7" in asked.conversation else 3
        scores = dict.fromkeys(DIMENSIONS, level) | {"notes": "fine"}
        return Answer(json.dumps(scores), *JUDGE)
    code = f"def slugify(title):\n    return title.lower()  # by {asked.model}\n"
    return Answer(code, *EXECUTOR)


def run_cost(planner: str, executor: str) -> Decimal:
    return cost([(planner, *PLANNER), (executor, *EXECUTOR)])


@pytest.fixture
def task_file(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(task) + "\n" for task in TASKS))
    return path


def test_compare_prints_four_variants_with_exact_cost_and_rubric_scores(
    tmp_path: Path, task_file: Path
) -> None:
    anthropic, openai = fa.FakeAnthropic(), fo.FakeOpenAI()
    answer_on(anthropic, grade)
    answer_on(openai, grade)
    report = tmp_path / "report.json"
    with serve(anthropic.handler) as anthropic_url, serve(openai.handler) as openai_url:
        result = tierwise(
            "--ledger",
            f"sqlite:///{tmp_path}/l.db",
            "workflow",
            "compare",
            str(task_file),
            "--planner-strong",
            OPUS,
            "--planner-cheap",
            MINI,
            "--json",
            str(report),
            env={
                "ANTHROPIC_API_KEY": "sk-test",
                "OPENAI_API_KEY": "sk-test",
                "TIERWISE_PROVIDERS__ANTHROPIC__BASE_URL": anthropic_url,
                "TIERWISE_PROVIDERS__OPENAI__BASE_URL": f"{openai_url}/v1",
                "COLUMNS": "260",
            },
        )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    variants = {v["variant"]: v for v in data["variants"]}
    assert list(variants) == ["OO", "OK", "KO", "KK"]
    models = {"OO": (OPUS, OPUS), "OK": (OPUS, MINI), "KO": (MINI, OPUS), "KK": (MINI, MINI)}
    judge_cost = 2 * cost([("claude-opus-4-7", *JUDGE)])
    for name, (planner, executor) in models.items():
        summary = variants[name]
        assert (summary["planner"], summary["executor"]) == (planner, executor)
        expected = 2 * run_cost(planner.partition(":")[2], executor.partition(":")[2])
        assert Decimal(summary["cost_usd"]) == expected  # exact, as a decimal string
        assert Decimal(summary["judge_cost_usd"]) == judge_cost
        assert summary["finished"] == 2
        assert (summary["checks_passed"], summary["checks_total"]) == (3, 3)
        level = 5.0 if executor == OPUS else 3.0
        assert summary["scores"] == dict.fromkeys(DIMENSIONS, level)
        row = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert f"${expected:.6f}" in row and f"{level:.2f}" in row
    assert {r["variant"] for r in data["runs"]} == set(models) and len(data["runs"]) == 8
    for label in ("root cause", "scope", "plan fid.", "correct", "tests", "quality", "explain"):
        assert label in result.stdout
    assert f"wrote {report}" in result.stdout.replace("\n", "")
    assert PRICES  # the fakes' models are priced in the catalog the CLI reads


async def test_a_run_that_fails_scores_zero_and_keeps_its_cost(
    settings: Settings, task_file: Path
) -> None:
    def failing(asked: Asked) -> Answer:
        if asked.system.startswith("You are the planner"):
            check = ("regex", "says OK", "^OK")
            return Answer(plan(step("s1", "Say OK", check=check)), *PLANNER)
        if asked.system.startswith("You grade the outcome"):
            raise AssertionError("an unfinished run is not judged")
        return Answer("no", *EXECUTOR)

    fake = fa.FakeAnthropic()
    answer_on(fake, failing)
    catalog = load_catalog()
    haiku = catalog.get("anthropic:claude-haiku-4-5")
    setup = CompareSetup(
        planner_strong=catalog.get(OPUS),
        planner_cheap=haiku,
        executor_strong=catalog.get(OPUS),
        executor_cheap=haiku,
        judge=catalog.get(OPUS),
        variants=("OK",),
        max_replans=0,
    )
    async with engine(settings, fake) as eng:
        report = await compare(eng, load_tasks(task_file)[:1], setup)
    (run,) = report.runs
    assert not run.finished and run.error is not None and "failed their checks" in run.error
    assert run.scores == dict.fromkeys(DIMENSIONS, 0)
    assert [c.passed for c in run.checks] == [False]
    # the plan, then the cheap executor twice (a single executor: no one to escalate to)
    expected = cost([("claude-opus-4-7", *PLANNER), *[("claude-haiku-4-5", *EXECUTOR)] * 2])
    assert run.cost_usd == expected and run.steps_failed == 2
    assert run.cost_by_role == {
        "planner": cost([("claude-opus-4-7", *PLANNER)]),
        "executor": cost([("claude-haiku-4-5", *EXECUTOR)] * 2),
    }
    (summary,) = report.variants
    assert summary.finished == 0 and summary.overall == 0.0 and summary.cost_usd == expected
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (root,) = [t for t in ledger.tasks() if t.parent_id is None]
        (outcome,) = ledger.outcomes(task_id=root.id)
    assert root.id == run.ledger_task_id and root.source == "workflow-compare"
    assert outcome.outcome == "error"


async def test_the_rubric_is_recorded_as_a_judge_subtask(
    settings: Settings, task_file: Path
) -> None:
    fake = fa.FakeAnthropic()
    answer_on(fake, grade)
    catalog = load_catalog()
    opus = catalog.get(OPUS)
    setup = CompareSetup(opus, opus, opus, opus, opus, variants=("OO",))
    async with engine(settings, fake) as eng:
        report = await compare(eng, load_tasks(task_file)[:1], setup)
    (run,) = report.runs
    judge_prompt = fake.requests[-1].json()["messages"][0]["content"][0]["text"]
    assert "Write slugify(title) and a pytest test." in judge_prompt  # the task
    assert "<reference>\nLowercase, hyphens, tested." in judge_prompt
    assert '"goal": "Write the code and its test"' in judge_prompt  # the plan
    assert "# by claude-opus-4-7" in judge_prompt  # the outcome
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (judged,) = [t for t in ledger.tasks() if t.policy == f"rubric:{OPUS}"]
        gates = {g.gate: g for g in ledger.gate_results(task_id=judged.id)}
        (call,) = ledger.calls(task_id=judged.id)
    assert judged.parent_id == run.ledger_task_id
    assert call.role == "judge" and call.cost_usd == run.judge_cost_usd
    assert gates["task:regex"].passed
    assert {k: g.score for k, g in gates.items() if k.startswith("rubric:")} == {
        f"rubric:{key}": 1.0 for key in DIMENSIONS
    }


def test_the_shipped_example_tasks_load_with_hidden_tests() -> None:
    tasks = load_tasks("examples", load_catalog())
    assert len(tasks) >= 3 and all(task.prompt and task.checks for task in tasks)
    assert all(task.gates[0].startswith("command:") and task.files for task in tasks)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "task file not found"),
        ('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', "line 2: not valid JSON"),
        ('{"id": "a"}\n', "line 1: prompt: Field required"),
        ('{"id": "a", "prompt": "x", "colour": 1}\n', "line 1: colour: Extra inputs"),
        ('{"id": "a", "prompt": "x", "checks": [{"kind": "regex"}]}\n', "needs a pattern"),
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "'a' is used more"),
        ("\n\n", "no tasks in"),
        ('{"id": "a", "prompt": "x", "gates": ["teleport"]}\n', "gates: unknown gate 'teleport'"),
        ('{"id": "a", "prompt": "x", "gates": ["judge:nobody:x"]}\n', "gates: unknown model"),
    ],
)
def test_bad_task_files_are_one_clear_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "tasks.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TaskFileError, match=message):
        load_tasks(path, load_catalog())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere.jsonl"], "task file not found: nowhere.jsonl"),
        (["BAD"], "line 1: not valid JSON"),
        (["GOOD", "--variants", "OO,XY"], "unknown variant 'XY'"),
        (["GOOD", "--planner-cheap", "anthropic:claude-haiku-45"], "did you mean"),
        (["GOOD", "--json", "no/such/dir/r.json"], "no/such/dir is not a directory"),
    ],
)
def test_compare_bad_input_exits_2_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    files: dict[str, Any] = {"BAD": "{not json\n", "GOOD": json.dumps(TASKS[0]) + "\n"}
    for name, content in files.items():
        (tmp_path / f"{name}.jsonl").write_text(content)
    argv = [f"{a}.jsonl" if a in files else a for a in args]
    result = tierwise(
        "--ledger", f"sqlite:///{tmp_path}/l.db", "workflow", "compare", *argv, cwd=tmp_path
    )
    assert result.returncode == 2
    assert message in _one_clean_line(result)


async def test_a_judge_that_cannot_be_reached_leaves_the_run_unscored(
    settings: Settings, task_file: Path
) -> None:
    anthropic, nothing_scripted = fa.FakeAnthropic(), fo.FakeOpenAI()  # the judge gets a 418
    answer_on(anthropic, grade)
    catalog = load_catalog()
    opus = catalog.get(OPUS)
    setup = CompareSetup(opus, opus, opus, opus, judge=catalog.get(MINI), variants=("OO",))
    async with engine(settings, anthropic, nothing_scripted) as eng:
        report = await compare(eng, load_tasks(task_file)[:1], setup)
    (run,) = report.runs
    assert run.finished and run.scores is None and "judging failed" in run.notes
    assert "status 418" in run.notes
    assert [check.passed for check in run.checks] == [True]  # the task's own regex check ran
    assert run.judge_cost_usd == Decimal(0)  # refused before producing anything: not billed
    (summary,) = report.variants
    assert summary.scores == dict.fromkeys(DIMENSIONS) and summary.overall is None


async def test_a_run_that_hits_its_budget_does_not_finish(
    settings: Settings, task_file: Path
) -> None:
    """$0.11 covers the plan but not an opus step projected at its 4096-token cap."""
    fake = fa.FakeAnthropic()
    answer_on(fake, grade)
    opus = load_catalog().get(OPUS)
    setup = CompareSetup(opus, opus, opus, opus, opus, variants=("OO",), budget_usd=Decimal("0.11"))
    assert setup.policy("OO").endswith("&budget_usd=0.11")
    async with engine(settings, fake) as eng:
        report = await compare(eng, load_tasks(task_file)[:1], setup)
    (run,) = report.runs
    assert not run.finished and run.error is not None and "budget of $0.11" in run.error
    assert run.cost_usd == cost([("claude-opus-4-7", *PLANNER)]) and len(fake.requests) == 1
    assert run.scores == dict.fromkeys(DIMENSIONS, 0)
