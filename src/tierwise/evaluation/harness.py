"""Evaluate scorers as routers on an outcome matrix, over several seeded splits.

For each seed: split (the dataset's own test set when it has one), fit every router on train
and validation, trace its curves on test — a scorer's predictions swept under the ``target``
rule (row ``name``) and the ``lambda`` rule (row ``name@lambda``); a cascade's acceptance
threshold swept over its gated answers — and measure each curve against every single
model, the random mix of the cheapest and the strongest model, and the oracle. The report
gives mean ± sd over seeds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from tierwise.evaluation import metrics as m
from tierwise.evaluation.matrix import FloatArray, IndexArray, OutcomeMatrix
from tierwise.evaluation.scorers import build_router

Kind = Literal["router", "model", "random", "oracle"]
Progress = Callable[[int, int, str], None]
"""Called with (steps done, total steps, what was just done) — one step per seed x scorer."""

TARGET = 0.95
"""Savings are measured where a router first reaches this share of the strongest's quality."""
CPT_LEVELS = (0.5, 0.8, 0.95)


class Stat(BaseModel):
    """Mean and sample standard deviation over the seeds that produced a value."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        known = [v for v in values if v is not None]
        if not known:
            return None
        sd = float(np.std(known, ddof=1)) if len(known) > 1 else 0.0
        return cls(mean=float(np.mean(known)), sd=sd, n=len(known))


class CurveData(BaseModel):
    """One seed's curve, for plots: mean quality, total test cost, strongest-model share."""

    seed: int
    quality: list[float]
    cost_usd: list[float]
    strong_share: list[float]


class RouterResult(BaseModel):
    """One router (or single model, random mix, oracle) over all seeds.

    ``quality``, ``cost_usd`` and ``shares`` are at the operating point: the cheapest curve
    point reaching ``TARGET`` of the strongest model's quality (else the best point).
    """

    name: str
    kind: Kind
    quality: Stat
    cost_usd: Stat
    shares: dict[str, Stat]
    apgr: Stat | None = None
    cpt: dict[str, Stat | None] = Field(default_factory=dict)
    aiq: Stat | None = None
    savings_usd: Stat | None = None
    savings_fraction: Stat | None = None
    strong_share_at_target: Stat | None = None
    reached_target: int = 0
    oracle_gap: Stat | None = None
    """Oracle quality minus the best quality on this curve."""
    seconds: Stat | None = None
    curves: list[CurveData] = Field(default_factory=list)


class FailureShape(BaseModel):
    category: str
    confidently_wrong: int
    prompts: int
    rate: float


class EvalReport(BaseModel):
    dataset: str
    models: list[str]
    strongest: str
    cheapest: str
    prompts: int
    test_prompts: float
    seeds: list[int]
    target: float = TARGET
    notes: list[str]
    results: list[RouterResult]
    failures: dict[str, list[FailureShape]]
    """Per router, at its operating point, summed over seeds: prompts sent to a model that
    did worse than a stronger one would have ("confidently wrong"), most first."""


@dataclass(frozen=True)
class _Context:
    """What every curve of one seed is measured against (on its test split)."""

    quality: FloatArray
    cost: FloatArray
    order: IndexArray
    mean_cost: FloatArray
    """Each model's mean cost per call over the whole dataset (what a router may know)."""
    weak: int
    strong: int
    q_weak: float
    q_strong: float
    strongest_cost: float
    c_min: float
    c_max: float
    oracle_quality: float


@dataclass
class _Run:
    """One curve measured on one seed."""

    name: str
    kind: Kind
    seed: int
    values: dict[str, float | None]
    shares: FloatArray
    curve: CurveData | None
    failures: list[m.FailureCount]


def evaluate(
    matrix: OutcomeMatrix,
    scorer_names: Sequence[str],
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    progress: Progress | None = None,
    max_points: int = 400,
) -> EvalReport:
    """Every router (``name`` or ``name?k=v``: a scorer or a cascade) on every seed's split."""
    for spec in scorer_names:
        build_router(spec)  # unknown names and bad parameters fail before any work
    strong = matrix.strongest()
    runs: list[_Run] = []
    sizes: list[int] = []
    total, done = len(seeds) * max(len(scorer_names), 1), 0
    for seed in seeds:
        train, validation, test = matrix.splits(seed)
        sizes.append(len(test))
        # Each model's mean cost per call, as a deployed router knows it: from the calls it
        # was fitted and tuned on, never from the test rows it is measured on.
        known_cost = np.vstack([train.cost, validation.cost])
        order, mean_cost = m.cost_order(known_cost), known_cost.mean(axis=0)
        ctx = _context(test, order, strong, mean_cost)
        runs += _reference_runs(ctx, seed, test.models)
        for spec in scorer_names:
            runs += _router_runs(spec, seed, (train, validation, test), ctx, max_points)
            done += 1
            if progress:
                progress(done, total, f"seed {seed}: {spec}")
    cheapest = int(m.cost_order(matrix.cost)[0])  # the report's label only
    return _report(matrix, seeds, sizes, runs, extremes=(strong, cheapest))


def _context(
    test: OutcomeMatrix, order: IndexArray, strong: int, mean_cost: FloatArray
) -> _Context:
    singles = [m.pinned(test.quality, test.cost, j) for j in range(len(test.models))]
    costs = [float(s.cost[0]) for s in singles]
    weak = int(order[0])
    oracle = m.outcome(m.oracle_choice(test.quality, test.cost), test.quality, test.cost)
    return _Context(
        quality=test.quality,
        cost=test.cost,
        order=order,
        mean_cost=mean_cost,
        weak=weak,
        strong=strong,
        q_weak=float(singles[weak].quality[0]),
        q_strong=float(singles[strong].quality[0]),
        strongest_cost=costs[strong],
        c_min=min(costs),
        c_max=max(costs),
        oracle_quality=oracle[0],
    )


def _reference_runs(ctx: _Context, seed: int, models: Sequence[str]) -> list[_Run]:
    runs = [
        _measure(model, "model", seed, m.pinned(ctx.quality, ctx.cost, j), ctx)
        for j, model in enumerate(models)
    ]
    mix = m.random_mix(ctx.quality, ctx.cost, ctx.weak, ctx.strong)
    runs.append(_measure("random", "random", seed, mix, ctx))
    choice = m.oracle_choice(ctx.quality, ctx.cost)
    oracle = m.outcome(choice, ctx.quality, ctx.cost)
    point = m.Curve(
        np.array([np.nan]), np.array([oracle[0]]), np.array([oracle[1]]), oracle[2][None, :]
    )
    runs.append(_measure("oracle", "oracle", seed, point, ctx))
    return runs


def _router_runs(
    spec: str,
    seed: int,
    parts: tuple[OutcomeMatrix, OutcomeMatrix, OutcomeMatrix],
    ctx: _Context,
    max_points: int,
) -> list[_Run]:
    """One run per curve the router traces, each closed by the all-on-the-strongest point."""
    train, validation, test = parts
    router = build_router(spec)
    started = time.perf_counter()
    router.fit(train, validation)
    curves = router.curves(test, ctx.mean_cost, max_points)
    seconds = time.perf_counter() - started
    strength = np.vstack([train.quality, validation.quality]).mean(axis=0)
    all_strong = np.full(len(test), ctx.strong, dtype=np.int64)
    runs = []
    for traced in curves:
        closed = traced.curve.extended(m.pinned(ctx.quality, ctx.cost, ctx.strong))
        run = _measure(spec + traced.suffix, "router", seed, closed, ctx)
        run.values["seconds"] = seconds
        at = _operating(closed, ctx)
        choice = traced.answered(at) if at < len(traced.curve) else all_strong
        run.failures = m.failure_shapes(choice, ctx.quality, strength, test.categories)
        runs.append(run)
    return runs


def _operating(curve: m.Curve, ctx: _Context) -> int:
    """The cheapest point reaching the target, else the best point."""
    found = m.savings_at(curve, TARGET * ctx.q_strong, ctx.strongest_cost, ctx.strong)
    return found.index if found else int(np.argmax(curve.quality))


def _measure(name: str, kind: Kind, seed: int, curve: m.Curve, ctx: _Context) -> _Run:
    at = _operating(curve, ctx)
    values: dict[str, float | None] = {
        "quality": float(curve.quality[at]),
        "cost_usd": float(curve.cost[at]),
    }
    values |= _savings(curve, ctx)
    if kind in ("router", "random"):
        values |= _curve_metrics(curve, ctx)
    data = None
    if len(curve) > 1:
        data = CurveData(
            seed=seed,
            quality=_rounded(curve.quality),
            cost_usd=_rounded(curve.cost, 8),
            strong_share=_rounded(curve.shares[:, ctx.strong]),
        )
    return _Run(name, kind, seed, values, curve.shares[at], data, [])


def _savings(curve: m.Curve, ctx: _Context) -> dict[str, float | None]:
    found = m.savings_at(curve, TARGET * ctx.q_strong, ctx.strongest_cost, ctx.strong)
    if found is None:
        return {"savings_usd": None, "savings_fraction": None, "strong_share_at_target": None}
    return {
        "savings_usd": found.saved_usd,
        "savings_fraction": found.saved_fraction,
        "strong_share_at_target": found.strong_share,
        "reached": 1.0,
    }


def _curve_metrics(curve: m.Curve, ctx: _Context) -> dict[str, float | None]:
    share = curve.shares[:, ctx.strong]
    values: dict[str, float | None] = {
        "apgr": m.apgr(share, curve.quality, ctx.q_weak, ctx.q_strong),
        "aiq": m.aiq(curve.cost, curve.quality, ctx.c_min, ctx.c_max),
        "oracle_gap": ctx.oracle_quality - float(curve.quality.max()),
    }
    for level in CPT_LEVELS:
        values[f"cpt{round(level * 100)}"] = m.cpt(
            share, curve.quality, ctx.q_weak, ctx.q_strong, level
        )
    return values


def _rounded(values: FloatArray, places: int = 6) -> list[float]:
    return [round(float(v), places) for v in values]


def _report(
    matrix: OutcomeMatrix,
    seeds: Sequence[int],
    sizes: Sequence[int],
    runs: Sequence[_Run],
    *,
    extremes: tuple[int, int],
) -> EvalReport:
    strong, cheapest = extremes
    grouped: dict[str, list[_Run]] = defaultdict(list)
    for run in runs:
        grouped[run.name].append(run)
    return EvalReport(
        dataset=matrix.name,
        models=matrix.models,
        strongest=matrix.models[strong],
        cheapest=matrix.models[cheapest],
        prompts=len(matrix),
        test_prompts=float(np.mean(sizes)),
        seeds=list(seeds),
        notes=matrix.notes,
        results=[_summary(group, matrix.models) for group in grouped.values()],
        failures={name: _failures(group) for name, group in grouped.items() if group[0].failures},
    )


def _stat(group: Sequence[_Run], key: str) -> Stat | None:
    return Stat.of([run.values.get(key) for run in group])


def _always(values: Sequence[float | None]) -> Stat:
    stat = Stat.of(values)
    if stat is None:
        raise ValueError("no values to summarise")
    return stat


def _summary(group: Sequence[_Run], models: Sequence[str]) -> RouterResult:
    first = group[0]
    columns = np.array([run.shares for run in group]).T
    shares = {model: _always(col.tolist()) for model, col in zip(models, columns, strict=True)}
    return RouterResult(
        name=first.name,
        kind=first.kind,
        quality=_always([run.values["quality"] for run in group]),
        cost_usd=_always([run.values["cost_usd"] for run in group]),
        shares=shares,
        apgr=_stat(group, "apgr"),
        cpt={f"{round(lv * 100)}": _stat(group, f"cpt{round(lv * 100)}") for lv in CPT_LEVELS}
        if first.kind in ("router", "random")
        else {},
        aiq=_stat(group, "aiq"),
        savings_usd=_stat(group, "savings_usd"),
        savings_fraction=_stat(group, "savings_fraction"),
        strong_share_at_target=_stat(group, "strong_share_at_target"),
        reached_target=sum(1 for run in group if run.values.get("reached")),
        oracle_gap=_stat(group, "oracle_gap"),
        seconds=_stat(group, "seconds"),
        curves=[run.curve for run in group if run.curve is not None],
    )


def _failures(group: Sequence[_Run]) -> list[FailureShape]:
    wrong: dict[str, int] = defaultdict(int)
    prompts: dict[str, int] = defaultdict(int)
    for run in group:
        for count in run.failures:
            wrong[count.category] += count.confidently_wrong
            prompts[count.category] += count.prompts
    shapes = [
        FailureShape(category=c, confidently_wrong=wrong[c], prompts=n, rate=wrong[c] / n)
        for c, n in prompts.items()
    ]
    return sorted(shapes, key=lambda f: (-f.confidently_wrong, -f.rate, f.category))
