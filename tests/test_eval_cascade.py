"""Answer gates on real GSM8K solutions, the offline cascade, and the lambda-rule sweep."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tierwise.errors import PolicyError
from tierwise.evaluation import cascade as c
from tierwise.evaluation import gates as g
from tierwise.evaluation import metrics as m
from tierwise.evaluation.harness import evaluate
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.scorers import build_router

MIXTRAL = 0  # the cheap model's column in the RouteLLM matrices


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory: pytest.TempPathFactory) -> OutcomeMatrix:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    cache = tmp_path_factory.mktemp("cache")
    return load_matrix("routellm-gsm8k", data_dir=SHARED_DATA, cache_dir=cache)


def mixtral(matrix: OutcomeMatrix, prompt_id: str) -> str:
    assert matrix.responses is not None
    text = matrix.responses[matrix.ids.index(prompt_id)][MIXTRAL]
    assert text is not None
    return text


# --- gates on real recorded answers (verdicts checked by hand) ---------------------------


def test_a_correct_worked_solution_passes_every_gate(gsm8k: OutcomeMatrix) -> None:
    # "3 x 60 = <<3*60=180>>180 meters ... 180 x 3 = <<180*3=540>>540 meters. #### 540"
    text = mixtral(gsm8k, "gsm8k-3")
    assert gsm8k.quality[gsm8k.ids.index("gsm8k-3"), MIXTRAL] == 1.0
    answer, arithmetic, consistency = g.verdicts(text)
    assert answer == g.GateVerdict(True, 1.0, "final answer '540' (####)")
    # the prose "3 x 60 = 180" and the annotation "3*60=180" are one calculation
    assert arithmetic == g.GateVerdict(True, 1.0, "all 2 calculations check out")
    assert consistency == g.GateVerdict(True, 1.0, "final answer 540 is the last result computed")


def test_an_arithmetic_slip_fails_and_is_named(gsm8k: OutcomeMatrix) -> None:
    # "700 + 2 * 700 = 700 + 1400 = 2800 big coupons" (it is 2100), final answer 455 (wrong)
    text = mixtral(gsm8k, "gsm8k-1067")
    verdict = g.arithmetic_gate(text)
    assert not verdict.passed and verdict.score == pytest.approx(0.8)
    assert verdict.reason == (
        "700 + 1400 = 2800 is wrong (700 + 1400 = 2100); 1 of 5 calculations wrong"
    )
    # the chain's first link, 700 + 2 * 700 = 700 + 1400, is right: only the slip is named
    checks = {str(calc): calc.correct for calc in g.calculations(text)}
    assert checks["700 + 2 * 700 = 700"] is True
    assert checks["35+420 = 455"] is True
    # the answer is stated and follows from the steps: only arithmetic catches this one
    assert g.answer_gate(text).passed and g.consistency_gate(text).passed


def test_a_missing_final_answer_fails(gsm8k: OutcomeMatrix) -> None:
    # ends "... a total of 180 + 15 + 120 = <<180+15+120=315>>315 miles." with no "####"
    ended = g.answer_gate(mixtral(gsm8k, "gsm8k-8"))
    assert ended == g.GateVerdict(False, 0.3, "no final answer stated; the last number is 315")
    # recorded output cut off mid-annotation: "... 15 + 25 = <<15+2"
    cut = g.answer_gate(mixtral(gsm8k, "gsm8k-4"))
    assert cut == g.GateVerdict(False, 0.0, "the response is cut off inside a calculation")
    assert g.verdicts(None) == [g.GateVerdict(False, 0.0, "no response recorded")] * 3


def test_gates_separate_right_from_wrong_answers_on_all_of_gsm8k(gsm8k: OutcomeMatrix) -> None:
    assert gsm8k.responses is not None
    correct = gsm8k.quality[:, MIXTRAL] == 1
    passed = np.array([all(v.passed for v in g.verdicts(r[MIXTRAL])) for r in gsm8k.responses])
    assert correct[passed].mean() > 0.72  # 0.64 over all answers
    assert correct[~passed].mean() < 0.2


# --- reading calculations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("3 x 60", 180.0),
        ("$1,200 + $300", 1500.0),
        ("(12 / 20) \u00d7 100", 60.0),
        ("55% / 20%", 2.75),
        ("2 ^ 10", 1024.0),
        ("-5 + 3", -2.0),
        ("48", None),  # no operator: nothing to check
        ("__import__('os')", None),
        ("2 ** 1000", None),  # power limit
        ("1 / 0", None),
    ],
)
def test_expressions_are_computed_without_eval(expression: str, value: float | None) -> None:
    assert g.evaluate(expression) == value


def test_written_results_match_with_the_rounding_written() -> None:
    assert g.matches(2 / 3, "0.67") and g.matches(2 / 3, "0.66")  # rounded or truncated
    assert g.matches(0.6, "60%") and g.matches(60.0, "60%")
    assert not g.matches(9.0, "8") and not g.matches(10.4, "11")


def test_algebra_and_unit_phrases_are_skipped_not_failed() -> None:
    text = "x * 4 + 8 = 40\nSo 3 sprints * 60 meters/sprint = 180 meters.\nThe answer is 8"
    assert g.calculations(text) == []
    assert g.arithmetic_gate(text).reason == "no calculation written out to check"
    assert g.final_answer("so \\boxed{1,250} dollars") == g.FinalAnswer(1250.0, "1,250", "boxed", 3)


# --- the cascade on a hand-made matrix ----------------------------------------------------

RIGHT = "She has 13 - 4 = 9 apples left, and 9 x 2 = 18 halves.\n#### 18"
SLIP = "She has 13 - 4 = 8 apples left, and 8 x 2 = 16 halves.\n#### 16"
NO_ANSWER = "She has 13 - 4 = 9 apples left, and then she cuts"


def hand_made() -> OutcomeMatrix:
    """Four prompts; the cheap model answered right, with a slip, without an answer, right."""
    return OutcomeMatrix(
        name="hand-made",
        ids=["a", "b", "c", "d"],
        prompts=["apples a", "apples b", "apples c", "apples d"],
        models=["cheap", "strong"],
        quality=np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]),
        cost=np.tile([0.001, 0.01], (4, 1)),
        categories=["x"] * 4,
        responses=[[RIGHT, "s"], [SLIP, "s"], [NO_ANSWER, "s"], [RIGHT, "s"]],
    )


def test_gate_scores_of_the_hand_made_answers() -> None:
    assert (
        g.arithmetic_gate(SLIP).reason
        == "13 - 4 = 8 is wrong (13 - 4 = 9); 1 of 2 calculations wrong"
    )
    scores = c.gate_scores([RIGHT, SLIP, NO_ANSWER, RIGHT], list(g.GATES))
    # slip: answer 1 x arithmetic 0.5 (1 of 2 wrong) x consistency 1 (16 is its last result);
    # no answer: answer 0.3 (only a last number, 9) x arithmetic 1 x consistency 1
    assert scores.tolist() == [1.0, 0.5, 0.3, 1.0]


def test_cascade_curve_is_the_hand_computed_one() -> None:
    matrix = hand_made()
    router = build_router("cascade")
    router.fit(matrix, matrix)
    (traced,) = router.curves(matrix, matrix.cost.mean(axis=0), 400)
    curve = traced.curve
    assert curve.thresholds.tolist() == [0.3, 0.5, 1.0, np.inf]
    # t=0.3: accept all four. t=0.5: b (wrong) and d (right). t=1: a and d; b and c
    # escalate, each prompt having paid the cheap call. inf: nothing tried, all on strong.
    assert curve.quality.tolist() == [0.5, 0.75, 1.0, 0.75]
    assert curve.cost == pytest.approx([0.004, 0.004 + 0.01, 0.004 + 0.02, 0.04])
    assert curve.shares.tolist() == [[1.0, 0.0], [1.0, 0.25], [1.0, 0.5], [0.0, 1.0]]
    assert traced.answered(2).tolist() == [0, 1, 1, 0]


def test_a_scorer_sends_hopeless_prompts_straight_to_strong() -> None:
    matrix = hand_made()
    p_cheap, p_strong = np.array([0.9, 0.6, 0.2, 0.8]), np.array([0.4, 0.5, 0.5, 0.6])
    gate = np.array([1.0, 0.5, 0.3, 1.0])
    gated = c.Gated(score=gate * p_cheap - p_strong, ceiling=p_cheap - p_strong)
    ladder = c.Ladder(cheap=0, strong=1)
    # at 0: scores 0.5, -0.2, -0.44, 0.2 -> a, d accepted; c's ceiling -0.3 < 0: no cheap call
    quality, cost, shares = c.outcome(gated, ladder, matrix.quality, matrix.cost, 0.0)
    assert quality == 1.0
    assert cost == pytest.approx(3 * 0.001 + 2 * 0.01)
    assert shares.tolist() == [0.75, 0.5]


def test_cascade_rows_in_the_harness_on_real_gsm8k(gsm8k: OutcomeMatrix) -> None:
    sample = gsm8k.subset(np.arange(300))
    report = evaluate(sample, ["cascade", "cascade+tfidf", "tfidf"], seeds=[0])
    rows = {r.name: r for r in report.results}
    assert {"cascade", "cascade+tfidf", "tfidf", "tfidf@lambda"} <= set(rows)
    cheap, strong = rows[sample.models[MIXTRAL]], rows[sample.models[1]]
    cascade = rows["cascade"].curves[0]
    # accepting every cheap answer is the cheap model; escalating all is the strong one
    assert cascade.quality[0] == pytest.approx(cheap.quality.mean)
    assert cascade.cost_usd[0] == pytest.approx(cheap.cost_usd.mean)
    assert cascade.quality[-1] == pytest.approx(strong.quality.mean)
    # escalating what fails the gates beats the cheap model at under half the strong one's cost
    quality, cost = np.array(cascade.quality), np.array(cascade.cost_usd)
    assert ((quality > cheap.quality.mean + 0.03) & (cost < strong.cost_usd.mean / 2)).any()
    assert report.failures["cascade+tfidf"]


def test_cascade_errors_are_one_clear_line(gsm8k: OutcomeMatrix) -> None:
    with pytest.raises(PolicyError, match="unknown gate 'vibes'"):
        build_router("cascade?gates=answer+vibes")
    with pytest.raises(PolicyError, match="unknown parameter 'depth'"):
        build_router("cascade?depth=2")
    bare = gsm8k.subset(np.arange(50))
    no_text = OutcomeMatrix(
        bare.name, bare.ids, bare.prompts, bare.models, bare.quality, bare.cost, bare.categories
    )
    router = build_router("cascade")
    router.fit(no_text, no_text)
    with pytest.raises(PolicyError, match="no recorded responses to gate"):
        router.curves(no_text, no_text.cost.mean(axis=0), 10)


# --- the lambda rule in the harness --------------------------------------------------------


def test_lambda_sweep_visits_every_trade_off() -> None:
    predicted = np.array([[0.5, 0.7, 0.8]])
    penalty = np.array([0.1, 0.5, 1.0])
    # crossings: 2 vs 1 at 0.2, 2 vs 0 at 1/3, 1 vs 0 at 0.5
    lambdas = m.lambda_thresholds(predicted, penalty)
    chosen = [int(m.route_lambda(predicted, penalty, float(lam))[0]) for lam in lambdas]
    assert chosen == [2, 1, 1, 0]  # 0, then the midpoints 0.27 and 0.42, then 1.0
    quality = np.array([[0.0, 1.0, 1.0]])
    cost = np.array([[0.1, 0.5, 1.0]])
    curve = m.sweep_lambda(predicted, quality, cost, penalty)
    assert curve.cost.tolist() == [1.0, 0.5, 0.5, 0.1]
