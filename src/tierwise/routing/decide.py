"""Decision rules over predicted success, for one request or a whole matrix at once.

``target``: the cheapest model whose predicted success clears the threshold, else the one
predicted best. ``lambda``: the model maximising ``quality - lambda * cost`` (minus
``mu * latency`` when speed matters), with cost relative to the dearest candidate's, so a
lambda calibrated on one dataset's dollars carries over to another price scale (``lambda =
0.1``: paying the dearest model's price must buy 10 points more predicted success).
``dollar``: the same with each row's own predicted cost (:mod:`tierwise.routing.costmodel`),
relative to the dearest model's mean cost per call, so a long prompt leans cheap. The
router applies a rule to one row; calibration sweeps the threshold over a validation matrix
to trace the whole cost-quality curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from tierwise.evaluation.matrix import FloatArray, IndexArray

RuleKind = Literal["target", "lambda", "dollar"]
RULES: tuple[RuleKind, ...] = ("target", "lambda", "dollar")


def choose_by_target(pred: FloatArray, order: IndexArray, target: float) -> IndexArray:
    """Per row: the first model in ``order`` (cheapest first) with ``pred >= target``, else
    the row's best predicted model."""
    clears = pred[:, order] >= target
    first = order[np.argmax(clears, axis=1)]
    chosen = np.where(clears.any(axis=1), first, np.argmax(pred, axis=1))
    return np.asarray(chosen, dtype=np.int64)


def relative(cost: FloatArray) -> FloatArray:
    """Costs as fractions of the dearest one (unknown costs, ``inf``, stay ``inf``)."""
    finite = cost[np.isfinite(cost)]
    top = float(finite.max()) if finite.size else 0.0
    return cost / top if top > 0 else np.where(np.isfinite(cost), 0.0, np.inf)


def choose_by_lambda(pred: FloatArray, penalty: FloatArray, lam: float) -> IndexArray:
    """Per row: the model maximising ``pred - lam * penalty`` (``penalty`` per model or per
    cell: relative cost, with ``mu * latency`` folded in where speed matters)."""
    return np.asarray(np.argmax(pred - lam * penalty, axis=-1), dtype=np.int64)


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold of one rule, and what it did on a matrix."""

    rule: RuleKind
    threshold: float
    quality: float
    cost: float
    strong_share: float


def target_grid(pred: FloatArray, size: int = 400) -> FloatArray:
    """Thresholds spanning the predictions: 0 (all cheapest) to above every prediction."""
    inner = np.quantile(pred, np.linspace(0, 1, size))
    return np.unique(np.concatenate([[0.0], inner, [1.0 + 1e-9]]))


def lambda_grid(size: int = 400) -> FloatArray:
    """Trade-offs from 0 (best predicted) to ones where relative cost dominates."""
    return np.concatenate([[0.0], np.geomspace(1e-4, 1e2, size)])


def choices(rule: RuleKind, pred: FloatArray, cost_hat: FloatArray, threshold: float) -> IndexArray:
    """The model each row goes to under ``rule`` at ``threshold`` (``cost_hat``: per model;
    for ``dollar``, per row and model, already relative: :meth:`CostModel.penalty`)."""
    if rule == "target":
        return choose_by_target(pred, np.argsort(cost_hat, kind="stable"), threshold)
    if rule == "dollar":
        return choose_by_lambda(pred, cost_hat, threshold)
    return choose_by_lambda(pred, relative(cost_hat), threshold)


def outcome(
    chosen: IndexArray, quality: FloatArray, cost: FloatArray
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-row realised quality and cost of the routed model."""
    rows = np.arange(len(chosen))
    return quality[rows, chosen], cost[rows, chosen]


def sweep(
    rule: RuleKind,
    pred: FloatArray,
    *,
    quality: FloatArray,
    cost: FloatArray,
    cost_hat: FloatArray,
    strongest: int,
) -> list[OperatingPoint]:
    """Every threshold of ``rule`` on the grid, evaluated against the recorded outcomes."""
    grid = target_grid(pred) if rule == "target" else lambda_grid()
    points = []
    for threshold in grid:
        chosen = choices(rule, pred, cost_hat, float(threshold))
        q, c = outcome(chosen, quality, cost)
        share = float(np.mean(chosen == strongest))
        points.append(
            OperatingPoint(rule, float(threshold), float(q.mean()), float(c.mean()), share)
        )
    return points
