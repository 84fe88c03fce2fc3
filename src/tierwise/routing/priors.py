"""Per-category success priors blended into a learned predictor's probabilities.

Where a request carries its category in its metadata (an MMLU subject, the benchmark a
RouterBench prompt comes from, a team's task kind), each model's success rate on that
category in the training outcomes is a strong hint on its own. :class:`CategoryBlend`
learns those rates (shrunk toward the model's overall rate, so a thin category says little)
and mixes them into the predictor's probabilities with a weight picked on validation by
Brier score. A request without a known category keeps the predictor's probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tierwise.evaluation.matrix import FloatArray

WEIGHTS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75)
"""Blend weights tried on validation (0: the category is not used)."""
SHRINK = 20.0
"""Pseudo-count of the overall rate in each category's rate."""


def category_rates(categories: Sequence[str], y: FloatArray) -> dict[str, FloatArray]:
    """Each category's per-model success rate, shrunk toward the overall rate."""
    overall = y.mean(axis=0)
    labels = np.array(categories)
    rates = {}
    for category in sorted(set(categories)):
        rows = y[labels == category]
        rates[category] = (rows.sum(axis=0) + SHRINK * overall) / (len(rows) + SHRINK)
    return rates


class CategoryBlend:
    """``(1 - w) * predicted + w * rate[category]`` per row whose category is known."""

    def __init__(self) -> None:
        self.weight = 0.0
        self.rates: dict[str, FloatArray] = {}

    def fit(
        self,
        train: tuple[Sequence[str], FloatArray],
        validation: tuple[Sequence[str], FloatArray],
        held_out: FloatArray,
    ) -> FloatArray:
        """Rates from ``train``; the weight that best fits ``validation`` (categories,
        outcomes) given the predictor's out-of-sample ``held_out`` predictions there; then
        the rates again from both. Returns ``held_out`` blended."""
        (categories, y), (val_categories, y_val) = train, validation
        self.rates = category_rates(categories, y)
        errors = {}
        for weight in WEIGHTS:
            self.weight = weight
            errors[weight] = float(np.mean((self.apply(held_out, val_categories) - y_val) ** 2))
        self.weight = min(errors, key=lambda w: (errors[w], w))
        blended = self.apply(held_out, val_categories)
        self.rates = category_rates([*categories, *val_categories], np.vstack([y, y_val]))
        return blended

    def apply(self, predicted: FloatArray, categories: Sequence[str | None]) -> FloatArray:
        if self.weight == 0:
            return predicted
        out = predicted.copy()
        for i, category in enumerate(categories):
            rate = self.rates.get(category) if category is not None else None
            if rate is not None:
                out[i] = (1 - self.weight) * predicted[i] + self.weight * rate
        return out
