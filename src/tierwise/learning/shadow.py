"""``tierwise shadow``: run all tiers on your own traffic and see where the cheap one fails.

A seeded sample of the distinct prompts of live ledger tasks is re-run on every candidate
model through ``Engine.complete(policy="fixed:<model>", source="shadow")``; each answer is
judged by gates from the :mod:`tierwise.gates` registry (``judge:<model>`` by default, the
strongest candidate judging), run in the shadow task's own context, so each gate's calls
(``role="judge"``), a :class:`GateRecord` and an :class:`OutcomeRecord` (``source="judge"``
when only judges spoke, else ``"gate"``) land in the ledger with it — ``tierwise learn``
reads them later. A gate's verdict is taken as it is: an answer fails when any gate fails.
The labelled answers are also written as traces (:mod:`tierwise.learning.traces`) that
``tierwise calibrate`` reads.

A spend cap stops the run cleanly *before* a prompt whose estimated cost (catalog prices,
every model and the judge) would take the spend past it, so every prompt run is run on
every model; a call that fails upstream leaves its cell unlabelled and the run goes on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from tierwise.catalog import ModelSpec
from tierwise.engine import Engine, Result
from tierwise.errors import InsufficientDataError, InvalidRequestError, ProviderError
from tierwise.gates import Gate, GateEnv, GateResult, build_gates, check_recorded
from tierwise.gates.model_gates import VERDICT_MAX_TOKENS, AgreementGate, JudgeGate
from tierwise.learning.kinds import KindReader
from tierwise.learning.labels import Label, TaskBundle, load_bundles
from tierwise.learning.stats import Rate, rate
from tierwise.learning.traces import Cell, write_traces
from tierwise.ledger.records import OutcomeRecord
from tierwise.messages import Request
from tierwise.routing.base import predicted_cost
from tierwise.strategies.base import TaskContext

Progress = Callable[[int, int], None]
"""Called with (prompts done, prompts planned)."""


class ShadowOptions(BaseModel):
    sample: int = 50
    models: list[str] = []
    judge: str | None = None
    """Judge model; with no ``gates`` and no judge: the strongest candidate."""
    gates: list[str] = []
    """Gate specs (``regex:^OK``, ``python``, ``judge:<model>`` …), run in order."""
    seed: int = 0
    max_cost: Decimal | None = None
    max_tokens: int = 1024
    out: Path


class KindRow(BaseModel):
    kind: str
    prompts: int
    passed: dict[str, Rate]
    """Per model: the share of this kind's prompts it answered right."""


class ShadowReport(BaseModel):
    models: list[str]
    cheapest: str
    gates: list[str]
    planned: int
    prompts_run: int
    labels: int
    failed_calls: int
    spent_usd: Decimal | None
    stopped_at_cap: bool
    traces_path: Path
    traces_written: int
    by_kind: list[KindRow]
    cheap_failures: list[tuple[str, str]]
    """(kind, prompt) for every prompt the cheapest model failed and another passed."""


def sample_prompts(bundles: Sequence[TaskBundle], n: int, seed: int) -> list[str]:
    """``n`` distinct prompts of live tasks, seeded, in ledger order."""
    prompts = list(dict.fromkeys(b.prompt for b in bundles if b.live and b.prompt))
    if not prompts:
        raise InsufficientDataError(
            "no live task in the ledger has its prompt text (log_content must be on): "
            "nothing to shadow"
        )
    picked = set(random.Random(seed).sample(prompts, min(n, len(prompts))))
    return [p for p in prompts if p in picked]


def candidate_models(
    engine: Engine, bundles: Sequence[TaskBundle], asked: Sequence[str]
) -> list[ModelSpec]:
    """``asked``, else ``routing.candidates``, else every model live tasks ran on;
    cheapest tier first."""
    ids = list(asked) or engine.settings.routing.candidates
    if not ids:
        ids = sorted({c.model for b in bundles if b.live for c in b.executors})
    specs = [engine.catalog.get(model_id) for model_id in dict.fromkeys(ids)]
    if len(specs) < 2:
        raise InvalidRequestError(
            f"shadow needs two or more models to compare (got {len(specs)}): give --models a,b"
        )
    return sorted(specs, key=lambda s: (s.profile.tier, s.prices.input or Decimal(0)))


def estimate_prompt_cost(
    request: Request, models: Sequence[ModelSpec], gates: Sequence[Gate]
) -> Decimal:
    """Catalog-price estimate of ``request`` on every model, the gates' calls included: an
    answer of ``max_tokens`` (at most the routers' typical 500), which a judge reads in full
    and answers at its verdict cap; ``agree:k`` re-asks the model ``k - 1`` times."""
    answer = "x " * (request.max_tokens or 500)
    judged = Request.from_prompt(
        f"{request.prompt_text()}\n{answer}", max_tokens=VERDICT_MAX_TOKENS
    )
    total = Decimal(0)
    for spec in models:
        one = predicted_cost(request, spec) or Decimal(0)
        total += one
        for gate in gates:
            if isinstance(gate, JudgeGate):
                total += predicted_cost(judged, gate.model) or Decimal(0)
            elif isinstance(gate, AgreementGate):
                total += (gate.k - 1) * one
    return total


class _Budget:
    """The spend so far against the cap."""

    def __init__(self, cap: Decimal | None) -> None:
        self.cap = cap
        self.spent: Decimal | None = Decimal(0)

    def add(self, cost: Decimal | None) -> None:
        self.spent = None if cost is None or self.spent is None else self.spent + cost

    def allows(self, estimate: Decimal) -> bool:
        return self.cap is None or (self.spent or Decimal(0)) + estimate <= self.cap


class ShadowRun:
    """One shadow run over an engine (its ledger, catalog and providers)."""

    def __init__(self, engine: Engine, options: ShadowOptions, gates: Sequence[Gate]) -> None:
        self.engine = engine
        self.options = options
        self.gates = list(gates)
        self.budget = _Budget(options.max_cost)
        self.labels: list[Label] = []
        self.failed_calls = 0

    def _context(self, result: Result) -> TaskContext:
        return self.engine.task_context(result.task_id)

    async def _judge(self, request: Request, result: Result) -> GateResult:
        """Every gate's verdict on the answer, each recorded; passed when all passed."""
        task = self._context(result)
        call_id = result.calls[-1].id
        try:
            verdicts = [
                await check_recorded(gate, request, result.response, task, call_id=call_id)
                for gate in self.gates
            ]
        finally:
            self.budget.add(task.total_cost())
        return GateResult(
            passed=all(v.passed for v in verdicts), reason="; ".join(v.reason for v in verdicts)
        )

    async def _one(self, prompt: str, spec: ModelSpec) -> None:
        request = Request.from_prompt(prompt, max_tokens=self.options.max_tokens)
        try:
            result = await self.engine.complete(request, f"fixed:{spec.id}", source="shadow")
        except ProviderError:
            self.failed_calls += 1  # recorded in the ledger by the engine
            return
        self.budget.add(result.cost_usd)
        verdict = await self._judge(request, result)
        source = "judge" if all(isinstance(g, JudgeGate) for g in self.gates) else "gate"
        await self.engine.record(
            OutcomeRecord(
                task_id=result.task_id,
                outcome="success" if verdict.passed else "failure",
                correct=verdict.passed,
                source=source,
                detail=verdict.reason,
            )
        )
        self.labels.append(Label(result.task_id, prompt, result.calls[-1], verdict.passed, source))

    async def run(
        self, prompts: Sequence[str], models: Sequence[ModelSpec], progress: Progress | None
    ) -> tuple[int, bool]:
        """Run every prompt on every model until done or capped: (prompts run, capped)."""
        for done, prompt in enumerate(prompts):
            request = Request.from_prompt(prompt, max_tokens=self.options.max_tokens)
            estimate = estimate_prompt_cost(request, models, self.gates)
            if not self.budget.allows(estimate):
                return done, True
            for spec in models:
                await self._one(prompt, spec)
            if progress is not None:
                progress(done + 1, len(prompts))
        return len(prompts), False


def _check_priced(models: Sequence[ModelSpec], gates: Sequence[Gate], cap: Decimal | None) -> None:
    if cap is None:
        return
    judges = [g.model for g in gates if isinstance(g, JudgeGate)]
    unpriced = [
        s.id for s in [*models, *judges] if s.prices.input is None or s.prices.output is None
    ]
    if unpriced:
        raise InvalidRequestError(
            f"--max-cost needs catalog prices, and {', '.join(unpriced)} has none "
            "(add prices under [[models]] in the config)"
        )


def _by_kind(
    labels: Sequence[Label], models: Sequence[ModelSpec], reader: KindReader
) -> tuple[list[KindRow], list[tuple[str, str]]]:
    cheapest = models[0].id
    verdicts: dict[str, dict[str, bool]] = {}
    for label in labels:
        verdicts.setdefault(label.prompt, {})[label.model] = label.correct
    kinds: dict[str, list[dict[str, bool]]] = {}
    failures: list[tuple[str, str]] = []
    for prompt, by_model in verdicts.items():
        kind = reader(prompt).rule
        kinds.setdefault(kind, []).append(by_model)
        if by_model.get(cheapest) is False and any(by_model.values()):
            failures.append((kind, prompt))
    rows = [
        KindRow(
            kind=kind,
            prompts=len(rows),
            passed={
                s.id: rate(sum(r[s.id] for r in rows if s.id in r), sum(s.id in r for r in rows))
                for s in models
            },
        )
        for kind, rows in kinds.items()
    ]
    rows.sort(key=lambda row: (row.passed[cheapest].value, -row.prompts))
    return rows, failures


async def shadow(
    engine: Engine,
    options: ShadowOptions,
    *,
    gates: Sequence[Gate] | None = None,
    progress: Progress | None = None,
) -> ShadowReport:
    """Sample, re-run on every model, label, write traces; see the module doc."""
    bundles = await _bundles(engine)
    models = candidate_models(engine, bundles, options.models)
    chosen_gates = list(gates) if gates is not None else _gates(engine, options, models)
    _check_priced(models, chosen_gates, options.max_cost)
    prompts = sample_prompts(bundles, options.sample, options.seed)
    run = ShadowRun(engine, options, chosen_gates)
    done, capped = await run.run(prompts, models, progress)
    reader = KindReader(engine.settings.routing.rules)
    written = write_traces(options.out, [Cell(label) for label in run.labels], reader)
    by_kind, failures = _by_kind(run.labels, models, reader)
    return ShadowReport(
        models=[s.id for s in models],
        cheapest=models[0].id,
        gates=[g.name for g in chosen_gates],
        planned=len(prompts),
        prompts_run=done,
        labels=len(run.labels),
        failed_calls=run.failed_calls,
        spent_usd=run.budget.spent,
        stopped_at_cap=capped,
        traces_path=options.out,
        traces_written=written,
        by_kind=by_kind,
        cheap_failures=failures,
    )


def _gates(engine: Engine, options: ShadowOptions, models: Sequence[ModelSpec]) -> list[Gate]:
    """``options.gates``, then ``judge:<options.judge>``; neither: the strongest judges."""
    specs = list(options.gates)
    if options.judge or not specs:
        specs.append(f"judge:{options.judge or models[-1].id}")
    return build_gates(specs, GateEnv(catalog=engine.catalog))


async def _bundles(engine: Engine) -> list[TaskBundle]:
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(load_bundles, engine.ledger)
