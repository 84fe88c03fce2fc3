"""Routing metrics as pure functions over numpy arrays.

Routing policy (:func:`route`): send a prompt to the cheapest model whose predicted quality
is at least the threshold ``t``, else to the highest-predicted one. "Cheapest" follows one
fixed cost order of the models (mean cost per call). With two models this is RouteLLM's
threshold on the strong model's win probability. :func:`sweep` runs every threshold at which
a decision changes and returns the whole cost-quality curve.

RouteLLM's metrics (Ong et al. 2024), over the share ``s`` of calls sent to the strong model:

* PGR (performance gap recovered) = (q - q_weak) / (q_strong - q_weak);
* APGR = area under PGR(s), trapezoids over the sweep, divided by the span of ``s``
  (``(AUC - weak AUC) / (strong AUC - weak AUC)`` in RouteLLM's ``evaluate.py``);
* CPT(x) = the smallest strong-call share whose PGR reaches ``x``, interpolated linearly
  along the curve (RouteLLM's ``np.interp`` where the curve rises monotonically).

RouterBench's AIQ (Hu et al. 2024): the area under the non-decreasing convex hull of the
(cost, quality) points, extended flat to ``c_max``, divided by ``c_max - c_min``; any part of
the range below the router's cheapest point counts as quality 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tierwise.evaluation.matrix import FloatArray, IndexArray


@dataclass(frozen=True)
class Curve:
    """One point per threshold: mean quality, total cost (USD) and share of calls per model.

    ``thresholds`` is NaN for points added by hand (a pinned model, a random mix)."""

    thresholds: FloatArray
    quality: FloatArray
    cost: FloatArray
    shares: FloatArray
    """shape ``(points, models)``"""

    def __len__(self) -> int:
        return len(self.quality)

    def extended(self, other: Curve) -> Curve:
        """This curve followed by ``other``'s points."""
        return Curve(
            thresholds=np.concatenate([self.thresholds, other.thresholds]),
            quality=np.concatenate([self.quality, other.quality]),
            cost=np.concatenate([self.cost, other.cost]),
            shares=np.vstack([self.shares, other.shares]),
        )


def cost_order(cost: FloatArray) -> IndexArray:
    """Models from cheapest to dearest by mean cost per call (ties keep matrix order)."""
    return np.argsort(cost.mean(axis=0), kind="stable").astype(np.int64)


def route(predicted: FloatArray, order: IndexArray, threshold: float) -> IndexArray:
    """Per prompt: the first model in ``order`` predicted ``>= threshold``, else the
    highest-predicted (the cheaper one on ties)."""
    ranked = predicted[:, order]
    passing = ranked >= threshold
    first = np.argmax(passing, axis=1)
    best = np.argmax(ranked, axis=1)
    chosen: IndexArray = order[np.where(passing.any(axis=1), first, best)].astype(np.int64)
    return chosen


def outcome(
    choice: IndexArray, quality: FloatArray, cost: FloatArray
) -> tuple[float, float, FloatArray]:
    """(mean quality, total cost, share of calls per model) of one routing."""
    rows = np.arange(len(choice))
    shares = np.bincount(choice, minlength=quality.shape[1]) / len(choice)
    return float(quality[rows, choice].mean()), float(cost[rows, choice].sum()), shares


def thresholds_of(predicted: FloatArray, order: IndexArray, max_points: int = 400) -> FloatArray:
    """Every threshold at which some decision changes (at most ``max_points``, by quantile),
    then the largest prediction, where routing settles on each prompt's best model."""
    running = np.maximum.accumulate(predicted[:, order], axis=1)
    values = np.unique(running[:, :-1]) if running.shape[1] > 1 else np.empty(0)
    if len(values) > max_points:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_points)))
    return np.append(values[values < running.max()], running.max())


def sweep(
    predicted: FloatArray,
    quality: FloatArray,
    cost: FloatArray,
    order: IndexArray,
    max_points: int = 400,
) -> Curve:
    """The cost-quality curve of threshold routing on ``predicted``."""
    thresholds = thresholds_of(predicted, order, max_points)
    points = [outcome(route(predicted, order, t), quality, cost) for t in thresholds]
    return _curve(thresholds, points)


def relative_cost(mean_cost: FloatArray) -> FloatArray:
    """Each model's mean cost per call as a fraction of the dearest model's."""
    top = float(mean_cost.max())
    return mean_cost / top if top > 0 else np.zeros_like(mean_cost)


def route_lambda(predicted: FloatArray, penalty: FloatArray, lam: float) -> IndexArray:
    """Per prompt: the model maximising ``predicted - lam * penalty`` (the earlier model on
    ties); ``penalty`` is each model's relative cost, or each prompt's (``(n, m)``)."""
    chosen: IndexArray = np.argmax(predicted - lam * penalty, axis=1).astype(np.int64)
    return chosen


def lambda_thresholds(
    predicted: FloatArray, penalty: FloatArray, max_points: int = 400
) -> FloatArray:
    """Every lambda at which some decision changes (the midpoints between the crossings of
    two models' ``predicted - lambda * penalty`` lines; at most ``max_points``, by quantile),
    after 0 and before a lambda where every prompt goes to the cheapest model."""
    gain = predicted[:, :, None] - predicted[:, None, :]
    cell = np.broadcast_to(penalty, predicted.shape)  # per model, or per prompt and model
    price = cell[:, :, None] - cell[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossings = gain / price
    values = np.unique(crossings[np.isfinite(crossings) & (crossings > 0)])
    if len(values) > max_points:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_points)))
    inner = (values[:-1] + values[1:]) / 2
    top = float(values[-1]) * 2 if len(values) else 1.0
    return np.concatenate([[0.0], inner, [top]])


def sweep_lambda(
    predicted: FloatArray,
    quality: FloatArray,
    cost: FloatArray,
    penalty: FloatArray,
    max_points: int = 400,
) -> Curve:
    """The cost-quality curve of the lambda rule on ``predicted``: maximise predicted quality
    - lambda x ``penalty`` (each model's relative cost, see :func:`relative_cost`)."""
    thresholds = lambda_thresholds(predicted, penalty, max_points)
    points = [outcome(route_lambda(predicted, penalty, t), quality, cost) for t in thresholds]
    return _curve(thresholds, points)


def _curve(thresholds: FloatArray, points: Sequence[tuple[float, float, FloatArray]]) -> Curve:
    return Curve(
        thresholds=np.asarray(thresholds, dtype=np.float64),
        quality=np.array([p[0] for p in points]),
        cost=np.array([p[1] for p in points]),
        shares=np.vstack([p[2] for p in points]),
    )


def pinned(quality: FloatArray, cost: FloatArray, model: int) -> Curve:
    """The single point of sending every prompt to ``model``."""
    choice = np.full(len(quality), model, dtype=np.int64)
    return _curve(np.array([np.nan]), [outcome(choice, quality, cost)])


def random_mix(
    quality: FloatArray, cost: FloatArray, weak: int, strong: int, steps: int = 101
) -> Curve:
    """Expected value of sending each prompt to ``strong`` with probability p, else ``weak``."""
    low, high = pinned(quality, cost, weak), pinned(quality, cost, strong)
    p = np.linspace(0.0, 1.0, steps)[:, None]
    mixed = (1 - p) * np.hstack([low.quality, low.cost]) + p * np.hstack([high.quality, high.cost])
    shares = (1 - p) * low.shares + p * high.shares
    return Curve(np.full(steps, np.nan), mixed[:, 0], mixed[:, 1], shares)


def oracle_choice(quality: FloatArray, cost: FloatArray) -> IndexArray:
    """Per prompt the cheapest model with the prompt's best quality (the cheapest correct
    model); the cheapest model when none scores above 0."""
    best = quality.max(axis=1, keepdims=True)
    eligible = ((quality == best) & (best > 0)) | (best <= 0)
    chosen: IndexArray = np.argmin(np.where(eligible, cost, np.inf), axis=1).astype(np.int64)
    return chosen


def crossing(x: FloatArray, y: FloatArray, target: float) -> tuple[int, int, float] | None:
    """Where the curve first reaches ``y >= target`` going right along ``x``: indices ``(a, b)``
    of the segment and the fraction ``w`` along it (``x = x[a] + w * (x[b] - x[a])``)."""
    order = np.lexsort((-y, x))
    reached = np.flatnonzero(y[order] >= target)
    if len(reached) == 0:
        return None
    k = int(reached[0])
    if k == 0:
        return int(order[0]), int(order[0]), 0.0
    a, b = int(order[k - 1]), int(order[k])
    return a, b, float((target - y[a]) / (y[b] - y[a]))


def _at(values: FloatArray, where: tuple[int, int, float]) -> float:
    a, b, w = where
    return float(values[a] + w * (values[b] - values[a]))


def pgr(quality: FloatArray, q_weak: float, q_strong: float) -> FloatArray:
    return (quality - q_weak) / (q_strong - q_weak)


def apgr(share: FloatArray, quality: FloatArray, q_weak: float, q_strong: float) -> float | None:
    """RouteLLM's average performance gap recovered (``None`` when undefined)."""
    span = float(share.max() - share.min())
    if span <= 0 or q_strong == q_weak:
        return None
    order = np.lexsort((quality, share))
    return float(np.trapezoid(pgr(quality[order], q_weak, q_strong), share[order]) / span)


def cpt(
    share: FloatArray, quality: FloatArray, q_weak: float, q_strong: float, level: float
) -> float | None:
    """RouteLLM's call-performance threshold: the least strong-call share reaching PGR
    ``level`` (``None`` if the curve never does)."""
    if q_strong == q_weak:
        return None
    where = crossing(share, pgr(quality, q_weak, q_strong), level)
    return None if where is None else _at(share, where)


def nondecreasing_hull(cost: FloatArray, quality: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The upper convex hull of the points, cut at its highest point (non-decreasing)."""
    hull: list[tuple[float, float]] = []
    for x, y in sorted(zip(cost.tolist(), quality.tolist(), strict=True), key=_left_high):
        if hull and hull[-1][0] == x:
            continue
        while len(hull) >= 2 and _turn(hull[-2], hull[-1], (x, y)) >= 0:
            hull.pop()
        hull.append((x, y))
    peak = int(np.argmax([y for _, y in hull]))
    xs, ys = zip(*hull[: peak + 1], strict=True)
    return np.array(xs), np.array(ys)


def _left_high(point: tuple[float, float]) -> tuple[float, float]:
    return point[0], -point[1]


def _turn(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def aiq(cost: FloatArray, quality: FloatArray, c_min: float, c_max: float) -> float | None:
    """RouterBench's average improvement in quality over ``[c_min, c_max]``."""
    if c_max <= c_min:
        return None
    xs, ys = nondecreasing_hull(cost, quality)
    start = max(c_min, float(xs[0]))
    if start >= c_max:
        return 0.0
    inner = xs[(xs > start) & (xs < c_max)]
    grid = np.concatenate([[start], inner, [c_max]])
    return float(np.trapezoid(np.interp(grid, xs, ys), grid) / (c_max - c_min))


@dataclass(frozen=True)
class Savings:
    """Cheapest curve point reaching the target quality, against all-on-the-strongest."""

    index: int
    cost_usd: float
    saved_usd: float
    saved_fraction: float
    strong_share: float


def savings_at(curve: Curve, target: float, strongest_cost: float, strong: int) -> Savings | None:
    """The cheapest point of ``curve`` with quality ``>= target`` (``None`` if none)."""
    reached = np.flatnonzero(curve.quality >= target - 1e-12)
    if len(reached) == 0:
        return None
    index = int(reached[np.argmin(curve.cost[reached])])
    cost = float(curve.cost[index])
    saved = strongest_cost - cost
    fraction = saved / strongest_cost if strongest_cost > 0 else 0.0
    return Savings(index, cost, saved, fraction, float(curve.shares[index, strong]))


@dataclass(frozen=True)
class FailureCount:
    category: str
    confidently_wrong: int
    prompts: int

    @property
    def rate(self) -> float:
        return self.confidently_wrong / self.prompts if self.prompts else 0.0


def confidently_wrong(choice: IndexArray, quality: FloatArray, strength: FloatArray) -> FloatArray:
    """Per prompt 1.0 when it went to a model that did worse on it than some stronger model
    (higher mean quality) did — e.g. the cheap model was wrong and a stronger one right."""
    rows = np.arange(len(choice))
    got = quality[rows, choice][:, None]
    stronger = strength[None, :] > strength[choice][:, None]
    better = np.logical_and(quality > got, stronger)
    return np.asarray(better.any(axis=1), dtype=np.float64)


def failure_shapes(
    choice: IndexArray, quality: FloatArray, strength: FloatArray, categories: Sequence[str]
) -> list[FailureCount]:
    """Confidently-wrong routings per category, most first."""
    wrong = confidently_wrong(choice, quality, strength)
    totals = Counter(categories)
    counts: Counter[str] = Counter()
    for category, flag in zip(categories, wrong, strict=True):
        counts[category] += int(flag)
    shapes = [FailureCount(c, counts[c], n) for c, n in totals.items()]
    return sorted(shapes, key=lambda f: (-f.confidently_wrong, -f.rate, f.category))
