"""The evaluation seam: anything that predicts, per prompt, each model's chance of success.

A :class:`Scorer` is fitted on a train (and validation) matrix and predicts a quality matrix
for unseen prompts; the harness turns predictions into routing decisions by sweeping a
threshold, so every scorer yields a whole cost-quality curve. Scorers are registered by
name and imported on use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Protocol, cast

from tierwise.errors import PolicyError
from tierwise.evaluation.matrix import FloatArray, OutcomeMatrix


class Scorer(Protocol):
    name: str

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None: ...

    def predict(self, matrix: OutcomeMatrix) -> FloatArray:
        """Predicted quality, shape ``(len(matrix), len(matrix.models))``."""
        ...


ScorerFactory = Callable[[Mapping[str, str]], Scorer]

SCORERS: dict[str, str] = {
    "tfidf": "tierwise.evaluation.baselines:build_tfidf",
    "constant": "tierwise.evaluation.baselines:build_constant",
    "learned": "tierwise.routing.learned:build_scorer",
}
"""name -> "module:function" of a :data:`ScorerFactory` (params come from ``name?k=v``)."""


def scorer_factory(name: str) -> ScorerFactory:
    if name not in SCORERS:
        raise PolicyError(f"unknown scorer {name!r} (known: {', '.join(sorted(SCORERS))})")
    module, _, function = SCORERS[name].partition(":")
    try:
        return cast(ScorerFactory, getattr(importlib.import_module(module), function))
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"scorer {name!r} is not available: {exc}") from None


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
