"""Picking a threshold on cross-fitted predictions (``calibrate(folds=N)``, ``tierwise
calibrate --folds N``), joining splits back (``OutcomeMatrix.concat``) and the category
blend's one-standard-error weight."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_calibrate import _cli
from tests.test_routing_priors_costs import STRONG, WEAK
from tests.test_routing_priors_costs import categorical as unsplit_categorical
from tierwise.errors import CalibrationError, DatasetError
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.routing.calibrate import Objective, calibrate, cross_fitted
from tierwise.routing.learned import QualityPredictor, make_predictor
from tierwise.routing.priors import one_standard_error


def categorical(n: int = 600, seed: int = 0) -> OutcomeMatrix:
    """The priors tests' category-only matrix, with a given split: every fifth prompt is
    held out for test."""
    matrix = unsplit_categorical(n, seed)
    return replace(matrix, given_split=["train" if i % 5 else "test" for i in range(n)])


# --- OutcomeMatrix.concat -------------------------------------------------------------------


def test_concat_joins_the_splits_back_row_for_row() -> None:
    matrix = categorical()
    parts = matrix.splits(0)
    joined = OutcomeMatrix.concat(parts)
    assert len(joined) == len(matrix) and sorted(joined.ids) == sorted(matrix.ids)
    rows = [int(i) for i in joined.ids]
    assert np.array_equal(joined.quality, matrix.quality[rows])
    assert np.array_equal(joined.cost, matrix.cost[rows])
    assert joined.categories == [matrix.categories[i] for i in rows]
    assert joined.given_split == [matrix.given_split[i] for i in rows]  # type: ignore[index]
    assert joined.responses is None and joined.models == matrix.models


def test_concat_keeps_responses_only_when_every_part_has_them() -> None:
    matrix = categorical(n=20)
    texts = [[f"weak {i}", f"strong {i}"] for i in range(20)]
    answered = OutcomeMatrix(**{**matrix.__dict__, "responses": texts})
    joined = OutcomeMatrix.concat([answered.subset([3, 4]), answered.subset([0])])
    assert joined.responses == [texts[3], texts[4], texts[0]]
    assert OutcomeMatrix.concat([answered.subset([1]), matrix.subset([2])]).responses is None


def test_concat_refuses_nothing_and_different_models() -> None:
    matrix = categorical(n=20)
    with pytest.raises(DatasetError, match="nothing to concatenate"):
        OutcomeMatrix.concat([])
    other = OutcomeMatrix(**{**matrix.__dict__, "models": [WEAK, "openai:gpt-4.1"]})
    with pytest.raises(DatasetError, match="different models"):
        OutcomeMatrix.concat([matrix, other])


# --- cross_fitted -----------------------------------------------------------------------------


class _Spy:
    """Fresh hashing predictors that remember what they were fitted on."""

    def __init__(self) -> None:
        self.fitted: list[set[str]] = []
        self.predicted: list[set[str]] = []

    def __call__(self) -> QualityPredictor:
        predictor = make_predictor([WEAK, STRONG], estimator="logreg", embedder="hashing")
        fit, predict = predictor.fit, predictor.predict

        def spy_fit(train: OutcomeMatrix, validation: OutcomeMatrix, *a, **kw):  # type: ignore[no-untyped-def]
            assert not predictor.refit  # out-of-fold predictions come from train-only fits
            self.fitted.append({*train.prompts, *validation.prompts})
            return fit(train, validation, *a, **kw)

        def spy_predict(texts, *a, **kw):  # type: ignore[no-untyped-def]
            self.predicted.append(set(texts))
            return predict(texts, *a, **kw)

        predictor.fit = spy_fit  # type: ignore[method-assign]
        predictor.predict = spy_predict  # type: ignore[method-assign]
        return predictor


def test_cross_fitted_predicts_every_row_from_a_fit_that_never_saw_it() -> None:
    pool = categorical()
    spy = _Spy()
    predicted = cross_fitted(pool, spy, folds=4, seed=1, categories=True)
    assert predicted.shape == pool.quality.shape
    assert len(spy.fitted) == len(spy.predicted) == 4
    for seen, held in zip(spy.fitted, spy.predicted, strict=True):
        assert not seen & held and len(seen) + len(held) == len(pool)
    assert set().union(*spy.predicted) == set(pool.prompts)  # every row, once
    # the text says nothing: the category is what the out-of-fold predictions learned
    law = np.array(pool.categories) == "law"
    assert predicted[law, 0].mean() < 0.4 < 0.7 < predicted[~law, 0].mean()
    again = cross_fitted(pool, _Spy(), folds=4, seed=1, categories=True)
    assert np.array_equal(predicted, again)


@pytest.mark.parametrize("folds", [0, 1, 151])
def test_cross_fitted_refuses_a_fold_count_the_pool_cannot_carry(folds: int) -> None:
    with pytest.raises(CalibrationError, match=f"needs 2 to 150 folds, not {folds}"):
        cross_fitted(categorical(), _Spy(), folds=folds)


# --- calibrate(folds=...) ---------------------------------------------------------------------


def _calibrate(root: Path, folds: int) -> object:
    return calibrate(
        categorical(seed=3),
        Objective(kind="target-quality", value=0.95),
        name=f"folds-{folds}",
        artifacts_dir=root,
        cache_dir=root,
        embedder="hashing",
        resamples=20,
        categories=True,
        folds=folds,
    )


def test_calibrate_picks_the_threshold_on_cross_fitted_predictions(tmp_path: Path) -> None:
    plain, folded = _calibrate(tmp_path, 0), _calibrate(tmp_path, 4)
    assert plain.meta.objective == "target-quality 0.95"  # type: ignore[attr-defined]
    meta = folded.meta  # type: ignore[attr-defined]
    assert meta.objective == "target-quality 0.95, picked by 4-fold CV"
    # the sweep ran over train + validation (480 prompts), not validation (120)
    validation_points = {p[1] for p in plain.curve}  # type: ignore[attr-defined]
    assert len({p[1] for p in folded.curve}) > len(validation_points)  # type: ignore[attr-defined]
    # cheap on trivia, strong on law: the quality target holds on test at a saving
    assert meta.test.relative_quality >= 0.9 and meta.test.savings > 0.2


def test_calibrate_refuses_a_bad_fold_count_before_fitting(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="needs 2 to 120 folds, not 1"):
        _calibrate(tmp_path, 1)
    assert not any(tmp_path.iterdir())


# --- tierwise calibrate --folds ---------------------------------------------------------------


@pytest.mark.parametrize("folds", ["1", "-3"])
def test_cli_folds_must_be_zero_or_at_least_two(tmp_path: Path, folds: str) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["calibrate", "routellm-gsm8k", "--target-quality", "0.9", "--folds", folds,
         "--routers-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert f"--folds must be 0 (off) or at least 2, not {folds}" in result.output
    assert "Traceback" not in result.output


def test_cli_calibrates_with_folds_on_real_outcomes(shared_data: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["calibrate", "routellm-gsm8k", "--target-quality", "0.9", "--embedder", "hashing",
         "--folds", "3", "--name", "cv", "--resamples", "50", "--data-dir", str(shared_data),
         "--routers-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "picked by 3-fold CV" in result.output and "test (held out)" in result.output


# --- one standard error -------------------------------------------------------------------------


def test_one_standard_error_takes_the_heaviest_candidate_within_noise_of_the_best() -> None:
    base = np.random.default_rng(0).random(400)
    wobble = np.tile([0.01, -0.01], 200)  # paired differences: sd 0.01, standard error 0.0005
    errors = np.vstack([base + 0.05, base, base + 0.0002 + wobble, base + 0.002 + wobble])
    # row 1 is best; row 2 is within one standard error of it; row 3 is four beyond
    assert one_standard_error(errors) == 2
    assert one_standard_error(errors[:2]) == 1
    assert one_standard_error(np.array([[0.3], [0.1], [0.2]])) == 1  # one example: the best
