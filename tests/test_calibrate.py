"""Calibrating a learned router on real recorded outcomes (RouteLLM GSM8K), its versioned
artifact, and routing with it through the engine (``route:learned?artifact=NAME``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import SHARED_DATA
from tierwise.cli.calibrate_cmd import register
from tierwise.cli.state import CliState
from tierwise.config import load_settings
from tierwise.datasets import get_dataset
from tierwise.engine import Engine
from tierwise.errors import ArtifactError, CalibrationError, PolicyError
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.ledger.store import Ledger
from tierwise.providers.replay import ReplayProvider
from tierwise.routing.artifact import list_artifacts, load_artifact, save_artifact
from tierwise.routing.calibrate import CalibrationReport, Objective, calibrate
from tierwise.routing.learned import QualityPredictor, Rule, build, make_predictor
from tierwise.routing.registry import RouterEnv

STRONG = "openai:gpt-4-1106-preview"
WEAK = "together:mistralai/Mixtral-8x7B-Instruct-v0.1"
SUBSET = 500


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory: pytest.TempPathFactory) -> OutcomeMatrix:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set TIERWISE_SHARED_DATA)")
    cache = tmp_path_factory.mktemp("cache")
    return load_matrix("routellm-gsm8k", data_dir=SHARED_DATA, cache_dir=cache).subset(
        range(SUBSET)
    )


def _calibrate(matrix: OutcomeMatrix, root: Path, target: float = 0.9) -> CalibrationReport:
    return calibrate(
        matrix,
        Objective(kind="target-quality", value=target),
        name="gsm8k-logreg",
        artifacts_dir=root,
        estimator="logreg",
        embedder="hashing",
        resamples=300,
    )


@pytest.fixture(scope="module")
def calibrated(gsm8k, tmp_path_factory) -> CalibrationReport:
    return _calibrate(gsm8k, tmp_path_factory.mktemp("routers"))


def test_calibration_writes_an_artifact_with_metadata_and_intervals(calibrated, gsm8k) -> None:
    meta = calibrated.meta
    assert calibrated.path.name == "v1" and meta.version == 1
    assert {p.name for p in calibrated.path.iterdir()} == {"model.joblib", "meta.json"}
    assert meta.source == "routellm-gsm8k" and meta.models == gsm8k.models
    assert meta.strongest == STRONG and meta.estimator == "logreg" and meta.embedder == "hashing"
    assert meta.objective == "target-quality 0.9" and len(meta.data_hash) == 64
    assert meta.rule in {"target", "lambda"}
    assert meta.validation.prompts == 100 and meta.test.prompts == 100
    # the operating point reaches the target on validation, and costs less than all-GPT-4
    assert meta.validation.relative_quality >= 0.9
    assert 0 < meta.validation.savings < 1
    for figures in (meta.validation, meta.test):
        for value, ci in (
            (figures.quality, figures.quality_ci),
            (figures.relative_quality, figures.relative_quality_ci),
            (figures.savings, figures.savings_ci),
        ):
            assert ci is not None and ci.low <= value <= ci.high and ci.low < ci.high
    stored = json.loads((calibrated.path / "meta.json").read_text())
    assert stored["name"] == "gsm8k-logreg" and stored["tierwise_version"]
    assert stored["test"]["savings_ci"]["low"] == meta.test.savings_ci.low  # type: ignore[union-attr]
    # the whole validation curve came back, every rule
    assert {rule for rule, *_ in calibrated.curve} == {"target", "lambda", "dollar"}


def test_calibrating_again_adds_a_version_and_latest_is_loaded(gsm8k, tmp_path) -> None:
    first = _calibrate(gsm8k, tmp_path)
    second = _calibrate(gsm8k, tmp_path, target=0.95)
    assert (first.meta.version, second.meta.version) == (1, 2)
    listed = [(meta.label if meta else None) for meta, _ in list_artifacts(tmp_path)]
    assert listed == ["gsm8k-logreg@v1", "gsm8k-logreg@v2"]
    assert load_artifact(tmp_path, "gsm8k-logreg", QualityPredictor).meta.version == 2
    pinned = load_artifact(tmp_path, "gsm8k-logreg", QualityPredictor, version=1)
    assert pinned.meta.objective == "target-quality 0.9"


def test_an_unreachable_target_names_the_best_reachable_quality(gsm8k, tmp_path) -> None:
    with pytest.raises(CalibrationError) as caught:
        _calibrate(gsm8k, tmp_path, target=1.5)
    message = caught.value.message
    assert message.startswith("no threshold reaches 150% of the strongest model's quality")
    assert "the best reachable is 0." in message and "\n" not in message
    assert not list_artifacts(tmp_path)  # nothing half-written


def test_artifact_round_trip_predicts_the_same(calibrated, gsm8k, tmp_path) -> None:
    train, validation, _ = gsm8k.splits(3)
    predictor = make_predictor(gsm8k.models, estimator="mf", embedder="hashing")
    predictor.fit(train, validation)
    meta = calibrated.meta.model_copy(update={"name": "round-trip", "estimator": "mf"})
    saved = save_artifact(tmp_path, meta, predictor)
    loaded = load_artifact(tmp_path, "round-trip", QualityPredictor)
    assert loaded.meta == saved.meta and loaded.meta.version == 1
    assert loaded.meta.model_sha256 and loaded.meta.model_sha256 != calibrated.meta.model_sha256
    prompts = gsm8k.prompts[:25]
    assert np.array_equal(loaded.payload.predict(prompts), predictor.predict(prompts))


def _copy(report: CalibrationReport, tmp_path: Path) -> Path:
    target = tmp_path / "gsm8k-logreg" / "v1"
    shutil.copytree(report.path, target)
    return target


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("model", "is corrupt: model.joblib is missing or does not match its recorded checksum"),
        ("meta", "is corrupt: meta.json"),
        ("format", "has format 99; this tierwise reads format 1"),
        ("sklearn", "was built with scikit-learn 0.1.0"),
        ("missing", "no router artifact named 'gsm8k-logreg'"),
    ],
)
def test_a_damaged_artifact_is_one_clear_error(calibrated, tmp_path, damage, expected) -> None:
    path = _copy(calibrated, tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    if damage == "model":
        (path / "model.joblib").write_bytes(b"not a pickle")
    elif damage == "meta":
        (path / "meta.json").write_text("{ not json")
    elif damage in ("format", "sklearn"):
        meta.update({"format": 99} if damage == "format" else {"sklearn_version": "0.1.0"})
        (path / "meta.json").write_text(json.dumps(meta))
    else:
        shutil.rmtree(tmp_path / "gsm8k-logreg")
    with pytest.raises(ArtifactError) as caught:
        load_artifact(tmp_path, "gsm8k-logreg", QualityPredictor)
    assert expected in caught.value.message and "\n" not in caught.value.message
    assert caught.value.exit_code == 2


async def test_the_engine_routes_with_the_calibrated_artifact(calibrated, gsm8k, tmp_path):
    root = calibrated.path.parents[1]
    settings = load_settings(
        None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", routing={"artifacts_dir": root}
    )
    source = get_dataset("routellm-gsm8k")
    outcomes = source.load(SHARED_DATA / source.local_path)
    replay = ReplayProvider("replay", outcomes)
    policy = f"route:learned?artifact=gsm8k-logreg&candidates={WEAK},{STRONG}"
    chosen = set()
    async with Engine(settings, providers={"openai": replay, "together": replay}) as engine:
        for prompt in gsm8k.prompts[-12:]:
            result = await engine.complete(prompt, policy)
            (decision,) = result.decisions
            (call,) = result.calls
            assert decision.router == "learned" and call.model == decision.chosen_model
            chosen.add(call.model)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        decisions = ledger.decisions()
    assert len(decisions) == 12
    last = decisions[-1]
    assert [c["model"] for c in last.candidates] == [WEAK, STRONG]
    assert all(c["predicted_quality"] is not None for c in last.candidates)
    assert all(c["predicted_cost"] is not None for c in last.candidates)
    assert last.threshold == calibrated.meta.threshold
    assert "->" in last.reason


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(config_path=None, ledger_url=None)

    register(app)
    return app


def test_cli_calibrate_prints_figures_and_routers_lists_the_artifact(tmp_path) -> None:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip("shared data not found")
    runner = CliRunner()
    args = ["--data-dir", str(SHARED_DATA), "--routers-dir", str(tmp_path)]
    result = runner.invoke(
        _cli(),
        ["calibrate", "routellm-gsm8k", "--target-quality", "0.9", "--embedder", "hashing",
         "--name", "cli-test", "--resamples", "200", *args],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cli-test@v1" in result.output and "test (held out)" in result.output
    assert str(tmp_path / "cli-test" / "v1") in result.output.replace("\n", "")
    listed = runner.invoke(
        _cli(), ["routers", "--routers-dir", str(tmp_path)], env={"COLUMNS": "200"}
    )
    assert listed.exit_code == 0 and "cli-test@v1" in listed.output
    assert "routellm-gsm8k" in listed.output


def test_cli_needs_exactly_one_objective(tmp_path) -> None:
    result = CliRunner().invoke(
        _cli(), ["calibrate", "routellm-gsm8k", "--routers-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "exactly one of --target-quality, --max-cost, --strong-share" in result.output


def test_policy_parameters_override_the_artifact_or_fail_clearly(calibrated, settings, catalog):
    env = RouterEnv(settings=settings, catalog=catalog, artifacts_dir=calibrated.path.parents[1])
    artifact = {"artifact": "gsm8k-logreg"}
    default = build(artifact, env)
    assert default.rule == Rule(kind=calibrated.meta.rule, threshold=calibrated.meta.threshold)
    assert default.label == "gsm8k-logreg@v1"
    assert build({**artifact, "target": "0.8"}, env).rule == Rule(kind="target", threshold=0.8)
    fast = build({**artifact, "lambda": "0.3", "mu": "0.1"}, env).rule
    assert fast == Rule(kind="lambda", threshold=0.3, mu=0.1)
    for params, message in [
        ({**artifact, "target": "2"}, "target must be between 0 and 1"),
        ({**artifact, "treshold": "0.9"}, "unknown parameter 'treshold'"),
        ({**artifact, "target": "0.9", "lambda": "1"}, "give target= or lambda=, not both"),
        ({**artifact, "version": "latest"}, "version must be a number"),
        ({}, "needs artifact=NAME"),
    ]:
        with pytest.raises(PolicyError, match=message):
            build(params, env)
    with pytest.raises(ArtifactError, match="has no version 7"):
        build({**artifact, "version": "7"}, env)
