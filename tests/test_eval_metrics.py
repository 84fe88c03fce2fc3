"""Routing metrics on tiny hand-made matrices, every figure computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.errors import PolicyError
from tierwise.evaluation import metrics as m
from tierwise.evaluation.harness import evaluate
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.scorers import build_scorer, parse_scorer

# Four prompts, weak (model 0, $1 a call) and strong (model 1, $10 a call).
QUALITY = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
COST = np.array([[1.0, 10.0]] * 4)
# Predicted quality: the strong model always looks better; the weak one varies.
PREDICTED = np.array([[0.9, 0.95], [0.2, 0.95], [0.6, 0.95], [0.4, 0.95]])
ORDER = np.array([0, 1])


@pytest.fixture
def curve() -> m.Curve:
    return m.sweep(PREDICTED, QUALITY, COST, ORDER)


def test_route_takes_the_cheapest_model_that_clears_the_threshold() -> None:
    predicted = np.array([[0.2, 0.7, 0.9], [0.8, 0.1, 0.3], [0.1, 0.4, 0.3]])
    order = np.array([2, 0, 1])  # model 2 is cheapest, then 0, then 1
    assert m.route(predicted, order, 0.5).tolist() == [2, 0, 1]
    # nobody clears 0.95: each prompt goes to its highest-predicted model
    assert m.route(predicted, order, 0.95).tolist() == [2, 0, 1]
    assert m.route(predicted, order, 0.0).tolist() == [2, 2, 2]


def test_cost_order_is_by_mean_cost() -> None:
    cost = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    assert m.cost_order(cost).tolist() == [1, 2, 0]


def test_sweep_visits_every_decision_change(curve: m.Curve) -> None:
    assert curve.thresholds.tolist() == [0.2, 0.4, 0.6, 0.9, 0.95]
    assert curve.quality.tolist() == [0.5, 0.75, 0.5, 0.75, 0.75]
    assert curve.cost.tolist() == [4.0, 13.0, 22.0, 31.0, 40.0]
    assert curve.shares[:, 1].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert np.allclose(curve.shares.sum(axis=1), 1.0)


def test_apgr_and_cpt_as_routellm_defines_them(curve: m.Curve) -> None:
    share, q = curve.shares[:, 1], curve.quality
    # PGR at each point: 0, 1, 0, 1, 1; trapezoids of width 0.25
    assert m.apgr(share, q, 0.5, 0.75) == pytest.approx(0.625)
    assert m.cpt(share, q, 0.5, 0.75, 0.5) == pytest.approx(0.125)
    assert m.cpt(share, q, 0.5, 0.75, 0.8) == pytest.approx(0.2)
    assert m.cpt(share, q, 0.5, 0.75, 0.95) == pytest.approx(0.2375)
    assert m.cpt(share, q, 0.5, 0.75, 1.2) is None


def test_random_router_recovers_the_gap_linearly() -> None:
    mix = m.random_mix(QUALITY, COST, weak=0, strong=1, steps=11)
    share = mix.shares[:, 1]
    assert m.apgr(share, mix.quality, 0.5, 0.75) == pytest.approx(0.5)
    for level in (0.5, 0.8, 0.95):
        assert m.cpt(share, mix.quality, 0.5, 0.75, level) == pytest.approx(level)
    assert mix.cost[0] == 4.0 and mix.cost[-1] == 40.0


def test_aiq_as_routerbench_defines_it(curve: m.Curve) -> None:
    # hull (4, .5) -> (13, .75), flat after: (.5 + .75) / 2 * 9 + .75 * 27 over 36
    assert m.aiq(curve.cost, curve.quality, 4.0, 40.0) == pytest.approx(25.875 / 36)
    cost, quality = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 0.6, 0.9, 0.8])
    assert m.aiq(cost, quality, 0.0, 3.0) == pytest.approx(2.3 / 3)
    # the range below the router's cheapest point counts as quality 0
    assert m.aiq(cost + 1.0, quality, 0.0, 4.0) == pytest.approx(2.3 / 4)
    assert m.aiq(cost, quality, 1.0, 1.0) is None


def test_nondecreasing_hull_drops_points_under_it_and_after_the_peak() -> None:
    xs, ys = m.nondecreasing_hull(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 0.6, 0.9, 0.8]))
    assert xs.tolist() == [0.0, 2.0] and ys.tolist() == [0.5, 0.9]


def test_savings_at_95_percent_of_the_strongest(curve: m.Curve) -> None:
    found = m.savings_at(curve, 0.95 * 0.75, strongest_cost=40.0, strong=1)
    assert found is not None
    assert (found.index, found.cost_usd, found.saved_usd) == (1, 13.0, 27.0)
    assert found.saved_fraction == pytest.approx(0.675)
    assert found.strong_share == 0.25
    assert m.savings_at(curve, 0.9, strongest_cost=40.0, strong=1) is None


def test_oracle_takes_the_cheapest_correct_model_or_the_cheapest() -> None:
    quality = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    cost = np.array([[2.0, 1.0, 5.0], [1.0, 9.0, 3.0], [4.0, 6.0, 3.0]])
    assert m.oracle_choice(quality, cost).tolist() == [1, 2, 2]
    q, c, shares = m.outcome(m.oracle_choice(QUALITY, COST), QUALITY, COST)
    assert (q, c, shares.tolist()) == (1.0, 22.0, [0.5, 0.5])


def test_failure_shapes_count_cheap_wrong_where_stronger_was_right() -> None:
    choice = m.route(PREDICTED, ORDER, 0.4)
    assert choice.tolist() == [0, 1, 0, 0]
    strength = QUALITY.mean(axis=0)  # weak 0.5, strong 0.75
    shapes = m.failure_shapes(choice, QUALITY, strength, ["a", "a", "b", "b"])
    assert [(s.category, s.confidently_wrong, s.prompts) for s in shapes] == [
        ("b", 1, 2),
        ("a", 0, 2),
    ]
    assert shapes[0].rate == 0.5


def test_thresholds_are_thinned_by_quantile_but_keep_both_ends() -> None:
    rng = np.random.default_rng(0)
    predicted = rng.random((500, 3))
    order = np.array([0, 1, 2])
    thresholds = m.thresholds_of(predicted, order, max_points=50)
    assert len(thresholds) <= 51
    assert thresholds[0] == predicted[:, 0].min()
    assert thresholds[-1] == predicted.max()
    first = m.outcome(m.route(predicted, order, thresholds[0]), predicted, predicted)
    assert first[2].tolist() == [1.0, 0.0, 0.0]  # lowest threshold: all on the cheapest


def test_two_model_curve_spans_weak_only_to_strong_only_like_routellm() -> None:
    rng = np.random.default_rng(1)
    win = rng.random(200)  # a router's P(strong wins)
    predicted = np.column_stack([1 - win, np.ones(200)])  # weak good enough = 1 - P(win)
    quality = rng.integers(0, 2, (200, 2)).astype(float)
    curve = m.sweep(predicted, quality, np.ones((200, 2)), ORDER)
    share = curve.shares[:, 1]
    assert share[0] == 0.0 and share[-1] == 1.0
    assert np.all(np.diff(share) >= 0)
    # each point sends to the strong model exactly the prompts with P(win) > 1 - t
    for t, s in zip(curve.thresholds, share, strict=True):
        assert s == pytest.approx(np.mean(1 - win < t))


def _matrix(n: int = 40) -> OutcomeMatrix:
    rng = np.random.default_rng(3)
    quality = rng.integers(0, 2, (n, 2)).astype(float)
    quality[:, 1] = np.maximum(quality[:, 1], rng.integers(0, 2, n))  # the dear one is better
    return OutcomeMatrix(
        name="hand-made",
        ids=[f"p{i}" for i in range(n)],
        prompts=[f"question {i} about {'maths' if i % 2 else 'history'}" for i in range(n)],
        models=["cheap", "dear"],
        quality=quality,
        cost=np.tile([0.001, 0.02], (n, 1)),
        categories=["maths" if i % 2 else "history" for i in range(n)],
    )


def test_harness_constant_router_is_the_random_line_and_oracle_is_best() -> None:
    steps: list[tuple[int, int, str]] = []
    report = evaluate(_matrix(), ["constant"], seeds=[0, 1], progress=lambda *a: steps.append(a))
    assert steps == [(1, 2, "seed 0: constant"), (2, 2, "seed 1: constant")]
    by_name = {r.name: r for r in report.results}
    constant, oracle = by_name["constant"], by_name["oracle"]
    assert constant.apgr is not None and constant.apgr.mean == pytest.approx(0.5)
    assert constant.cpt["50"] is not None and constant.cpt["50"].mean == pytest.approx(0.5)
    assert oracle.quality.mean >= by_name["dear"].quality.mean
    # its operating point sends everything to the strongest: nothing confidently wrong
    shapes = report.failures["constant"]
    assert {s.category for s in shapes} == {"maths", "history"}
    assert sum(s.prompts for s in shapes) == 16 and not any(s.confidently_wrong for s in shapes)
    assert report.test_prompts == 8


def test_unknown_scorer_or_parameter_fails_before_any_work() -> None:
    with pytest.raises(PolicyError, match="unknown scorer 'magic'"):
        evaluate(_matrix(), ["constant", "magic"])
    with pytest.raises(PolicyError, match="unknown parameter 'depth'"):
        evaluate(_matrix(), ["tfidf?depth=3"])
    assert parse_scorer("tfidf?C=0.5&ngrams=1") == ("tfidf", {"C": "0.5", "ngrams": "1"})


def test_tfidf_learns_soft_labels_per_model() -> None:
    matrix = _matrix(60)
    matrix.quality[:, 0] = [0.9 if "maths" in p else 0.1 for p in matrix.prompts]
    train, validation, test = matrix.splits(0)
    scorer = build_scorer("tfidf")
    scorer.fit(train, validation)
    predicted = scorer.predict(test)
    assert predicted.shape == (len(test), 2)
    maths = np.array(["maths" in p for p in test.prompts])
    # the cheap model's pass fraction depends on the topic word; the scorer picks it up
    assert predicted[maths, 0].mean() > 0.6 > 0.4 > predicted[~maths, 0].mean()


def test_harness_gives_routers_mean_costs_from_train_and_validation_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lambda rule's cost penalty must not be learned from the test rows it is measured
    on: make the test rows' costs absurd and check what the router is handed."""
    from tierwise.evaluation import harness, scorers  # noqa: PLC0415

    matrix = _matrix()
    test_ids = set(matrix.splits(0)[2].ids)
    for i, prompt_id in enumerate(matrix.ids):
        if prompt_id in test_ids:
            matrix.cost[i] = [5.0, 0.0001]  # cheap and dear swapped, and huge
    seen: list[np.ndarray] = []
    real = scorers.build_router

    def spying(spec: str) -> scorers.CurveRouter:
        router = real(spec)
        curves = router.curves

        def record(test: OutcomeMatrix, mean_cost: np.ndarray, max_points: int) -> list:  # type: ignore[type-arg]
            seen.append(mean_cost.copy())
            return curves(test, mean_cost, max_points)

        router.curves = record  # type: ignore[method-assign]
        return router

    monkeypatch.setattr(harness, "build_router", spying)
    evaluate(matrix, ["constant"], seeds=[0])
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [0.001, 0.02])
