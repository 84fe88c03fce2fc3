"""Cascades on recorded outcomes: try the cheap model, gate its answer, escalate on failure.

For each test prompt the cheap model's recorded response is judged by the deterministic
gates of :mod:`tierwise.evaluation.gates`; ``G`` is the product of the chosen gates' scores
(1 when every gate passes fully). The answer is accepted when its acceptance score clears
the threshold, else the prompt escalates to the strong model (its recorded outcome).

* ``cascade``: the score is ``G``; every prompt tries the cheap model first.
* ``cascade+learned`` / ``cascade+tfidf``: a scorer predicts each model's success ``p`` from
  the prompt, and the score is ``G * p_cheap - p_strong`` — the cheap answer's predicted
  success, discounted by its gates, against the strong model's. A prompt whose
  ``p_cheap - p_strong`` (the best score any gate verdict could give) is below the threshold
  goes straight to the strong model: the cheap call would be wasted, so it is not made.
  With ``gates=none`` this is the scorer's ``lambda`` rule, the baseline the gates add to.

Cost: every cheap call made is paid, accepted or not; an escalated prompt pays the strong
call too. Quality: the accepted cheap answer's recorded correctness, else the strong
model's. Sweeping the threshold gives the cost-quality curve; the cheap model is the one
with the lowest mean cost, the strong one the best on train and validation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierwise.errors import PolicyError
from tierwise.evaluation import metrics as m
from tierwise.evaluation.gates import GATES, verdicts
from tierwise.evaluation.matrix import FloatArray, IndexArray, OutcomeMatrix
from tierwise.evaluation.scorers import RouterCurve, Scorer, build_scorer, predictions

CASCADE_PARAMS = frozenset({"gates"})
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Ladder:
    """The two tiers of a cascade, as model columns of the matrix."""

    cheap: int
    strong: int


@dataclass(frozen=True)
class Gated:
    """What the cascade knows of each test prompt before choosing a threshold."""

    score: FloatArray
    """The acceptance score of the cheap answer."""
    ceiling: FloatArray
    """The highest score any gate verdict could give (below the threshold: skip the cheap
    call)."""


def gate_scores(responses: Sequence[str | None], gates: Sequence[str]) -> FloatArray:
    """Per response, the product of the named gates' scores (1.0 with no gates)."""
    if not gates:
        return np.ones(len(responses))
    return np.array([float(np.prod([v.score for v in verdicts(r, gates)])) for r in responses])


def accepted(gated: Gated, threshold: float) -> tuple[BoolArray, BoolArray]:
    """(cheap answer accepted, cheap model called) per prompt at ``threshold``."""
    return gated.score >= threshold, gated.ceiling >= threshold


def answered_by(gated: Gated, ladder: Ladder, threshold: float) -> IndexArray:
    """Per prompt, the model whose answer the cascade ends with."""
    accept, _ = accepted(gated, threshold)
    return np.where(accept, ladder.cheap, ladder.strong).astype(np.int64)


def outcome(
    gated: Gated, ladder: Ladder, quality: FloatArray, cost: FloatArray, threshold: float
) -> tuple[float, float, FloatArray]:
    """(mean quality, total cost, share of prompts calling each model) at ``threshold``."""
    accept, tried = accepted(gated, threshold)
    rows = np.arange(len(quality))
    final = np.where(accept, ladder.cheap, ladder.strong)
    spent = cost[:, ladder.cheap] * tried + cost[:, ladder.strong] * ~accept
    shares = np.zeros(quality.shape[1])
    shares[ladder.cheap] = tried.mean()
    shares[ladder.strong] += (~accept).mean()
    return float(quality[rows, final].mean()), float(spent.sum()), shares


def thresholds(gated: Gated, max_points: int = 400) -> FloatArray:
    """Every score at which an acceptance changes, lowest (accept every cheap answer) first
    (at most ``max_points``, by quantile), then infinity: every prompt on the strong model."""
    values = np.unique(gated.score)
    if len(values) > max_points:
        values = np.unique(np.quantile(values, np.linspace(0.0, 1.0, max_points)))
    return np.append(values, np.inf)


def sweep(
    gated: Gated, ladder: Ladder, quality: FloatArray, cost: FloatArray, max_points: int = 400
) -> m.Curve:
    """The cascade's cost-quality curve, from accepting every cheap answer to none."""
    points = thresholds(gated, max_points)
    measured = [outcome(gated, ladder, quality, cost, float(t)) for t in points]
    return m.Curve(
        thresholds=points,
        quality=np.array([p[0] for p in measured]),
        cost=np.array([p[1] for p in measured]),
        shares=np.vstack([p[2] for p in measured]),
    )


class Cascade:
    """Cheap model, deterministic gates, strong model — optionally after a scorer."""

    def __init__(self, gates: Sequence[str], scorer: Scorer | None, name: str) -> None:
        self.gates = list(gates)
        self.scorer = scorer
        self.name = name
        self.ladder: Ladder | None = None
        self._parts: tuple[OutcomeMatrix, OutcomeMatrix] | None = None

    def fit(self, train: OutcomeMatrix, validation: OutcomeMatrix) -> None:
        if len(train.models) < 2:
            raise PolicyError(f"{self.name}: a cascade needs two models, {train.name} has one")
        seen = np.vstack([train.quality, validation.quality]).mean(axis=0)
        cost = np.vstack([train.cost, validation.cost]).mean(axis=0)
        self.ladder = Ladder(cheap=int(np.argmin(cost)), strong=int(np.argmax(seen)))
        if self.ladder.cheap == self.ladder.strong:
            raise PolicyError(f"{self.name}: the cheapest model of {train.name} is also its best")
        self._parts = (train, validation)

    def gated(self, test: OutcomeMatrix) -> Gated:
        """Gate scores of the cheap model's recorded responses (and the scorer's view)."""
        ladder, parts = self._fitted()
        if test.responses is None:
            raise PolicyError(
                f"{self.name}: {test.name} has no recorded responses to gate "
                "(a cascade needs the cheap model's answers, e.g. routellm-gsm8k)"
            )
        gate = gate_scores([row[ladder.cheap] for row in test.responses], self.gates)
        if self.scorer is None:
            return Gated(score=gate, ceiling=np.ones(len(test)))
        predicted = predictions(self.scorer, *parts, test)
        cheap, strong = predicted[:, ladder.cheap], predicted[:, ladder.strong]
        return Gated(score=gate * cheap - strong, ceiling=cheap - strong)

    def curves(
        self, test: OutcomeMatrix, mean_cost: FloatArray, max_points: int
    ) -> list[RouterCurve]:
        ladder, _ = self._fitted()
        gated = self.gated(test)
        curve = sweep(gated, ladder, test.quality, test.cost, max_points)
        return [
            RouterCurve("", curve, lambda i: answered_by(gated, ladder, float(curve.thresholds[i])))
        ]

    def _fitted(self) -> tuple[Ladder, tuple[OutcomeMatrix, OutcomeMatrix]]:
        if self.ladder is None or self._parts is None:
            raise PolicyError(f"{self.name} was asked for curves before fit")
        return self.ladder, self._parts


def parse_gates(text: str | None) -> list[str]:
    """``"answer+arithmetic"`` -> the gates in order; ``None``: all; ``"none"``: no gate."""
    if text is None:
        return list(GATES)
    names = [name.strip() for name in text.split("+") if name.strip()]
    if names == ["none"]:
        return []
    if unknown := [name for name in names if name not in GATES]:
        raise PolicyError(
            f"cascade: unknown gate {unknown[0]!r} (known: {', '.join(GATES)}, or none)"
        )
    return names


def _split(params: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    rest = {k: v for k, v in params.items() if k not in CASCADE_PARAMS}
    return parse_gates(params.get("gates")), rest


def build_cascade(params: Mapping[str, str]) -> Cascade:
    """``cascade[?gates=answer+arithmetic+consistency|none]``."""
    gates, rest = _split(params)
    if rest:
        raise PolicyError(f"cascade: unknown parameter {sorted(rest)[0]!r} (known: gates)")
    return Cascade(gates, None, "cascade")


def build_tfidf_cascade(params: Mapping[str, str]) -> Cascade:
    """``cascade+tfidf[?gates=...]`` (and the ``tfidf`` scorer's parameters)."""
    gates, rest = _split(params)
    return Cascade(gates, build_scorer(_spec("tfidf", rest)), "cascade+tfidf")


def build_learned_cascade(params: Mapping[str, str]) -> Cascade:
    """``cascade+learned[?gates=...]`` (and the ``learned`` scorer's parameters)."""
    gates, rest = _split(params)
    return Cascade(gates, build_scorer(_spec("learned", rest)), "cascade+learned")


def _spec(name: str, params: Mapping[str, str]) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{name}?{query}" if query else name
