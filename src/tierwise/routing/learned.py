"""The learned router: predicted success per model from the prompt, calibrated on the
user's own outcomes.

A :class:`QualityPredictor` embeds the prompt, adds lexical features, runs one of the
estimators in :mod:`tierwise.routing.estimators` (``knn``, ``logreg``, ``gbm``, ``mf``) and
calibrates each model's probability on the validation split. :class:`LearnedScorer` exposes
it to the evaluation harness; :class:`LearnedRouter` decides with it: the cheapest candidate
whose predicted success clears the target (else the one predicted best), or, with
``lambda``, the candidate maximising ``quality - lambda * cost`` (``- mu * latency`` when
the request prefers speed); ``dollar`` is the same with the request's own cost relative to
the calibration's typical call, so long prompts lean cheap. With per-category rates
(:mod:`tierwise.routing.priors`) the request's ``metadata["category"]`` is read too.
``build`` loads a calibrated artifact by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tierwise.catalog import ModelSpec
from tierwise.config import user_cache_dir
from tierwise.cost import price_tokens
from tierwise.errors import PolicyError
from tierwise.evaluation.matrix import FloatArray, OutcomeMatrix
from tierwise.messages import Request
from tierwise.routing.artifact import load_artifact
from tierwise.routing.base import CandidateScore, Decision, RouteContext, expected_tokens
from tierwise.routing.costmodel import CostModel
from tierwise.routing.decide import RuleKind, choose_by_lambda, choose_by_target, relative
from tierwise.routing.embeddings import CachedEmbedder, Embedder, Progress, make_embedder
from tierwise.routing.estimators import Calibrator, Estimator, make_estimator
from tierwise.routing.features import FeatureBuilder, Features
from tierwise.routing.priors import CategoryBlend
from tierwise.routing.registry import RouterEnv

DEFAULT_MU = 0.05
"""Quality given up per second of typical latency when a request prefers speed."""


def embeddings_cache_dir(cache_dir: Path | None = None) -> Path:
    return (cache_dir or user_cache_dir()) / "embeddings"


class QualityPredictor:
    """Prompt text -> calibrated probability that each model succeeds."""

    def __init__(
        self,
        models: Sequence[str],
        estimator: Estimator,
        embedder: Embedder,
        calibration: str,
        refit: bool = True,
    ) -> None:
        self.models = list(models)
        self.refit = refit
        self.estimator = estimator
        self.features = FeatureBuilder(embedder)
        self.calibration = calibration
        self.calibrators = [Calibrator(calibration) for _ in self.models]
        self.by_category: CategoryBlend | None = None
        self.cost_model: CostModel | None = None
        """Set by calibration: the ``dollar`` rule's reference cost."""

    @property
    def embedder(self) -> Embedder:
        return self.features.embedder

    def fit(
        self,
        train: OutcomeMatrix,
        validation: OutcomeMatrix,
        progress: Progress | None = None,
        *,
        categories: bool = False,
    ) -> FloatArray:
        """Fit the features and estimator on ``train``; tune and calibrate on ``validation``;
        then (``refit``) fit the estimator again on both with the settings chosen.
        ``categories``: blend in per-category success rates (:mod:`tierwise.routing.priors`).

        Returns the calibrated validation predictions of the train-only fit (out of sample:
        what thresholds should be picked on)."""
        y, y_val = _targets(train), _targets(validation)
        x = self.features.fit(train.prompts, progress)
        x_val = self.features.transform(validation.prompts, progress)
        self.estimator.fit(x, y, x_val, y_val)
        raw = self.estimator.predict(x_val)
        self.calibrators = [
            Calibrator(self.calibration).fit(raw[:, j], y_val[:, j]) for j in range(y.shape[1])
        ]
        held_out = self._calibrated(raw)
        if categories:
            self.by_category = CategoryBlend()
            held_out = self.by_category.fit(
                (train.categories, y), (validation.categories, y_val), held_out
            )
        if self.refit:
            self.estimator.refit(Features.concat([x, x_val]), np.vstack([y, y_val]))
        return held_out

    def _calibrated(self, raw: FloatArray) -> FloatArray:
        columns = [cal.apply(raw[:, j]) for j, cal in enumerate(self.calibrators)]
        return np.clip(np.column_stack(columns), 0.0, 1.0)

    def predict(
        self,
        texts: Sequence[str],
        progress: Progress | None = None,
        categories: Sequence[str | None] | None = None,
    ) -> FloatArray:
        """Success probabilities; ``categories`` (one per text, ``None`` unknown) are used
        when the predictor was fitted with them."""
        x = self.features.transform(texts, progress)
        predicted = self._calibrated(self.estimator.predict(x))
        blend: CategoryBlend | None = getattr(self, "by_category", None)  # older artifacts
        return (
            predicted if blend is None or categories is None else blend.apply(predicted, categories)
        )

    def embedding_ready(self, text: str) -> bool:
        """``text`` needs no slow work to predict: its embedding is in memory, or the embedder
        keeps none (the hashing one is fast)."""
        embedder = self.embedder
        return not isinstance(embedder, CachedEmbedder) or embedder.remembers(text)

    def warm(self, text: str) -> None:
        """Embed ``text`` into the embedder's memory (slow: call it off the event loop)."""
        self.embedder.embed([text])

    def use_cache_dir(self, cache_dir: Path | None) -> None:
        """Point the embedding cache at ``cache_dir`` (a loaded artifact has none)."""
        if isinstance(self.embedder, CachedEmbedder):
            self.embedder.attach(cache_dir)


def _targets(matrix: OutcomeMatrix) -> FloatArray:
    return np.clip(np.nan_to_num(matrix.quality, nan=0.0), 0.0, 1.0)


def make_predictor(
    models: Sequence[str],
    *,
    estimator: str = "knn",
    embedder: str = "auto",
    calibration: str = "platt",
    cache_dir: Path | None = None,
    params: Mapping[str, str] | None = None,
) -> QualityPredictor:
    """A fresh predictor; ``cache_dir`` is the embedding cache (default: the user cache)."""
    return QualityPredictor(
        models,
        make_estimator(estimator, dict(params or {})),
        make_embedder(embedder, embeddings_cache_dir(cache_dir)),
        calibration,
    )


# --- evaluation -----------------------------------------------------------------------------


SCORER_PARAMS = frozenset(
    {"estimator", "embedder", "calibration", "cache_dir", "refit", "k", "c", "rank", "category"}
)
ROUTER_PARAMS = frozenset({"artifact", "version", "target", "lambda", "mu"})


def _check_params(what: str, params: Mapping[str, str], known: frozenset[str]) -> None:
    if unknown := sorted(set(params) - known):
        raise PolicyError(
            f"{what}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )


class LearnedScorer:
    """The :class:`~tierwise.evaluation.scorers.Scorer` view of a :class:`QualityPredictor`."""

    def __init__(self, params: Mapping[str, str]) -> None:
        _check_params("scorer learned", params, SCORER_PARAMS)
        self.params = dict(params)
        self.estimator = self.params.get("estimator", "logreg")
        self.name = f"learned-{self.estimator}"
        self._predictor(["model"])  # bad parameters fail now, before any work
        self.predictor: QualityPredictor | None = None

    def _predictor(self, models: Sequence[str]) -> QualityPredictor:
        cache = self.params.get("cache_dir")
        predictor = make_predictor(
            models,
            estimator=self.estimator,
            embedder=self.params.get("embedder", "auto"),
            calibration=self.params.get("calibration", "platt"),
            cache_dir=Path(cache) if cache else None,
            params=self.params,
        )
        predictor.refit = self.params.get("refit", "1") not in {"0", "false", "no"}
        return predictor

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None:
        self.predictor = self._predictor(train.models)
        by_category = self.params.get("category", "0") not in {"0", "false", "no"}
        self.predictor.fit(train, validation, categories=by_category)

    def predict(self, matrix: OutcomeMatrix) -> FloatArray:
        if self.predictor is None:
            raise PolicyError(f"scorer {self.name} was asked to predict before fit")
        return self.predictor.predict(matrix.prompts, categories=matrix.categories)


def build_scorer(params: Mapping[str, str]) -> LearnedScorer:
    """``learned?estimator=knn|logreg|gbm|mf&embedder=auto|minilm|hashing&calibration=
    platt|isotonic|none&refit=1|0&category=0|1`` (plus ``k``, ``c`` or ``rank`` to skip a
    search). ``category=1`` blends in per-category success rates: the dataset's category
    (MMLU subject, RouterBench benchmark) stands for request metadata known at request time."""
    return LearnedScorer(params)


# --- routing ----------------------------------------------------------------------------------


class Rule(BaseModel):
    kind: RuleKind
    threshold: float
    """The target success probability, or lambda (success probability per unit of cost
    relative to the dearest candidate)."""
    mu: float | None = None
    """Quality per second of latency; ``None``: only when the request prefers speed."""


class _Candidate(BaseModel):
    spec: ModelSpec
    quality: float
    cost: Decimal | None
    latency_s: float | None


def _short(spec: ModelSpec) -> str:
    return spec.name.rpartition("/")[2]


class LearnedRouter:
    """Decides with a :class:`QualityPredictor`; never calls a model."""

    name = "learned"

    def __init__(self, predictor: QualityPredictor, rule: Rule, label: str = "") -> None:
        self.predictor = predictor
        self.rule = rule
        self.label = label
        self._column = {model: j for j, model in enumerate(predictor.models)}

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        known = self._known(candidates, context)
        scored = self._score(request, known)
        chosen, reason = self._sticky(scored, context) or self._decide(scored, context.prefer_speed)
        return Decision(
            router=self.name,
            chosen=chosen.spec.id,
            scores=self._scores(candidates, scored),
            threshold=self.rule.threshold,
            reason=reason,
            signals={"artifact": self.label, "rule": self.rule.kind},
        )

    def ready(self, request: Request) -> bool:
        return self.predictor.embedding_ready(request.prompt_text())

    def prepare(self, request: Request) -> None:
        self.predictor.warm(request.prompt_text())

    def _known(self, candidates: Sequence[ModelSpec], context: RouteContext) -> list[ModelSpec]:
        known = [spec for spec in candidates if self._index(spec, context) is not None]
        if not known:
            names = ", ".join(spec.id for spec in candidates) or "none"
            raise PolicyError(
                f"learned router {self.label} was trained on {', '.join(self.predictor.models)}"
                f" and knows none of the candidates ({names})"
            )
        return known

    def _index(self, spec: ModelSpec, context: RouteContext) -> int | None:
        if spec.id in self._column:
            return self._column[spec.id]
        for model, j in self._column.items():
            found = context.catalog.find(model)
            if found is not None and found.id == spec.id:
                self._column[spec.id] = j
                return j
        return None

    def _score(self, request: Request, known: Sequence[ModelSpec]) -> list[_Candidate]:
        category = request.metadata.get("category")
        categories = [category if isinstance(category, str) else None]
        probs = self.predictor.predict([request.prompt_text()], categories=categories)[0]
        tokens = expected_tokens(request)
        out = []
        for spec in known:
            cost = price_tokens(tokens, spec.prices)
            latency = spec.typical_latency_ms
            out.append(
                _Candidate(
                    spec=spec,
                    quality=float(probs[self._column[spec.id]]),
                    cost=None if cost is None else cost.total,
                    latency_s=None if latency is None else latency / 1000,
                )
            )
        return out

    @staticmethod
    def _scores(candidates: Sequence[ModelSpec], scored: list[_Candidate]) -> list[CandidateScore]:
        by_id = {c.spec.id: c for c in scored}
        rows = []
        for spec in candidates:
            found = by_id.get(spec.id)
            rows.append(
                CandidateScore(
                    model=spec.id,
                    predicted_quality=None if found is None else round(found.quality, 4),
                    predicted_cost=None if found is None else found.cost,
                    predicted_latency_ms=spec.typical_latency_ms,
                )
            )
        return rows

    def _sticky(
        self, scored: list[_Candidate], context: RouteContext
    ) -> tuple[_Candidate, str] | None:
        """Stay on the conversation's model while it still clears the target (its prompt
        cache is warm); target rule only."""
        if self.rule.kind != "target" or context.sticky_model is None:
            return None
        for c in scored:
            if c.spec.id == context.sticky_model and c.quality >= self.rule.threshold:
                return c, (
                    f"conversation runs on {_short(c.spec)}, predicted success {c.quality:.2f}"
                    f" >= {self.rule.threshold:.2f}: stays there (warm prompt cache)"
                )
        return None

    def _decide(self, scored: list[_Candidate], prefer_speed: bool) -> tuple[_Candidate, str]:
        if self.rule.kind == "target":
            return self._by_target(scored, prefer_speed)
        return self._by_lambda(scored, prefer_speed)

    def _by_target(self, scored: list[_Candidate], prefer_speed: bool) -> tuple[_Candidate, str]:
        """Cheapest (or, preferring speed, fastest) candidate that clears the target."""

        def order(c: _Candidate) -> tuple[float, float]:
            cost = float("inf") if c.cost is None else float(c.cost)
            latency = float("inf") if c.latency_s is None else c.latency_s
            return (latency, cost) if prefer_speed else (cost, latency)

        ranked = sorted(scored, key=order)
        pred = np.array([[c.quality for c in ranked]])
        chosen = ranked[int(choose_by_target(pred, np.arange(len(ranked)), self.rule.threshold)[0])]
        target = self.rule.threshold
        steps = []
        for c in ranked:
            clears = c.quality >= target
            steps.append(
                f"{_short(c.spec)} {c.quality:.2f} >= {target:.2f}? {'yes' if clears else 'no'}"
            )
            if clears:
                break
        which = "fastest" if prefer_speed else "cheapest"
        outcome = (
            f"{which} that clears the target"
            if chosen.quality >= target
            else "none clears the target: best predicted"
        )
        return chosen, f"predicted success {'; '.join(steps)} -> {_short(chosen.spec)} ({outcome})"

    def _relative(self, dollars: FloatArray) -> tuple[FloatArray, str]:
        """Costs relative to the dearest candidate's (``lambda``) or, rule ``dollar``, to the
        dearest model's mean cost per call in calibration: a long prompt costs more."""
        model: CostModel | None = getattr(self.predictor, "cost_model", None)  # older artifacts
        if self.rule.kind == "dollar" and model is not None:
            return dollars / model.reference, "cost/typical call"
        return relative(dollars), "relative cost"

    def _by_lambda(self, scored: list[_Candidate], prefer_speed: bool) -> tuple[_Candidate, str]:
        """The candidate maximising quality - lambda * relative cost (- mu * latency)."""
        lam = self.rule.threshold
        mu = self.rule.mu if self.rule.mu is not None else (DEFAULT_MU if prefer_speed else 0.0)
        dollars = np.array([np.inf if c.cost is None else float(c.cost) for c in scored])
        cost, what = self._relative(dollars)
        if lam == 0 or np.isinf(cost).all():  # cost does not count, or nothing is priced
            cost = np.zeros(len(scored))
        latency = np.array([c.latency_s or 0.0 for c in scored])
        penalty = lam * cost + mu * latency
        quality = np.array([[c.quality for c in scored]])
        chosen = scored[int(choose_by_lambda(quality, penalty, 1.0)[0])]
        terms = ", ".join(
            f"{_short(c.spec)} {c.quality:.2f}-{p:.3f}"
            for c, p in zip(scored, penalty, strict=True)
        )
        speed = f" - mu*latency_s (mu={mu:g})" if mu else ""
        return chosen, (
            f"maximise predicted success - lambda*{what}{speed} (lambda={lam:g}): "
            f"{terms} -> {_short(chosen.spec)}"
        )


def _number(params: Mapping[str, str], key: str, low: float, high: float) -> float | None:
    if key not in params:
        return None
    try:
        value = float(params[key])
    except ValueError:
        raise PolicyError(f"learned router: {key}={params[key]!r} is not a number") from None
    if not low <= value <= high:
        raise PolicyError(f"learned router: {key} must be between {low:g} and {high:g}")
    return value


def _rule(params: Mapping[str, str], kind: RuleKind, threshold: float) -> Rule:
    """The artifact's rule, unless the policy overrides it with target= or lambda=."""
    mu = _number(params, "mu", 0.0, 1e6)
    target = _number(params, "target", 0.0, 1.0)
    lam = _number(params, "lambda", 0.0, 1e6)
    if target is not None and lam is not None:
        raise PolicyError("learned router: give target= or lambda=, not both")
    if target is not None:
        return Rule(kind="target", threshold=target, mu=mu)
    if lam is not None:
        return Rule(kind="lambda", threshold=lam, mu=mu)
    return Rule(kind=kind, threshold=threshold, mu=mu)


def build(params: Mapping[str, str], env: RouterEnv) -> LearnedRouter:
    """``learned?artifact=NAME[&version=N][&target=0.9 | &lambda=0.2][&mu=0.05]``"""
    _check_params("router learned", params, ROUTER_PARAMS)
    name = params.get("artifact")
    if not name:
        raise PolicyError("router 'learned' needs artifact=NAME (`tierwise routers` lists them)")
    version = params.get("version")
    if version is not None and not version.isdigit():
        raise PolicyError(f"learned router: version must be a number, not {version!r}")
    rule = _rule(params, "target", 0.0)  # bad numbers fail before the artifact is read
    artifact = load_artifact(
        env.artifacts_dir, name, QualityPredictor, int(version) if version else None
    )
    predictor: QualityPredictor = artifact.payload
    predictor.use_cache_dir(embeddings_cache_dir(env.settings.cache_dir))
    meta = artifact.meta
    if "target" not in params and "lambda" not in params:
        rule = Rule(kind=meta.rule, threshold=meta.threshold, mu=rule.mu)
    return LearnedRouter(predictor, rule, meta.label)
