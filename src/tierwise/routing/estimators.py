"""Per-model success predictors and their probability calibration.

Every estimator maps prompt :class:`~tierwise.routing.features.Features` to an ``(n, m)``
matrix of success probabilities, one column per model, learned from observed quality in
``[0, 1]`` (fractional quality is used as a soft label). Hyper-parameters are picked on the
validation split by Brier score. Fitting uses scikit-learn; prediction is plain numpy where
that is simple, so one routing decision stays well under a millisecond.

- ``knn``: the mean outcome of the k most similar training prompts (cosine on embeddings),
  shrunk toward the model's overall success rate.
- ``logreg``: one L2 logistic regression per model.
- ``gbm``: one histogram gradient-boosted classifier per model, early-stopped on validation.
- ``mf``: matrix factorisation across models (RouteLLM's MF router generalised to m models):
  ``logit p[i, j] = u_j . (W x_i) + b_j``, the prompt projection ``W`` shared by all models
  and trained jointly with the model vectors ``u_j`` (Adam, early-stopped on validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from tierwise.errors import PolicyError
from tierwise.evaluation.matrix import FloatArray
from tierwise.routing.embeddings import Vectors
from tierwise.routing.features import Features

_EPS = 1e-6


def sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), dtype=np.float64)


def logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def brier(pred: FloatArray, y: FloatArray) -> float:
    """Mean squared error of predicted probabilities (lower is better)."""
    return float(np.mean((pred - y) ** 2))


def soft_labels(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """A fractional target ``y`` as weighted 1- and 0-labelled copies of each row (weights
    ``None`` when ``y`` is already 0/1: some estimators are much slower with weights)."""
    if np.all((y == 0) | (y == 1)):
        return x, y.astype(np.float64), None
    pos, neg = y > 0, y < 1
    rows = np.vstack([x[pos], x[neg]])
    labels = np.concatenate([np.ones(pos.sum()), np.zeros(neg.sum())])
    weights = np.concatenate([y[pos], 1 - y[neg]])
    return rows, labels, weights


class Estimator(Protocol):
    name: str

    def fit(self, train: Features, y: FloatArray, val: Features, y_val: FloatArray) -> None:
        """Fit on ``train``, choosing hyper-parameters (or when to stop) on ``val``."""
        ...

    def refit(self, x: Features, y: FloatArray) -> None:
        """Fit again on ``x`` (train and validation) with the hyper-parameters chosen."""
        ...

    def predict(self, x: Features) -> FloatArray: ...


# --- kNN ---------------------------------------------------------------------------------


class KnnEstimator:
    """Mean outcome of the ``k`` nearest training prompts, shrunk toward the prior."""

    name = "knn"

    def __init__(
        self, k: int | None = None, grid: Sequence[int] = (5, 10, 20, 40, 80, 160)
    ) -> None:
        self.k = k
        self.grid = [k] if k else list(grid)
        self.prior_weight = 2.0

    def refit(self, x: Features, y: FloatArray) -> None:
        self._x = x.embeddings.astype(np.float32)
        self._y = y.astype(np.float64)
        self._prior = y.mean(axis=0)

    def fit(self, train: Features, y: FloatArray, val: Features, y_val: FloatArray) -> None:
        self.refit(train, y)
        grid = [k for k in self.grid if k <= len(train)] or [len(train)]
        neighbours = self._neighbours(val.embeddings, max(grid))
        scores = {k: brier(self._mean(neighbours[:, :k]), y_val) for k in grid}
        self.k = min(scores, key=lambda k: scores[k])

    def _neighbours(self, x: Vectors, k: int) -> Any:
        """Indices of the ``k`` most similar training rows, most similar first."""
        out = np.empty((len(x), k), dtype=np.int64)
        for start in range(0, len(x), 1024):
            sims = x[start : start + 1024].astype(np.float32) @ self._x.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
            out[start : start + 1024] = np.take_along_axis(top, order, axis=1)
        return out

    def _mean(self, neighbours: Any) -> FloatArray:
        k = neighbours.shape[1]
        total = self._y[neighbours].sum(axis=1)
        return np.asarray((total + self.prior_weight * self._prior) / (k + self.prior_weight))

    def predict(self, x: Features) -> FloatArray:
        k = min(self.k or 1, len(self._x))
        return self._mean(self._neighbours(x.embeddings, k))


# --- logistic regression -----------------------------------------------------------------


def _fit_logreg(x: FloatArray, y: FloatArray, c: float) -> tuple[FloatArray, float]:
    """Coefficients and intercept of one soft-label logistic regression."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: PLC0415

    if np.all(y >= 1) or np.all(y <= 0):
        return np.zeros(x.shape[1]), float(logit(np.array([y.mean()]))[0])
    rows, labels, weights = soft_labels(x, y)
    model = LogisticRegression(C=c, max_iter=500).fit(rows, labels, sample_weight=weights)
    return np.asarray(model.coef_[0], dtype=np.float64), float(model.intercept_[0])


class LogRegEstimator:
    """One L2-regularised logistic regression per model; ``C`` picked on validation."""

    name = "logreg"

    def __init__(
        self, c: float | None = None, grid: Sequence[float] = (0.001, 0.003, 0.01, 0.1)
    ) -> None:
        self.grid = [c] if c else list(grid)
        self.c = self.grid[0]

    @staticmethod
    def _fitted(x: Features, y: FloatArray, c: float) -> tuple[FloatArray, FloatArray]:
        fitted = [_fit_logreg(x.combined, y[:, j], c) for j in range(y.shape[1])]
        return np.array([f[0] for f in fitted]), np.array([f[1] for f in fitted])

    def fit(self, train: Features, y: FloatArray, val: Features, y_val: FloatArray) -> None:
        best = np.inf
        for c in self.grid:
            coef, intercept = self._fitted(train, y, c)
            score = brier(sigmoid(val.combined @ coef.T + intercept), y_val)
            if score < best:
                best, self.c, self._coef, self._intercept = score, c, coef, intercept

    def refit(self, x: Features, y: FloatArray) -> None:
        self._coef, self._intercept = self._fitted(x, y, self.c)

    def predict(self, x: Features) -> FloatArray:
        return sigmoid(x.combined @ self._coef.T + self._intercept)


# --- gradient boosting -------------------------------------------------------------------


class GbmEstimator:
    """One histogram gradient-boosted classifier per model on the lexical features and the
    embedding's leading principal components (trees do poorly on 384 raw dimensions),
    early-stopped on validation."""

    name = "gbm"

    def __init__(
        self, max_iter: int = 300, learning_rate: float = 0.05, components: int = 32
    ) -> None:
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.components = components
        self._models: list[Any] = []
        self._iters: list[int] = []

    def _reduced(self, x: Features) -> FloatArray:
        return np.hstack([self._pca.transform(x.embeddings), x.lexical])

    def _model(self, iterations: int, early_stopping: bool) -> Any:
        from sklearn.ensemble import (  # type: ignore[import-untyped]  # noqa: PLC0415
            HistGradientBoostingClassifier,
        )

        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=iterations,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=early_stopping,
            n_iter_no_change=20,
            random_state=0,
        )

    def _one(self, x: FloatArray, y: FloatArray, x_val: FloatArray, y_val: FloatArray) -> Any:
        from sklearn.dummy import DummyClassifier  # type: ignore[import-untyped]  # noqa: PLC0415

        rows, labels, weights = soft_labels(x, y)
        if len(set(labels)) < 2:
            return DummyClassifier(strategy="prior").fit(rows, labels, sample_weight=weights)
        vrows, vlabels, vweights = soft_labels(x_val, y_val)
        if len(set(vlabels)) < 2:
            return self._model(self.max_iter, False).fit(rows, labels, sample_weight=weights)
        return self._model(self.max_iter, True).fit(
            rows, labels, sample_weight=weights, X_val=vrows, y_val=vlabels,
            sample_weight_val=vweights,
        )  # fmt: skip

    def fit(self, train: Features, y: FloatArray, val: Features, y_val: FloatArray) -> None:
        from sklearn.decomposition import PCA  # type: ignore[import-untyped]  # noqa: PLC0415

        components = min(self.components, len(train) - 1, train.embeddings.shape[1])
        self._pca = PCA(n_components=components, random_state=0).fit(train.embeddings)
        x, x_val = self._reduced(train), self._reduced(val)
        self._models = [self._one(x, y[:, j], x_val, y_val[:, j]) for j in range(y.shape[1])]
        self._iters = [int(getattr(model, "n_iter_", 0)) for model in self._models]

    def refit(self, x: Features, y: FloatArray) -> None:
        reduced = self._reduced(x)
        for j, iterations in enumerate(self._iters):
            rows, labels, weights = soft_labels(reduced, y[:, j])
            if iterations and len(set(labels)) == 2:
                model = self._model(iterations, False)
                self._models[j] = model.fit(rows, labels, sample_weight=weights)

    def predict(self, x: Features) -> FloatArray:
        reduced = self._reduced(x)
        columns = [self._positive(model, reduced) for model in self._models]
        return np.column_stack(columns).astype(np.float64)

    @staticmethod
    def _positive(model: Any, x: FloatArray) -> FloatArray:
        proba = model.predict_proba(x)
        classes = list(model.classes_)
        return np.asarray(proba[:, classes.index(1.0)] if 1.0 in classes else proba[:, 0] * 0)


# --- matrix factorisation ----------------------------------------------------------------


class _Adam:
    def __init__(self, shapes: Sequence[tuple[int, ...]], lr: float) -> None:
        self.lr = lr
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.zeros(s) for s in shapes]
        self.t = 0

    def step(self, params: list[FloatArray], grads: list[FloatArray]) -> None:
        self.t += 1
        for i, grad in enumerate(grads):
            self.m[i] = 0.9 * self.m[i] + 0.1 * grad
            self.v[i] = 0.999 * self.v[i] + 0.001 * grad * grad
            m_hat = self.m[i] / (1 - 0.9**self.t)
            v_hat = self.v[i] / (1 - 0.999**self.t)
            params[i] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


class MfEstimator:
    """``logit p[i, j] = u_j . (W x_i) + b_j``: one prompt projection shared by all models."""

    name = "mf"

    def __init__(
        self, rank: int = 16, l2: float = 1e-3, lr: float = 0.01, epochs: int = 600, seed: int = 0
    ) -> None:
        self.rank, self.l2, self.lr, self.epochs, self.seed = rank, l2, lr, epochs, seed

    def _init(self, d: int, m: int, prior: FloatArray) -> list[FloatArray]:
        rng = np.random.default_rng(self.seed)
        w = rng.normal(0, 1 / np.sqrt(d), (d, self.rank))
        u = rng.normal(0, 0.1, (m, self.rank))
        return [w, u, logit(prior)]

    def _logits(self, x: FloatArray, params: list[FloatArray]) -> FloatArray:
        w, u, b = params
        return np.asarray((x @ w) @ u.T + b)

    def _grads(self, x: FloatArray, y: FloatArray, params: list[FloatArray]) -> list[FloatArray]:
        w, u, _ = params
        proj = x @ w
        err = (sigmoid(proj @ u.T + params[2]) - y) / len(x)
        grad_u = err.T @ proj + 2 * self.l2 * u
        grad_w = x.T @ (err @ u) + 2 * self.l2 * w
        return [grad_w, grad_u, err.sum(axis=0)]

    @staticmethod
    def _loss(logits: FloatArray, y: FloatArray) -> float:
        p = np.clip(sigmoid(logits), _EPS, 1 - _EPS)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def fit(self, train: Features, y: FloatArray, val: Features, y_val: FloatArray) -> None:
        params = self._init(train.combined.shape[1], y.shape[1], y.mean(axis=0))
        adam = _Adam([p.shape for p in params], self.lr)
        best, self._params, self._epochs = np.inf, [p.copy() for p in params], 0
        for epoch in range(1, self.epochs + 1):
            adam.step(params, self._grads(train.combined, y, params))
            loss = self._loss(self._logits(val.combined, params), y_val)
            if loss < best - 1e-5:
                best, self._params, self._epochs = loss, [p.copy() for p in params], epoch
            elif epoch - self._epochs >= 40:
                break

    def refit(self, x: Features, y: FloatArray) -> None:
        params = self._init(x.combined.shape[1], y.shape[1], y.mean(axis=0))
        adam = _Adam([p.shape for p in params], self.lr)
        for _ in range(self._epochs):
            adam.step(params, self._grads(x.combined, y, params))
        self._params = params

    def predict(self, x: Features) -> FloatArray:
        return sigmoid(self._logits(x.combined, self._params))


ESTIMATORS = {
    "knn": KnnEstimator,
    "logreg": LogRegEstimator,
    "gbm": GbmEstimator,
    "mf": MfEstimator,
}


def make_estimator(name: str, params: dict[str, str]) -> Estimator:
    """The estimator ``name`` with its numeric params (``k``, ``c``, ``rank``) applied."""
    try:
        return _estimator(name, params)
    except ValueError as exc:
        raise PolicyError(f"estimator {name}: bad number in parameters ({exc})") from None


def _estimator(name: str, params: dict[str, str]) -> Estimator:
    if name == "knn":
        return KnnEstimator(k=int(params["k"]) if "k" in params else None)
    if name == "logreg":
        return LogRegEstimator(c=float(params["c"]) if "c" in params else None)
    if name == "gbm":
        return GbmEstimator()
    if name == "mf":
        return MfEstimator(rank=int(params.get("rank", 16)))
    raise PolicyError(f"unknown estimator {name!r} (known: {', '.join(ESTIMATORS)})")


# --- calibration -------------------------------------------------------------------------


class Calibrator:
    """Maps one model's raw scores to calibrated probabilities, fitted on validation.

    ``platt``: a logistic curve on the score's logit; ``isotonic``: a monotone step curve;
    ``none``: the raw score.
    """

    def __init__(self, kind: str = "platt") -> None:
        if kind not in {"platt", "isotonic", "none"}:
            raise PolicyError(f"calibration must be platt, isotonic or none, not {kind!r}")
        self.kind = kind
        self._a, self._b = 1.0, 0.0
        self._xs: FloatArray = np.array([0.0, 1.0])
        self._ys: FloatArray = np.array([0.0, 1.0])

    def fit(self, raw: FloatArray, y: FloatArray) -> Calibrator:
        if self.kind == "none" or np.all(y >= 1) or np.all(y <= 0):
            return self  # nothing to learn from: the raw score stands
        if self.kind == "platt":
            self._a, self._b = self._fit_platt(raw, y)
        else:
            self._xs, self._ys = self._fit_isotonic(raw, y)
        return self

    @staticmethod
    def _fit_platt(raw: FloatArray, y: FloatArray) -> tuple[float, float]:
        coef, intercept = _fit_logreg(logit(raw)[:, None], y, c=100.0)
        return float(coef[0]), intercept

    @staticmethod
    def _fit_isotonic(raw: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]  # noqa: PLC0415

        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return np.asarray(model.X_thresholds_), np.asarray(model.y_thresholds_)

    def apply(self, raw: FloatArray) -> FloatArray:
        if self.kind == "platt":
            return sigmoid(self._a * logit(raw) + self._b)
        if self.kind == "isotonic":
            return np.asarray(np.interp(raw, self._xs, self._ys), dtype=np.float64)
        return raw
