"""Per-prompt dollar cost of each model, predicted from the prompt before any call.

Routing on a model's mean cost per call ignores that a long prompt costs more on every
model, and most on the dearest: the ``dollar`` rule weighs predicted success against this
prompt's predicted dollars instead. :class:`CostModel` fits, per model, ``cost = a *
input_tokens + b`` (``a, b >= 0``: the input price and a typical answer's cost) on the
training prompts' recorded costs; the prompt's token count is all it reads, so it is known
at request time. Penalties are relative to the dearest model's mean training cost per call,
so one lambda carries across price scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tierwise.evaluation.matrix import FloatArray
from tierwise.tokens import estimate_tokens


def prompt_tokens(texts: Sequence[str]) -> FloatArray:
    """Estimated input tokens of each prompt."""
    return np.array([estimate_tokens(t) for t in texts], dtype=np.float64)


class CostModel:
    """``cost[i, j] = slope[j] * tokens[i] + base[j]``, non-negative, least squares."""

    def __init__(self) -> None:
        self.slope: FloatArray = np.empty(0)
        self.base: FloatArray = np.empty(0)
        self.reference = 1.0
        """The dearest model's mean cost per call on the training prompts (USD)."""
        self.mean_tokens = 0.0

    def fit(self, prompts: Sequence[str], cost: FloatArray) -> CostModel:
        from scipy.optimize import nnls  # type: ignore[import-untyped]  # noqa: PLC0415

        tokens = prompt_tokens(prompts)
        design = np.column_stack([tokens, np.ones_like(tokens)])
        known = np.isfinite(cost)
        fits = [nnls(design[known[:, j]], cost[known[:, j], j])[0] for j in range(cost.shape[1])]
        self.slope = np.array([f[0] for f in fits])
        self.base = np.array([f[1] for f in fits])
        means = np.nanmean(np.where(known, cost, np.nan), axis=0)
        self.reference = float(np.nanmax(means)) if np.isfinite(means).any() else 1.0
        self.reference = self.reference if self.reference > 0 else 1.0
        self.mean_tokens = float(tokens.mean())
        return self

    def predict(self, prompts: Sequence[str]) -> FloatArray:
        """Predicted USD, shape ``(len(prompts), models)``."""
        tokens = prompt_tokens(prompts)
        return np.asarray(np.outer(tokens, self.slope) + self.base, dtype=np.float64)

    def penalty(self, prompts: Sequence[str]) -> FloatArray:
        """Predicted cost as a fraction of the dearest model's mean cost per call."""
        return self.predict(prompts) / self.reference
