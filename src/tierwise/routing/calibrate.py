"""Calibrate a learned router on recorded outcomes and save it as an artifact.

The matrix is split train / validation / test (``matrix.splits(seed)``). The predictor is
fitted on train (hyper-parameters and probability calibration on validation); then every
threshold of each decision rule is run over the validation prompts and the operating point
is picked for the objective:

- ``target-quality Q``: the cheapest point whose quality is at least ``Q`` x the strongest
  model's quality;
- ``max-cost C``: the best quality at a mean cost of at most ``C`` dollars per call;
- ``strong-share S``: the best quality sending at most a share ``S`` of calls to the
  strongest model.

Validation and held-out test figures at that point come with bootstrap intervals (95%).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from tierwise.errors import CalibrationError
from tierwise.evaluation.matrix import FloatArray, IndexArray, OutcomeMatrix
from tierwise.routing.artifact import ArtifactMeta, Interval, SplitFigures, save_artifact
from tierwise.routing.costmodel import CostModel
from tierwise.routing.decide import RULES, OperatingPoint, RuleKind, choices, outcome, sweep
from tierwise.routing.learned import QualityPredictor, make_predictor

Stage = Callable[[str, int, int], None]
"""Called with (stage, done, total): ``embedding``, ``fitting``, ``sweeping``, ``bootstrap``."""

ObjectiveKind = Literal["target-quality", "max-cost", "strong-share"]


class Objective(BaseModel):
    kind: ObjectiveKind
    value: float = Field(ge=0)

    def __str__(self) -> str:
        return f"{self.kind} {self.value:g}"


class CalibrationReport(BaseModel):
    meta: ArtifactMeta
    path: Path
    curve: list[tuple[str, float, float, float, float]]
    """Validation operating points: (rule, threshold, quality, mean cost, strong share)."""


def _data_hash(matrix: OutcomeMatrix) -> str:
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    for part in (matrix.name, *matrix.models, *matrix.ids, *matrix.prompts):
        digest.update(part.encode() + b"\0")
    digest.update(np.ascontiguousarray(matrix.quality).tobytes())
    digest.update(np.ascontiguousarray(matrix.cost).tobytes())
    return digest.hexdigest()


def _reaching_quality(points: Sequence[OperatingPoint], floor: float) -> OperatingPoint | None:
    ok = [p for p in points if p.quality >= floor - 1e-12]
    return min(ok, key=lambda p: (p.cost, -p.quality)) if ok else None


def _best_within(
    points: Sequence[OperatingPoint], keep: Callable[[OperatingPoint], bool]
) -> OperatingPoint | None:
    ok = [p for p in points if keep(p)]
    return max(ok, key=lambda p: (p.quality, -p.cost)) if ok else None


def choose_point(
    objective: Objective, points: Sequence[OperatingPoint], strongest_quality: float
) -> OperatingPoint:
    """The operating point meeting ``objective``, or a :class:`CalibrationError` naming the
    best that can be reached."""
    if objective.kind == "target-quality":
        floor = objective.value * strongest_quality
        found = _reaching_quality(points, floor)
        if found is None:
            best = max(p.quality for p in points)
            raise CalibrationError(
                f"no threshold reaches {objective.value:.0%} of the strongest model's quality "
                f"({floor:.3f}) on validation; the best reachable is {best:.3f} "
                f"({best / strongest_quality:.1%} of it)"
            )
        return found
    if objective.kind == "max-cost":
        found = _best_within(points, lambda p: p.cost <= objective.value)
        if found is None:
            cheapest = min(p.cost for p in points)
            raise CalibrationError(
                f"no threshold keeps the mean cost at or below ${objective.value:g} per call; "
                f"the cheapest reachable is ${cheapest:.6f}"
            )
        return found
    found = _best_within(points, lambda p: p.strong_share <= objective.value + 1e-12)
    if found is None:
        least = min(p.strong_share for p in points)
        raise CalibrationError(
            f"no threshold sends at most {objective.value:.0%} of calls to the strongest "
            f"model; the least reachable is {least:.1%}"
        )
    return found


def _interval(values: FloatArray) -> Interval:
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(low=round(float(low), 6), high=round(float(high), 6))


def split_figures(
    chosen: IndexArray, matrix: OutcomeMatrix, strongest: int, resamples: int, seed: int
) -> SplitFigures:
    """Quality, cost, relative quality and savings of ``chosen`` on ``matrix``, with
    bootstrap intervals over its prompts."""
    quality = np.nan_to_num(matrix.quality, nan=0.0)
    q, c = outcome(chosen, quality, matrix.cost)
    qs, cs = quality[:, strongest], matrix.cost[:, strongest]
    draws = np.random.default_rng(seed).integers(0, len(q), (resamples, len(q)))
    qm, cm, qsm, csm = (a[draws].mean(axis=1) for a in (q, c, qs, cs))
    rel = qm / np.where(qsm > 0, qsm, np.nan)
    sav = 1 - cm / np.where(csm > 0, csm, np.nan)
    return SplitFigures(
        prompts=len(q),
        quality=round(float(q.mean()), 6),
        quality_ci=_interval(qm),
        cost_usd=float(c.mean()),
        cost_ci=_interval(cm),
        relative_quality=round(float(q.mean() / qs.mean()), 6) if qs.mean() > 0 else 0.0,
        relative_quality_ci=_interval(np.nan_to_num(rel)),
        savings=round(float(1 - c.mean() / cs.mean()), 6) if cs.mean() > 0 else 0.0,
        savings_ci=_interval(np.nan_to_num(sav)),
        strong_share=round(float(np.mean(chosen == strongest)), 6),
        strongest_quality=round(float(qs.mean()), 6),
        strongest_cost_usd=float(cs.mean()),
    )


@dataclass
class _Fitted:
    predictor: QualityPredictor
    validation: FloatArray
    test: FloatArray


def _fit(
    parts: tuple[OutcomeMatrix, OutcomeMatrix, OutcomeMatrix],
    predictor: QualityPredictor,
    stage: Stage | None,
    categories: bool = False,
) -> _Fitted:
    train, validation, test = parts

    def embedding(done: int, total: int) -> None:
        if stage:
            stage("embedding", done, total)

    held_out = predictor.fit(train, validation, embedding, categories=categories)
    if stage:
        stage("fitting", 1, 1)
    return _Fitted(predictor, held_out, predictor.predict(test.prompts, categories=test.categories))


def check_folds(folds: int, rows: int) -> None:
    """A :class:`CalibrationError` unless ``folds`` is 2 to a quarter of ``rows``."""
    if not 2 <= folds <= rows // 4:
        raise CalibrationError(
            f"cross-fitting over {rows} prompts needs 2 to {max(rows // 4, 2)} folds, not {folds}"
        )


def cross_fitted(
    pool: OutcomeMatrix,
    make: Callable[[], QualityPredictor],
    *,
    folds: int = 5,
    seed: int = 0,
    categories: bool = False,
) -> FloatArray:
    """Out-of-fold predictions for every row of ``pool`` (train and validation together):
    the rows are dealt into ``folds`` folds and each fold is predicted by a fresh predictor
    fitted on the others (a quarter of them its validation split, no refit). A threshold
    picked on these sees every prompt of the pool, not the validation split alone."""
    check_folds(folds, len(pool))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    predicted = np.zeros(pool.quality.shape)
    for fold in range(folds):
        held = order[fold::folds]
        rest = rng.permutation(np.setdiff1d(order, held))
        cut = len(rest) * 3 // 4
        predictor = make()
        predictor.refit = False
        predictor.fit(pool.subset(rest[:cut]), pool.subset(rest[cut:]), categories=categories)
        part = pool.subset(held)
        predicted[held] = predictor.predict(part.prompts, categories=part.categories)
    return predicted


def _points(
    rules: Sequence[RuleKind], pred: FloatArray, validation: OutcomeMatrix, train: OutcomeMatrix
) -> list[OperatingPoint]:
    quality = np.nan_to_num(validation.quality, nan=0.0)
    strongest = train.strongest()
    return [
        point
        for kind in rules
        for point in sweep(
            kind, pred, quality=quality, cost=validation.cost,
            cost_hat=_cost_hat(kind, train, validation), strongest=strongest,
        )
    ]  # fmt: skip


def _cost_hat(kind: RuleKind, train: OutcomeMatrix, part: OutcomeMatrix) -> FloatArray:
    """What the rule reads as cost: each model's mean on train, or (``dollar``) each
    prompt's predicted dollars relative to the dearest model's mean."""
    if kind == "dollar":
        return CostModel().fit(train.prompts, train.cost).penalty(part.prompts)
    return np.asarray(train.cost.mean(axis=0), dtype=np.float64)


def _figures(
    point: OperatingPoint,
    fitted: _Fitted,
    parts: tuple[OutcomeMatrix, OutcomeMatrix, OutcomeMatrix],
    resamples: int,
    seed: int,
) -> tuple[SplitFigures, SplitFigures]:
    train, validation, test = parts
    strongest = train.strongest()
    val_hat, test_hat = _cost_hat(point.rule, train, validation), _cost_hat(point.rule, train, test)
    val_choice = choices(point.rule, fitted.validation, val_hat, point.threshold)
    test_choice = choices(point.rule, fitted.test, test_hat, point.threshold)
    return (
        split_figures(val_choice, validation, strongest, resamples, seed),
        split_figures(test_choice, test, strongest, resamples, seed + 1),
    )


def calibrate(
    matrix: OutcomeMatrix,
    objective: Objective,
    *,
    name: str,
    artifacts_dir: Path,
    cache_dir: Path | None = None,
    estimator: str = "logreg",
    embedder: str = "auto",
    calibration: str = "platt",
    rule: RuleKind | Literal["auto"] = "auto",
    seed: int = 0,
    resamples: int = 1000,
    stage: Stage | None = None,
    baseline: Mapping[str, float] | None = None,
    categories: bool = False,
    folds: int = 0,
) -> CalibrationReport:
    """Fit, pick the operating point on validation, measure on test, save the artifact
    (``categories``: blend in per-category success rates; requests then give their category
    in ``metadata["category"]``; ``folds`` >= 2: pick the point on cross-fitted predictions
    over train and validation instead, see :func:`cross_fitted`)."""
    parts = matrix.splits(seed)
    if folds:
        check_folds(folds, len(parts[0]) + len(parts[1]))

    def make() -> QualityPredictor:
        return make_predictor(
            matrix.models,
            estimator=estimator,
            embedder=embedder,
            calibration=calibration,
            cache_dir=cache_dir,
        )

    predictor = make()
    fitted = _fit(parts, predictor, stage, categories)
    predictor.cost_model = CostModel().fit(parts[0].prompts, parts[0].cost)
    picked_on, picked_pred = parts[1], fitted.validation
    if folds:
        picked_on = OutcomeMatrix.concat(parts[:2])
        picked_pred = cross_fitted(picked_on, make, folds=folds, seed=seed, categories=categories)
    points = _points(RULES if rule == "auto" else (rule,), picked_pred, picked_on, parts[0])
    strongest = parts[0].strongest()
    point = choose_point(
        objective, points, float(np.nan_to_num(picked_on.quality[:, strongest]).mean())
    )
    validation, test = _figures(point, fitted, parts, resamples, seed)
    if stage:
        stage("bootstrap", 1, 1)
    meta = ArtifactMeta(
        name=name,
        source=matrix.name,
        data_hash=_data_hash(matrix),
        models=matrix.models,
        strongest=matrix.models[strongest],
        estimator=estimator,
        embedder=predictor.embedder.name,
        embedder_model=predictor.embedder.model_id,
        calibration=calibration,
        rule=point.rule,
        threshold=point.threshold,
        objective=f"{objective}{f', picked by {folds}-fold CV' if folds else ''}",
        seed=seed,
        resamples=resamples,
        validation=validation,
        test=test,
        baseline=dict(baseline or {}),
    )
    artifact = save_artifact(artifacts_dir, meta, predictor)
    curve = [(p.rule, p.threshold, p.quality, p.cost, p.strong_share) for p in points]
    return CalibrationReport(meta=artifact.meta, path=artifact.path, curve=curve)
