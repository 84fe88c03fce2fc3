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
    "learned": "tierwise.routing.learned:build_scorer",
}
"""name -> "module:function" of a :data:`ScorerFactory` (params come from ``name?k=v``)."""


def scorer_factory(name: str) -> ScorerFactory:
    if name not in SCORERS:
        raise PolicyError(f"unknown scorer {name!r} (known: {', '.join(sorted(SCORERS))})")
    module, _, function = SCORERS[name].partition(":")
    return cast(ScorerFactory, getattr(importlib.import_module(module), function))
