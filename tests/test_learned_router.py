"""The learned router: estimators learn a real signal, the decision rules, MiniLM embeddings
offline and cached on disk, and the hashing fallback."""

from __future__ import annotations

import pickle
import warnings
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tierwise.catalog import Catalog
from tierwise.errors import PolicyError
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.scorers import build_scorer
from tierwise.messages import Request
from tierwise.routing import embeddings
from tierwise.routing.base import RouteContext
from tierwise.routing.decide import choose_by_lambda, choose_by_target, relative
from tierwise.routing.embeddings import CachedEmbedder, HashingEmbedder, MiniLMEmbedder
from tierwise.routing.estimators import brier
from tierwise.routing.features import LEXICAL_NAMES, lexical_features
from tierwise.routing.learned import LearnedRouter, QualityPredictor, Rule, make_predictor

WEAK = "together:mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "openai:gpt-4-1106-preview"
OTHER = "anthropic:claude-haiku-4-5"
MATH = ["sum", "total", "price", "apples", "each", "twice", "half", "remaining", "percent"]
POEM = ["poem", "rhyme", "verse", "sonnet", "moon", "love", "heart", "river", "autumn"]
MATH_PROMPT = " ".join(MATH) + " (case 9001)"
POEM_PROMPT = " ".join(POEM) + " (case 9002)"


def synthetic(n: int = 600, seed: int = 0) -> OutcomeMatrix:
    """Maths prompts the cheap model mostly fails, poems it mostly gets right; the strong
    model is good at both."""
    rng = np.random.default_rng(seed)
    is_math = rng.random(n) < 0.5
    prompts = [
        " ".join(rng.choice(MATH if m else POEM, 10)) + f" (case {i})"
        for i, m in enumerate(is_math)
    ]
    chance = np.column_stack([np.where(is_math, 0.15, 0.9), np.full(n, 0.88)])
    return OutcomeMatrix(
        name="synthetic",
        ids=[str(i) for i in range(n)],
        prompts=prompts,
        models=[WEAK, STRONG],
        quality=(rng.random((n, 2)) < chance).astype(np.float64),
        cost=np.tile([0.0001, 0.004], (n, 1)),
        categories=["math" if m else "poem" for m in is_math],
    )


@pytest.fixture(scope="module")
def fitted() -> QualityPredictor:
    train, validation, _ = synthetic().splits(0)
    predictor = make_predictor(train.models, estimator="logreg", embedder="hashing")
    predictor.fit(train, validation)
    return predictor


@pytest.mark.parametrize("estimator", ["knn", "logreg", "gbm", "mf"])
def test_each_estimator_beats_a_constant_predictor_on_held_out_prompts(estimator: str) -> None:
    train, validation, test = synthetic().splits(1)
    scorer = build_scorer(f"learned?estimator={estimator}&embedder=hashing")
    scorer.fit(train, validation)
    predicted = scorer.predict(test)
    assert predicted.shape == (len(test), 2)
    assert np.all((predicted >= 0) & (predicted <= 1))
    constant = np.tile(train.quality.mean(axis=0), (len(test), 1))
    # the signal is in the cheap model's column: its Brier score must drop clearly
    assert (
        brier(predicted[:, 0], test.quality[:, 0])
        < brier(constant[:, 0], test.quality[:, 0]) - 0.08
    )
    assert brier(predicted, test.quality) < brier(constant, test.quality)


def test_target_rule_picks_the_cheapest_model_that_clears_it() -> None:
    pred = np.array([[0.6, 0.8, 0.95], [0.9, 0.95, 0.99], [0.2, 0.5, 0.6], [0.7, 0.4, 0.3]])
    order = np.array([0, 1, 2])  # already cheapest first
    assert choose_by_target(pred, order, 0.75).tolist() == [1, 0, 2, 0]  # row 3: best predicted
    # a different cost order changes who is "cheapest"
    assert choose_by_target(pred, np.array([2, 1, 0]), 0.75).tolist() == [2, 2, 2, 0]


def test_lambda_rule_trades_quality_against_relative_cost() -> None:
    pred = np.array([[0.60, 0.90]])
    cost = relative(np.array([0.0001, 0.004]))
    assert cost.tolist() == pytest.approx([0.025, 1.0])
    assert choose_by_lambda(pred, cost, 0.0)[0] == 1  # cost ignored: the best predicted
    assert choose_by_lambda(pred, cost, 0.2)[0] == 1  # 0.3 more success is worth 0.2
    assert choose_by_lambda(pred, cost, 0.5)[0] == 0


def _context(catalog: Catalog, prefer_speed: bool = False) -> RouteContext:
    return RouteContext(catalog=catalog, prefer_speed=prefer_speed)


def test_select_returns_every_candidates_prediction_and_cost(fitted, catalog) -> None:
    router = LearnedRouter(fitted, Rule(kind="target", threshold=0.7), "synthetic@v1")
    candidates = [catalog.get(WEAK), catalog.get(STRONG), catalog.get(OTHER)]
    maths = router.select(Request.from_prompt(MATH_PROMPT), candidates, _context(catalog))
    poem = router.select(Request.from_prompt(POEM_PROMPT), candidates, _context(catalog))
    assert (maths.chosen, poem.chosen) == (STRONG, WEAK)
    assert [s.model for s in maths.scores] == [WEAK, STRONG, OTHER]
    weak, strong, other = maths.scores
    assert weak.predicted_quality is not None and weak.predicted_quality < 0.5
    assert strong.predicted_quality is not None and strong.predicted_quality >= 0.7
    assert other.predicted_quality is None  # the artifact never saw this model
    assert weak.predicted_cost is not None and strong.predicted_cost is not None
    assert Decimal(0) < weak.predicted_cost < strong.predicted_cost
    assert maths.threshold == 0.7 and maths.router == "learned"
    assert maths.signals == {"artifact": "synthetic@v1", "rule": "target"}
    first = f"predicted success Mixtral-8x7B-Instruct-v0.1 {weak.predicted_quality:.2f} >= 0.70"
    assert maths.reason.startswith(f"{first}? no; gpt-4-1106-preview")
    assert maths.reason.endswith("-> gpt-4-1106-preview (cheapest that clears the target)")
    assert "0.70? yes -> Mixtral" in poem.reason


def test_select_without_a_model_clearing_the_target_takes_the_best_predicted(fitted, catalog):
    router = LearnedRouter(fitted, Rule(kind="target", threshold=0.999))
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    decision = router.select(Request.from_prompt(POEM_PROMPT), candidates, _context(catalog))
    best = max(decision.scores, key=lambda s: s.predicted_quality or 0)
    assert decision.chosen == best.model
    assert "none clears the target: best predicted" in decision.reason


def test_lambda_router_prefers_the_cheap_model_as_lambda_grows(fitted, catalog) -> None:
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    request = Request.from_prompt(MATH_PROMPT)
    chosen = [
        LearnedRouter(fitted, Rule(kind="lambda", threshold=lam))
        .select(request, candidates, _context(catalog))
        .chosen
        for lam in (0.0, 10.0)
    ]
    assert chosen == [STRONG, WEAK]


def test_prefer_speed_takes_the_fastest_model_that_clears_the_target(fitted, catalog) -> None:
    router = LearnedRouter(fitted, Rule(kind="target", threshold=0.3))
    candidates = [catalog.get(STRONG), catalog.get(WEAK)]
    fast = router.select(Request.from_prompt(POEM_PROMPT), candidates, _context(catalog, True))
    assert catalog.get(WEAK).typical_latency_ms < catalog.get(STRONG).typical_latency_ms  # type: ignore[operator]
    assert fast.chosen == WEAK and "fastest that clears the target" in fast.reason


def test_unknown_candidates_are_a_policy_error(fitted, catalog) -> None:
    router = LearnedRouter(fitted, Rule(kind="target", threshold=0.5), "synthetic@v1")
    with pytest.raises(PolicyError, match="knows none of the candidates"):
        router.select(Request.from_prompt("hi"), [catalog.get(OTHER)], _context(catalog))


def test_lexical_features_see_arithmetic_code_and_choices() -> None:
    rows = lexical_features(
        ["What is 12 + 7 * 3?", "def f(x):\n    return x; ", "Pick one\nA. red\nB. blue\nC. green"]
    )
    column = {name: i for i, name in enumerate(LEXICAL_NAMES)}
    assert rows.shape == (3, len(LEXICAL_NAMES))
    assert rows[0, column["operator_ratio"]] > rows[2, column["operator_ratio"]]
    assert rows[1, column["log_code_markers"]] > rows[0, column["log_code_markers"]]
    assert rows[2, column["choices"]] == 3


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    pytest.importorskip("sentence_transformers")
    return MiniLMEmbedder()


def test_minilm_embeds_offline_and_second_call_hits_the_disk_cache(minilm, tmp_path) -> None:
    texts = ["How many apples are left?", "How many pears remain?", "Write a love sonnet."]
    first = CachedEmbedder(minilm, tmp_path).embed(texts)
    assert minilm.encoded == 3
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-3)
    assert first[0] @ first[1] > first[0] @ first[2]  # real semantics, not hashing
    fresh = CachedEmbedder(minilm, tmp_path)  # a new process would start like this
    again = fresh.embed(texts)
    assert minilm.encoded == 3  # nothing re-encoded: every vector came from disk
    assert np.array_equal(first, again)
    assert list(tmp_path.glob("*.sqlite"))
    fresh.embed([*texts, "One new prompt."])
    assert minilm.encoded == 4  # only the unseen text is encoded


def test_hashing_fallback_when_sentence_transformers_is_missing(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(embeddings, "minilm_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedder = embeddings.make_embedder("auto", tmp_path)
    assert isinstance(embedder, HashingEmbedder)
    assert any("sentence-transformers is not installed" in str(w.message) for w in caught)
    texts = ["apples and pears total", "apples and pears sum", "a sonnet about the moon"]
    embedder.fit(texts)
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert np.array_equal(vectors, embedder.embed(texts))  # deterministic


def test_hashing_vectors_are_the_projections_own_and_survive_pickling() -> None:
    """The projection's matrix is kept transposed (a third of a decision, once per call
    before): the vectors stay the projection's own, one by one or in a batch, and an
    embedder pickled (an artifact) then loaded gives the same without storing that copy."""
    embedder = HashingEmbedder(dim=64)
    texts = ["apples and pears total", "a sonnet about the moon", "the price of each apple"]
    embedder.fit(texts)
    before = pickle.dumps(embedder)
    counts = embedder._vectorizer.transform(texts).astype(np.float32)
    counts.data = 1 + np.log(counts.data)
    direct = embedder._projection.transform(counts.multiply(embedder._idf).tocsr())
    expected = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    batch = embedder.embed(texts)
    assert np.allclose(batch, expected, atol=1e-6)
    assert np.array_equal(np.vstack([embedder.embed([t]) for t in texts]), batch)
    blob = pickle.dumps(embedder)
    assert len(blob) == len(before)  # the transposed copy is not stored
    assert np.array_equal(pickle.loads(blob).embed(texts), batch)


def test_predictor_reuses_cached_embeddings_when_routing(minilm, tmp_path, catalog) -> None:
    matrix = synthetic(120)
    train, validation, _ = matrix.splits(0)
    predictor = QualityPredictor(
        matrix.models,
        make_predictor(matrix.models, estimator="knn").estimator,
        CachedEmbedder(minilm, tmp_path),
        "platt",
    )
    predictor.fit(train, validation)
    router = LearnedRouter(predictor, Rule(kind="target", threshold=0.7))
    request = Request.from_prompt(POEM_PROMPT)
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    router.select(request, candidates, _context(catalog))
    encoded = minilm.encoded
    decision = router.select(request, candidates, _context(catalog))
    assert minilm.encoded == encoded  # the second decision reused the cached embedding
    assert decision.chosen in {WEAK, STRONG}
    assert Path(tmp_path).glob("*.sqlite")


def test_a_conversation_stays_on_its_model_while_it_clears_the_target(fitted, catalog):
    router = LearnedRouter(fitted, Rule(kind="target", threshold=0.7))
    candidates = [catalog.get(WEAK), catalog.get(STRONG)]
    request = Request.from_prompt(POEM_PROMPT)
    sticky = RouteContext(catalog=catalog, sticky_model=STRONG)
    stays = router.select(request, candidates, sticky)
    assert stays.chosen == STRONG and "stays there (warm prompt cache)" in stays.reason
    maths = router.select(Request.from_prompt(MATH_PROMPT), candidates, sticky)
    assert maths.chosen == STRONG  # the strong model clears it anyway
    moves = router.select(
        Request.from_prompt(MATH_PROMPT),
        candidates,
        RouteContext(catalog=catalog, sticky_model=WEAK),
    )
    assert moves.chosen == STRONG and "stays" not in moves.reason  # the weak one no longer fits
