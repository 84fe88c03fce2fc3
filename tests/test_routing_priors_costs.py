"""Per-prompt dollar costs and per-category priors for the learned routers: the cost model,
the ``@dollar`` curve, the category blend, and both on a slice of the shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tierwise.catalog import Catalog
from tierwise.evaluation import metrics as m
from tierwise.evaluation.harness import evaluate
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.scorers import build_scorer
from tierwise.messages import Request
from tierwise.routing.artifact import load_artifact
from tierwise.routing.base import RouteContext
from tierwise.routing.calibrate import Objective, calibrate
from tierwise.routing.costmodel import CostModel, prompt_tokens
from tierwise.routing.estimators import brier
from tierwise.routing.learned import LearnedRouter, LearnedScorer, QualityPredictor, Rule
from tierwise.routing.priors import CategoryBlend, category_rates

WEAK = "together:mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "openai:gpt-4-1106-preview"
NOWHERE = Path("/nonexistent-cache")


def test_cost_model_recovers_price_per_token_and_a_fixed_answer_cost() -> None:
    prompts = ["word " * n for n in (10, 40, 160, 640)]
    tokens = prompt_tokens(prompts)
    cost = np.column_stack([1e-7 * tokens + 2e-6, 3e-6 * tokens + 5e-5])
    model = CostModel().fit(prompts, cost)
    assert model.slope == pytest.approx([1e-7, 3e-6], rel=1e-6)
    assert model.base == pytest.approx([2e-6, 5e-5], rel=1e-6)
    assert model.reference == pytest.approx(cost[:, 1].mean())
    penalty = model.penalty(["word " * 1280])
    assert penalty[0, 1] == pytest.approx((3e-6 * 1280 + 5e-5) / cost[:, 1].mean(), rel=1e-6)
    assert 0 < penalty[0, 0] < penalty[0, 1]


def test_lambda_rule_on_per_prompt_cost_sends_the_long_prompt_to_the_cheap_model() -> None:
    # both prompts gain 0.2 from the strong model; the long one costs it ten times more
    predicted = np.array([[0.6, 0.8], [0.6, 0.8]])
    penalty = np.array([[0.01, 0.1], [0.1, 1.0]])
    assert m.route_lambda(predicted, penalty, 1.0).tolist() == [1, 0]
    thresholds = m.lambda_thresholds(predicted, penalty)
    # the switching points are 0.2 / 0.9 and 0.2 / 0.09: one threshold between them
    assert thresholds[0] == 0.0 and thresholds[-1] > 0.2 / 0.09
    assert any(0.2 / 0.9 < t < 0.2 / 0.09 for t in thresholds)


def categorical(n: int = 900, seed: int = 0) -> OutcomeMatrix:
    """Prompts whose text says nothing; the category alone tells whether the cheap model
    succeeds (law: rarely, trivia: mostly)."""
    rng = np.random.default_rng(seed)
    law = rng.random(n) < 0.5
    chance = np.column_stack([np.where(law, 0.2, 0.9), np.full(n, 0.9)])
    return OutcomeMatrix(
        name="categorical",
        ids=[str(i) for i in range(n)],
        prompts=[f"question {i} {rng.integers(1_000_000)}" for i in range(n)],
        models=[WEAK, STRONG],
        quality=(rng.random((n, 2)) < chance).astype(np.float64),
        cost=np.tile([0.0001, 0.004], (n, 1)),
        categories=["law" if x else "trivia" for x in law],
    )


def test_category_rates_are_shrunk_toward_the_overall_rate() -> None:
    y = np.array([[1.0], [1.0], [0.0], [0.0], [0.0], [0.0]])
    rates = category_rates(["a", "a", "b", "b", "b", "b"], y)
    assert 1 / 3 < rates["a"][0] < 1.0 and 0.0 < rates["b"][0] < 1 / 3


def test_category_blend_learns_a_weight_and_leaves_unknown_categories_alone() -> None:
    train, validation, _ = categorical().splits(0)
    flat = np.full((len(validation), 2), 0.55)
    blend = CategoryBlend()
    blended = blend.fit(
        (train.categories, train.quality), (validation.categories, validation.quality), flat
    )
    assert blend.weight > 0
    assert brier(blended, validation.quality) < brier(flat, validation.quality)
    rows = np.full((3, 2), 0.55)
    out = blend.apply(rows, ["law", None, "unheard-of"])
    assert out[0, 0] < 0.5 and out[1:].tolist() == rows[1:].tolist()


def test_learned_scorer_with_categories_beats_the_one_without_when_text_is_silent() -> None:
    train, validation, test = categorical().splits(1)
    scores = {}
    for flag in ("0", "1"):
        scorer = build_scorer(f"learned?estimator=logreg&embedder=hashing&category={flag}")
        scorer.fit(train, validation)
        scores[flag] = brier(scorer.predict(test), test.quality)
    assert scores["1"] < scores["0"] - 0.02


def test_learned_router_reads_the_category_from_request_metadata(catalog: Catalog) -> None:
    train, validation, _ = categorical().splits(2)
    scorer = LearnedScorer({"estimator": "logreg", "embedder": "hashing", "category": "1"})
    scorer.fit(train, validation)
    assert scorer.predictor is not None
    router = LearnedRouter(scorer.predictor, Rule(kind="target", threshold=0.7), "cat@v1")
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    context = RouteContext(catalog=catalog)

    def chosen(category: str) -> str:
        request = Request.from_prompt("question 5 12345").model_copy(
            update={"metadata": {"category": category}}
        )
        return router.select(request, candidates, context).chosen

    assert (chosen("law"), chosen("trivia")) == (STRONG, WEAK)


@pytest.fixture
def routerbench_slice(shared_data: Path) -> OutcomeMatrix:
    matrix = load_matrix("routerbench", data_dir=shared_data, cache_dir=NOWHERE)
    rows = np.random.default_rng(0).permutation(len(matrix))[:600]
    return matrix.subset(np.sort(rows))


def test_cost_model_on_routerbench_predicts_each_models_dollars(
    routerbench_slice: OutcomeMatrix,
) -> None:
    train, validation, test = routerbench_slice.splits(0)
    model = CostModel().fit(
        train.prompts + validation.prompts, np.vstack([train.cost, validation.cost])
    )
    predicted = model.predict(test.prompts)
    # every model's mean predicted dollars are near its recorded ones, GPT-4 the dearest
    ratio = predicted.mean(axis=0) / test.cost.mean(axis=0)
    assert np.all((ratio > 0.7) & (ratio < 1.3))
    assert int(np.argmax(predicted.mean(axis=0))) == routerbench_slice.model_index(STRONG)


def test_eval_traces_a_dollar_curve_with_categories_on_routerbench(
    routerbench_slice: OutcomeMatrix,
) -> None:
    report = evaluate(
        routerbench_slice, ["learned?estimator=knn&embedder=hashing&category=1"], seeds=[0]
    )
    rows = {r.name: r for r in report.results}
    dollar = rows["learned?estimator=knn&embedder=hashing&category=1@dollar"]
    strong = rows[report.strongest]
    curve = dollar.curves[0]
    assert len(curve.quality) > 10
    # the curve spans cheap routing up to the all-on-GPT-4 point that closes it
    assert min(curve.cost_usd) < 0.2 * strong.cost_usd.mean
    assert curve.quality[-1] == pytest.approx(strong.quality.mean)
    assert dollar.savings_fraction is not None and dollar.savings_fraction.mean > 0.3


def test_calibrate_by_category_saves_a_router_that_reads_request_metadata(
    tmp_path: Path, catalog: Catalog
) -> None:
    report = calibrate(
        categorical(seed=3),
        Objective(kind="target-quality", value=0.95),
        name="by-category",
        artifacts_dir=tmp_path,
        cache_dir=tmp_path,
        embedder="hashing",
        resamples=20,
        categories=True,
    )
    predictor = load_artifact(tmp_path, "by-category", QualityPredictor).payload
    assert predictor.by_category is not None and predictor.by_category.weight > 0
    # the text says nothing: routing to the cheap model at 95% of the strong's quality
    # needs the category, so the held-out figures send some calls to it
    assert report.meta.test.strong_share < 0.95
    law = predictor.predict(["question 1 2"], categories=["law"])[0, 0]
    trivia = predictor.predict(["question 1 2"], categories=["trivia"])[0, 0]
    assert law < 0.5 < trivia


def test_dollar_rule_sends_a_long_prompt_to_the_cheap_model(catalog: Catalog) -> None:
    train, validation, _ = categorical().splits(4)
    scorer = LearnedScorer({"estimator": "logreg", "embedder": "hashing", "category": "1"})
    scorer.fit(train, validation)
    assert scorer.predictor is not None
    short = Request.from_prompt("question 7 777").model_copy(
        update={"metadata": {"category": "law"}}
    )
    long = Request.from_prompt("question 7 777 " + "context " * 4000).model_copy(
        update={"metadata": {"category": "law"}}
    )
    router = LearnedRouter(scorer.predictor, Rule(kind="dollar", threshold=0.2), "cat@v1")
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    context = RouteContext(catalog=catalog)
    # the typical call costs what this short request costs on the strong model
    typical = router.select(short, candidates, context).scores[1].predicted_cost
    assert typical is not None
    scorer.predictor.cost_model = CostModel()
    scorer.predictor.cost_model.reference = float(typical)
    near, far = (router.select(r, candidates, context) for r in (short, long))
    assert (near.chosen, far.chosen) == (STRONG, WEAK)
    assert "lambda*cost/typical call" in far.reason
    # the lambda rule compares relative costs only: prompt length does not move it
    relative = LearnedRouter(scorer.predictor, Rule(kind="lambda", threshold=0.2), "cat@v1")
    assert relative.select(long, candidates, context).chosen == STRONG


def test_calibrate_can_pick_the_dollar_rule_and_measure_it(tmp_path: Path) -> None:
    base = categorical(seed=5)
    prompts = [p + " pad" * (50 * (i % 7)) for i, p in enumerate(base.prompts)]
    tokens = prompt_tokens(prompts)[:, None]
    priced = OutcomeMatrix(
        name="priced",
        ids=base.ids,
        prompts=prompts,
        models=base.models,
        quality=base.quality,
        cost=np.hstack([1e-7 * tokens, 3e-6 * tokens]),
        categories=base.categories,
    )
    report = calibrate(
        priced,
        Objective(kind="target-quality", value=0.95),
        name="dollar",
        artifacts_dir=tmp_path,
        cache_dir=tmp_path,
        embedder="hashing",
        rule="dollar",
        resamples=20,
        categories=True,
    )
    assert report.meta.rule == "dollar" and {p[0] for p in report.curve} == {"dollar"}
    predictor = load_artifact(tmp_path, "dollar", QualityPredictor).payload
    assert predictor.cost_model is not None
    assert predictor.cost_model.slope == pytest.approx([1e-7, 3e-6], rel=1e-6)
    assert report.meta.test.relative_quality >= 0.9 and report.meta.test.savings > 0.2
