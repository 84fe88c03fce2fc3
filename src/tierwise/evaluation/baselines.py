"""Simple scorers to beat: TF-IDF + logistic regression per model, and a constant prior.

``tfidf`` is the published text-classifier baseline of routing papers: one logistic
regression per model on TF-IDF word n-grams of the prompt, predicting the chance that the
model answers well. Quality in [0, 1] that is not 0/1 (pass fractions) is used as a soft
label. The regularisation strength is chosen on the validation split, then the model is
refitted on train + validation. scikit-learn is imported only when a scorer is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tierwise.errors import PolicyError
from tierwise.evaluation.matrix import FloatArray, OutcomeMatrix
from tierwise.evaluation.scorers import Scorer

C_GRID = (0.1, 1.0, 10.0)


def _number(params: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(params.get(key, default))
    except ValueError:
        raise PolicyError(f"scorer parameter {key}={params[key]!r} is not a number") from None


def build_tfidf(params: Mapping[str, str]) -> Scorer:
    """``tfidf`` (params: ``C`` to skip the search, ``max_features``, ``ngrams``)."""
    known = {"C", "max_features", "ngrams"}
    if unknown := set(params) - known:
        raise PolicyError(
            f"tfidf: unknown parameter {sorted(unknown)[0]!r} (known: C, max_features, ngrams)"
        )
    fixed = params.get("C")
    return TfidfScorer(
        c_grid=(_number(params, "C", 1.0),) if fixed is not None else C_GRID,
        max_features=int(_number(params, "max_features", 50_000)),
        ngrams=int(_number(params, "ngrams", 2)),
    )


def build_constant(params: Mapping[str, str]) -> Scorer:
    """``constant``: every prompt gets each model's mean training quality."""
    if params:
        raise PolicyError("constant takes no parameters")
    return ConstantScorer()


@dataclass
class ConstantScorer:
    name: str = "constant"
    prior: FloatArray = field(default_factory=lambda: np.empty(0))

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None:
        self.prior = np.vstack([train.quality, validation.quality]).mean(axis=0)

    def predict(self, matrix: OutcomeMatrix) -> FloatArray:
        return np.tile(self.prior, (len(matrix), 1))


@dataclass
class TfidfScorer:
    name: str = "tfidf"
    c_grid: tuple[float, ...] = C_GRID
    max_features: int = 50_000
    ngrams: int = 2
    chosen_c: list[float] = field(default_factory=list)
    _vectorizer: Any = None
    _models: list[Any | float] = field(default_factory=list)

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None:
        from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]  # noqa: PLC0415
            TfidfVectorizer,
        )

        self._vectorizer = TfidfVectorizer(
            ngram_range=(1, self.ngrams),
            sublinear_tf=True,
            min_df=2,
            max_features=self.max_features,
            strip_accents="unicode",
        )
        x_all = self._vectorizer.fit_transform(train.prompts + validation.prompts)
        x_train, x_val = x_all[: len(train)], x_all[len(train) :]
        q_all = np.concatenate([train.quality, validation.quality])
        self._models, self.chosen_c = [], []
        for j in range(len(train.models)):
            c = self._select_c(x_train, train.quality[:, j], x_val, validation.quality[:, j])
            self.chosen_c.append(c)
            self._models.append(_fit_soft(x_all, q_all[:, j], c))

    def _select_c(self, x_train: Any, q_train: FloatArray, x_val: Any, q_val: FloatArray) -> float:
        if len(self.c_grid) == 1:
            return self.c_grid[0]
        losses = [
            _log_loss(_predict(_fit_soft(x_train, q_train, c), x_val), q_val) for c in self.c_grid
        ]
        return self.c_grid[int(np.argmin(losses))]

    def predict(self, matrix: OutcomeMatrix) -> FloatArray:
        if self._vectorizer is None:
            raise PolicyError("tfidf: predict before fit")
        x = self._vectorizer.transform(matrix.prompts)
        return np.column_stack([_predict(model, x) for model in self._models])


def _fit_soft(x: Any, q: FloatArray, c: float) -> Any | float:
    """Logistic regression on soft labels (each row as a weighted positive and negative);
    a constant when every label is the same."""
    from scipy.sparse import vstack  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: PLC0415

    if np.all(q == q[0]):
        return float(q[0])
    model = LogisticRegression(C=c, solver="liblinear", max_iter=1000)
    if np.all((q == 0) | (q == 1)):
        return model.fit(x, q.astype(np.int64))
    labels = np.concatenate([np.ones(len(q)), np.zeros(len(q))])
    return model.fit(vstack([x, x]), labels, sample_weight=np.concatenate([q, 1 - q]))


def _predict(model: Any | float, x: Any) -> FloatArray:
    if isinstance(model, float):
        return np.full(x.shape[0], model)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


def _log_loss(p: FloatArray, q: FloatArray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-np.mean(q * np.log(p) + (1 - q) * np.log(1 - p)))
