"""The variant harness: the same tasks as OO / OK / KO / KK — strong (O) or cheap (K) model
at planning, strong or cheap at implementation — costed exactly and scored.

Each task of each variant runs through the engine under a ``plan:`` policy (so every call is
in the ledger). Its outcome then gets the task's own acceptance checks and a judge model's
seven-dimension rubric (:mod:`tierwise.workflows.rubric`), recorded as a sub-task of the run
(role ``judge``, one gate record per check and per dimension). A run that does not finish
(its plan fails, an upstream fails, or it hits its budget) scores 0 on every dimension and
fails its checks; its calls are still costed. The rubric judge's own cost is reported apart
from the variant's.

Task file: JSON Lines, one task per line::

    {"id": "slugify", "prompt": "Write slugify(title) ...", "reference": "what a good
     outcome does (for the judge)", "checks": [{"kind": "regex", "pattern": "def slugify"}],
     "gates": ["command:python -m pytest -q test_hidden.py"],
     "files": {"test_hidden.py": "from solution import slugify ..."}}

``checks`` are acceptance checks as in a plan (``judge`` checks are read by the judge);
``gates`` are :mod:`tierwise.gates` specs — a command gate writes the outcome's Python to
``solution.py`` next to ``files`` in a temporary directory and runs there (the models' code
runs with your rights: a scratch directory, not a sandbox).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from statistics import fmean
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.catalog import Catalog, ModelSpec
from tierwise.engine import Engine
from tierwise.errors import (
    BudgetExceededError,
    ProviderError,
    TaskFileError,
    TierwiseError,
    WorkflowError,
)
from tierwise.gates.base import Gate, check_recorded
from tierwise.gates.registry import GateEnv, build_gate
from tierwise.ledger.records import (
    CallRecord,
    EscalationRecord,
    GateRecord,
    LedgerRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.messages import Request, Response, TextBlock
from tierwise.strategies.base import TaskContext
from tierwise.workflows.acceptance import acceptance_gate
from tierwise.workflows.plan import AcceptanceCheck
from tierwise.workflows.rubric import DIMENSIONS, RubricScores, rubric_request
from tierwise.workflows.structured import AnswerError, parse_json_as, validation_problem

Variant = Literal["OO", "OK", "KO", "KK"]
VARIANTS: dict[str, tuple[str, str]] = {
    "OO": ("strong", "strong"),
    "OK": ("strong", "cheap"),
    "KO": ("cheap", "strong"),
    "KK": ("cheap", "cheap"),
}
"""Variant -> (planner, executor): the first letter plans, the second implements."""
SOURCE = "workflow-compare"
EXAMPLES = "examples"


# --- the task file ----------------------------------------------------------------------------


class TaskSpec(BaseModel):
    """One task of a task file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    reference: str = ""
    """What a good outcome does, for the judge (optional)."""
    checks: tuple[AcceptanceCheck, ...] = ()
    gates: tuple[str, ...] = ()
    """Gate specs of :mod:`tierwise.gates.registry`, e.g. ``command:python -m pytest -q``."""
    files: dict[str, str] = Field(default_factory=dict)
    """Files (path -> text) next to the outcome's code when a command gate runs."""


def example_tasks() -> Path:
    """The small task set shipped with tierwise (``tierwise workflow compare examples``)."""
    return Path(str(resources.files("tierwise.workflows").joinpath("examples/tasks.jsonl")))


def load_tasks(source: str | Path, catalog: Catalog | None = None) -> list[TaskSpec]:
    """The tasks of a JSONL file (``"examples"``: the shipped set); :class:`TaskFileError`
    naming the file and line when it is missing or malformed (with ``catalog``, each task's
    gates are built once to check them)."""
    path = example_tasks() if str(source) == EXAMPLES else Path(source)
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        raise TaskFileError(f"task file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"cannot read task file {path}: {exc}") from None
    tasks = [_task(line, path, n, catalog) for n, line in enumerate(lines, start=1) if line.strip()]
    if not tasks:
        raise TaskFileError(f"no tasks in {path}")
    ids = [task.id for task in tasks]
    if duplicated := sorted({i for i in ids if ids.count(i) > 1}):
        raise TaskFileError(f"{path}: task id {duplicated[0]!r} is used more than once")
    return tasks


def _task(line: str, path: Path, number: int, catalog: Catalog | None) -> TaskSpec:
    where = f"{path} line {number}"
    try:
        task = TaskSpec.model_validate(json.loads(line))
    except json.JSONDecodeError as exc:
        raise TaskFileError(f"{where}: not valid JSON ({exc.msg})") from None
    except ValidationError as exc:
        raise TaskFileError(f"{where}: {validation_problem(exc)}") from None
    for check in task.checks:
        if (problem := check.problem()) is not None:
            raise TaskFileError(f"{where}: checks: {problem}")
    if catalog is not None:
        try:
            _gates(task, catalog)
        except TierwiseError as exc:
            raise TaskFileError(f"{where}: gates: {exc.message}") from None
    return task


def _gates(task: TaskSpec, catalog: Catalog) -> list[Gate]:
    return [build_gate(spec, GateEnv(catalog, files=task.files)) for spec in task.gates]


# --- results ----------------------------------------------------------------------------------


class CheckResult(BaseModel):
    kind: str
    passed: bool
    reason: str


class RunResult(BaseModel):
    """One task under one variant."""

    task: str
    variant: str
    ledger_task_id: str | None
    finished: bool
    error: str | None = None
    cost_usd: Decimal | None
    """Every call of the run (planner, executors, step checks); ``None`` if any is unknown."""
    cost_by_role: dict[str, Decimal | None]
    judge_cost_usd: Decimal | None = None
    scores: dict[str, int] | None = None
    """The rubric, 1-5 per dimension; 0s when the run did not finish; ``None`` when the
    judge's answer was unusable."""
    notes: str = ""
    checks: list[CheckResult] = Field(default_factory=list)
    step_attempts: int = 0
    steps_failed: int = 0
    replans: int = 0
    answer: str = ""


class VariantSummary(BaseModel):
    variant: str
    planner: str
    executor: str
    policy: str
    tasks: int
    finished: int
    cost_usd: Decimal | None
    judge_cost_usd: Decimal | None
    scores: dict[str, float | None]
    """Mean per dimension over the judged runs (unfinished runs count 0)."""
    overall: float | None
    checks_passed: int
    checks_total: int
    steps_failed: int
    replans: int


class CompareReport(BaseModel):
    task_file: str
    judge: str
    rubric: dict[str, str] = Field(default_factory=lambda: dict(DIMENSIONS))
    variants: list[VariantSummary]
    runs: list[RunResult]


# --- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareSetup:
    """The four models of the grid, the judge, and how each run plans."""

    planner_strong: ModelSpec
    planner_cheap: ModelSpec
    executor_strong: ModelSpec
    executor_cheap: ModelSpec
    judge: ModelSpec
    variants: tuple[str, ...] = tuple(VARIANTS)
    replan_after: int = 2
    max_replans: int = 1
    concurrency: int = 1
    budget_usd: Decimal | None = None
    """Each run's budget (every call of the run); a run that hits it does not finish."""

    def models(self, variant: str) -> tuple[ModelSpec, ModelSpec]:
        """(planner, executor) of ``variant``."""
        plan_with, implement_with = VARIANTS[variant]
        planner = self.planner_strong if plan_with == "strong" else self.planner_cheap
        executor = self.executor_strong if implement_with == "strong" else self.executor_cheap
        return planner, executor

    def policy(self, variant: str) -> str:
        planner, executor = self.models(variant)
        budget = "" if self.budget_usd is None else f"&budget_usd={self.budget_usd}"
        return (
            f"plan:{planner.id}?executors={executor.id}"
            f"&replan_after={self.replan_after}&max_replans={self.max_replans}{budget}"
        )


Progress = Callable[[RunResult], None]


async def compare(
    engine: Engine,
    tasks: Sequence[TaskSpec],
    setup: CompareSetup,
    *,
    task_file: str = "",
    progress: Progress | None = None,
) -> CompareReport:
    """Run every task under every variant, judge each outcome, summarise per variant."""
    limit = asyncio.Semaphore(setup.concurrency)

    async def one(task: TaskSpec, variant: str) -> RunResult:
        async with limit:
            run = await _run(engine, setup, task, variant)
        if progress is not None:
            progress(run)
        return run

    jobs = [one(task, variant) for variant in setup.variants for task in tasks]
    runs = list(await asyncio.gather(*jobs))
    summaries = [_summary(setup, v, [r for r in runs if r.variant == v]) for v in setup.variants]
    return CompareReport(task_file=task_file, judge=setup.judge.id, variants=summaries, runs=runs)


async def _run(engine: Engine, setup: CompareSetup, task: TaskSpec, variant: str) -> RunResult:
    seen: list[LedgerRecord] = []
    try:
        result = await engine.complete(
            task.prompt, setup.policy(variant), source=SOURCE, observer=seen.append
        )
        answer, error = result.response.text(), None
    except (WorkflowError, ProviderError, BudgetExceededError) as exc:
        answer, error = "", str(exc)
    root = next((r.id for r in seen if isinstance(r, TaskRecord)), None)
    calls = [r for r in seen if isinstance(r, CallRecord)]
    run = RunResult(
        task=task.id,
        variant=variant,
        ledger_task_id=root,
        finished=error is None,
        error=error,
        cost_usd=_total(calls),
        cost_by_role={role: _total([c for c in calls if c.role == role]) for role in _roles(calls)},
        answer=answer,
        **_step_counts(seen),
    )
    if error is not None or root is None:
        return run.model_copy(update=_unfinished(task))
    return await _judged(engine, setup, task, run, _plan_text(calls))


def _roles(calls: Sequence[CallRecord]) -> list[str]:
    return list(dict.fromkeys(call.role for call in calls))


def _total(calls: Sequence[CallRecord]) -> Decimal | None:
    return _sum([call.cost_usd for call in calls])


def _step_counts(seen: Sequence[LedgerRecord]) -> dict[str, int]:
    gates = [r for r in seen if isinstance(r, GateRecord) and r.gate.startswith("acceptance:")]
    replans = [
        r for r in seen if isinstance(r, EscalationRecord) and r.trigger.startswith("re-plan")
    ]
    failed = sum(1 for gate in gates if not gate.passed)
    return {"step_attempts": len(gates), "steps_failed": failed, "replans": len(replans)}


def _plan_text(calls: Sequence[CallRecord]) -> str:
    """What the planner wrote, plan and re-plans in order (when the ledger keeps content)."""
    plans = [c.response_text for c in calls if c.role == "planner" and c.status == "ok"]
    return "\n\n--- the planner's next answer ---\n\n".join(text for text in plans if text)


def _unfinished(task: TaskSpec) -> dict[str, object]:
    kinds = [check.kind for check in task.checks] + list(task.gates)
    checks = [CheckResult(kind=k, passed=False, reason="the run did not finish") for k in kinds]
    return {"scores": dict.fromkeys(DIMENSIONS, 0), "checks": checks}


async def _judged(
    engine: Engine, setup: CompareSetup, task: TaskSpec, run: RunResult, plan: str
) -> RunResult:
    """``run`` with its checks and rubric, from a judge sub-task of the run's task; a judge
    that cannot be reached leaves the run unscored (``scores`` ``None``) and says why."""
    context = await _judge_task(engine, setup, task, run)
    checks: list[CheckResult] = []
    rubric: RubricScores | None = None
    try:
        checks = await _checks(engine, context, setup, task, run.answer)
        rubric = await _rubric(engine, context, setup, task, outcome=run.answer, plan=plan)
        notes = rubric.notes
    except ProviderError as exc:
        notes = f"judging failed: {exc}"
    except AnswerError as exc:
        notes = f"judge answer unusable: {exc}"
    await _record_rubric(context, rubric, notes)
    scores = rubric.scores() if rubric else None
    update = {"checks": checks, "scores": scores, "notes": notes}
    return run.model_copy(update=update | {"judge_cost_usd": context.total_cost()})


async def _judge_task(
    engine: Engine, setup: CompareSetup, task: TaskSpec, run: RunResult
) -> TaskContext:
    """A task for the judging of ``run``, a sub-task of the run's own task."""
    record = TaskRecord(
        parent_id=run.ledger_task_id,
        policy=f"rubric:{setup.judge.id}",
        source=SOURCE,
        prompt_text=task.prompt if engine.settings.log_content else None,
        metadata={"variant": run.variant, "task": task.id},
    )
    await engine.record(record)
    return engine.task_context(record.id, parent_id=run.ledger_task_id)


async def _rubric(
    engine: Engine,
    context: TaskContext,
    setup: CompareSetup,
    task: TaskSpec,
    *,
    outcome: str,
    plan: str,
) -> RubricScores:
    request = rubric_request(
        setup.judge,
        engine.settings,
        task=task.prompt,
        reference=task.reference,
        plan=plan,
        outcome=outcome,
    )
    response = await context.call(request, setup.judge, role="judge")
    return parse_json_as(response.text(), RubricScores)


async def _checks(
    engine: Engine, context: TaskContext, setup: CompareSetup, task: TaskSpec, outcome: str
) -> list[CheckResult]:
    """The task file's own checks and gates on the outcome (a ``judge`` check is read by the
    judge; a command gate runs the outcome's code next to the task's files)."""
    request = Request.from_prompt(task.prompt)
    answer = Response(id="outcome", model=setup.judge.id, content=[TextBlock(text=outcome)])
    gates = [
        (
            check.kind,
            acceptance_gate(check, goal=task.prompt, judge=setup.judge, settings=engine.settings),
        )
        for check in task.checks
    ] + [(gate.name, gate) for gate in _gates(task, engine.catalog)]
    results = []
    for kind, gate in gates:
        verdict = await check_recorded(gate, request, answer, context, name=f"task:{kind}")
        results.append(CheckResult(kind=kind, passed=verdict.passed, reason=verdict.reason))
    return results


async def _record_rubric(context: TaskContext, rubric: RubricScores | None, notes: str) -> None:
    for key, score in (rubric.scores() if rubric else {}).items():
        await context.record(
            GateRecord(
                task_id=context.task_id,
                gate=f"rubric:{key}",
                passed=score >= 3,
                score=score / 5,
                reason=notes,
            )
        )
    outcome = "success" if rubric else "error"
    await context.record(
        OutcomeRecord(task_id=context.task_id, outcome=outcome, source="judge", detail=notes)
    )


# --- summaries --------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 3) if values else None


def _summary(setup: CompareSetup, variant: str, runs: Sequence[RunResult]) -> VariantSummary:
    planner, executor = setup.models(variant)
    scored = [run.scores for run in runs if run.scores is not None]
    means = {key: _mean([s[key] for s in scored]) for key in DIMENSIONS}
    known = [m for m in means.values() if m is not None]
    checks = [check for run in runs for check in run.checks]
    judge_costs = [run.judge_cost_usd for run in runs if run.finished]
    return VariantSummary(
        variant=variant,
        planner=planner.id,
        executor=executor.id,
        policy=setup.policy(variant),
        tasks=len(runs),
        finished=sum(run.finished for run in runs),
        cost_usd=_sum([run.cost_usd for run in runs]),
        judge_cost_usd=_sum(judge_costs),
        scores=means,
        overall=_mean(known),
        checks_passed=sum(check.passed for check in checks),
        checks_total=len(checks),
        steps_failed=sum(run.steps_failed for run in runs),
        replans=sum(run.replans for run in runs),
    )


def _sum(costs: Sequence[Decimal | None]) -> Decimal | None:
    if any(cost is None for cost in costs):
        return None
    return sum((cost for cost in costs if cost is not None), Decimal(0))
