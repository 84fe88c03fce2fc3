"""The evaluation seams: scorers, and routers that trace cost-quality curves.

A :class:`Scorer` is fitted on a train (and validation) matrix and predicts a quality matrix
for unseen prompts. A :class:`CurveRouter` is fitted the same way and traces, on a test
matrix, one or more cost-quality curves (:class:`RouterCurve`). Every scorer is a curve
router through :class:`ThresholdRouter`, which sweeps the learned router's decision rules
(:mod:`tierwise.routing.decide`) over its predictions: ``target`` (the cheapest model
predicted to clear a threshold; row ``name``), ``lambda`` (the model maximising predicted
quality - lambda x relative cost; row ``name@lambda``) and ``dollar`` (the same with each
prompt's own predicted dollars, from its token count; row ``name@dollar``). Routers that
are not threshold routing on predictions — the cascades of
:mod:`tierwise.evaluation.cascade`, which need the recorded responses — implement
:class:`CurveRouter` directly. Both kinds are registered by name and imported on use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from tierwise.errors import PolicyError
from tierwise.evaluation import metrics as m
from tierwise.evaluation.matrix import FloatArray, IndexArray, OutcomeMatrix
from tierwise.routing.costmodel import CostModel


class Scorer(Protocol):
    name: str

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None: ...

    def predict(self, matrix: OutcomeMatrix) -> FloatArray:
        """Predicted quality, shape ``(len(matrix), len(matrix.models))``."""
        ...


@dataclass(frozen=True)
class RouterCurve:
    """One cost-quality curve of a router on a test matrix; ``answered(i)`` is, per prompt,
    the model whose answer it ends with at point ``i`` (for failure shapes)."""

    suffix: str
    """Appended to the router's name in reports ("" or e.g. ``"@lambda"``)."""
    curve: m.Curve
    answered: Callable[[int], IndexArray]


class CurveRouter(Protocol):
    name: str

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None: ...

    def curves(
        self, test: OutcomeMatrix, mean_cost: FloatArray, max_points: int
    ) -> list[RouterCurve]:
        """The curves on ``test``; ``mean_cost`` is each model's known mean cost per call."""
        ...


ScorerFactory = Callable[[Mapping[str, str]], Scorer]
RouterFactory = Callable[[Mapping[str, str]], CurveRouter]

SCORERS: dict[str, str] = {
    "tfidf": "tierwise.evaluation.baselines:build_tfidf",
    "constant": "tierwise.evaluation.baselines:build_constant",
    "learned": "tierwise.routing.learned:build_scorer",
}
"""name -> "module:function" of a :data:`ScorerFactory` (params come from ``name?k=v``)."""

CURVE_ROUTERS: dict[str, str] = {
    "cascade": "tierwise.evaluation.cascade:build_cascade",
    "cascade+tfidf": "tierwise.evaluation.cascade:build_tfidf_cascade",
    "cascade+learned": "tierwise.evaluation.cascade:build_learned_cascade",
}
"""name -> "module:function" of a :data:`RouterFactory`."""


def _load(name: str, registry: Mapping[str, str]) -> object:
    known = sorted({*SCORERS, *CURVE_ROUTERS})
    if name not in registry:
        raise PolicyError(f"unknown scorer {name!r} (known: {', '.join(known)})")
    module, _, function = registry[name].partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"scorer {name!r} is not available: {exc}") from None


def scorer_factory(name: str) -> ScorerFactory:
    return cast(ScorerFactory, _load(name, SCORERS))


def parse_scorer(spec: str) -> tuple[str, dict[str, str]]:
    """``"name?k=v&k2=v2"`` -> ``("name", {"k": "v", "k2": "v2"})``."""
    name, _, query = spec.strip().partition("?")
    params: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PolicyError(f"scorer {spec!r}: parameter {item!r} is not key=value")
        params[key] = value
    return name, params


def build_scorer(spec: str) -> Scorer:
    """A fresh, unfitted scorer for ``spec`` (see :func:`parse_scorer`)."""
    name, params = parse_scorer(spec)
    return scorer_factory(name)(params)


def build_router(spec: str) -> CurveRouter:
    """A fresh, unfitted router for ``spec``: a registered curve router, else a scorer
    swept as a threshold router."""
    name, params = parse_scorer(spec)
    if name in CURVE_ROUTERS:
        return cast(RouterFactory, _load(name, CURVE_ROUTERS))(params)
    return ThresholdRouter(build_scorer(spec))


def predictions(
    scorer: Scorer, train: OutcomeMatrix, validation: OutcomeMatrix, test: OutcomeMatrix
) -> FloatArray:
    """Fit ``scorer`` and predict ``test``; a missing optional package or a malformed
    prediction is a :class:`PolicyError`."""
    try:
        scorer.fit(train, validation)
        predicted = np.asarray(scorer.predict(test), dtype=np.float64)
    except ImportError as exc:
        raise PolicyError(
            f"scorer {scorer.name!r} needs an optional package: {exc.name or exc} "
            "(pip install 'tierwise[learn]')"
        ) from None
    expected = (len(test), len(test.models))
    if predicted.shape != expected or not np.isfinite(predicted).all():
        raise PolicyError(
            f"scorer {scorer.name!r} predicted {predicted.shape} values (finite: "
            f"{bool(np.isfinite(predicted).all())}), expected {expected}, all finite"
        )
    return predicted


class ThresholdRouter:
    """A scorer's predictions routed by the ``target`` and the ``lambda`` rule."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self._parts: tuple[OutcomeMatrix, OutcomeMatrix] | None = None

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None:
        self._parts = (train, validation)

    def curves(
        self, test: OutcomeMatrix, mean_cost: FloatArray, max_points: int
    ) -> list[RouterCurve]:
        if self._parts is None:
            raise PolicyError(f"router {self.name!r} was asked for curves before fit")
        predicted = predictions(self.scorer, *self._parts, test)
        order = np.argsort(mean_cost, kind="stable").astype(np.int64)
        penalty = m.relative_cost(mean_cost)
        target = m.sweep(predicted, test.quality, test.cost, order, max_points)
        lam = m.sweep_lambda(predicted, test.quality, test.cost, penalty, max_points)
        per_prompt = _cost_model(*self._parts).penalty(test.prompts)
        dollar = m.sweep_lambda(predicted, test.quality, test.cost, per_prompt, max_points)
        return [
            RouterCurve(
                "", target, lambda i: m.route(predicted, order, float(target.thresholds[i]))
            ),
            RouterCurve(
                "@lambda",
                lam,
                lambda i: m.route_lambda(predicted, penalty, float(lam.thresholds[i])),
            ),
            RouterCurve(
                "@dollar",
                dollar,
                lambda i: m.route_lambda(predicted, per_prompt, float(dollar.thresholds[i])),
            ),
        ]


def _cost_model(train: OutcomeMatrix, validation: OutcomeMatrix) -> CostModel:
    """Each model's dollars per prompt from its token count, fitted on train + validation."""
    return CostModel().fit(
        train.prompts + validation.prompts, np.vstack([train.cost, validation.cost])
    )
