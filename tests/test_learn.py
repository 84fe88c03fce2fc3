"""``tierwise learn`` and ``tierwise drift`` on a real SQLite ledger filled through the engine
(fake OpenAI and Anthropic upstreams behind the official SDKs), and user feedback through
``Engine.feedback`` and the gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_harness import ADMIN_KEY, gateway_settings, running_gateway
from tests.learn_world import (
    ALL,
    CANDIDATES,
    CHEAP,
    DEFAULT,
    SECURITY,
    SIMPLE,
    STRONG,
    World,
    run_live,
)
from tests.test_cli import tierwise
from tests.test_ledger import ledger_url, postgres_url  # noqa: F401 (fixtures)
from tierwise.catalog import Catalog
from tierwise.config import Settings, load_settings
from tierwise.datasets import RecordedOutcome
from tierwise.engine import SyncEngine
from tierwise.errors import ArtifactError, InsufficientDataError, InvalidRequestError
from tierwise.evaluation.loaders import load_matrix
from tierwise.learning.drift import check_drift, find_meta
from tierwise.learning.kinds import KindReader
from tierwise.learning.learn import LearnOptions, LearnReport, gather, recalibrate
from tierwise.learning.report import KindFigures, Thresholds
from tierwise.learning.shadow import ShadowOptions, shadow
from tierwise.ledger.store import Ledger
from tierwise.providers.replay import ReplayProvider
from tierwise.routing.calibrate import Objective, calibrate

LEARNED = f"route:learned?artifact=ledger&candidates={CANDIDATES}"


def _options(tmp_path: Path, **changes: object) -> LearnOptions:
    base = LearnOptions(
        traces_path=tmp_path / "learned.jsonl",
        min_prompts=10,
        embedder="hashing",
        resamples=50,
        objective=Objective(kind="target-quality", value=0.9),
        thresholds=Thresholds(min_samples=5, min_cheap_pass=0.6),  # six prompts per kind
    )
    return base.model_copy(update=changes)


def _gather(settings: Settings, catalog: Catalog, options: LearnOptions) -> LearnReport:
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        return gather(ledger, catalog, KindReader(), options)


def _kind(rows: list[KindFigures], kind: str) -> KindFigures:
    return next(row for row in rows if row.kind == kind)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture
async def live(settings: Settings) -> World:
    """18 live tasks routed by the shipped rules, each with the user's verdict."""
    world = World()
    async with world.engine(settings) as engine:
        await run_live(engine, ALL)
    return world


@pytest.fixture
async def shadowed(live: World, settings: Settings, tmp_path: Path) -> World:
    """The live ledger plus a shadow run of every prompt on both models."""
    async with live.engine(settings) as engine:
        await shadow(engine, ShadowOptions(sample=100, out=tmp_path / "shadow.jsonl"))
    return live


# --- feedback ---------------------------------------------------------------------------------


async def test_feedback_is_a_user_outcome_and_an_unknown_task_is_refused(
    settings: Settings,
) -> None:
    async with World().engine(settings) as engine:
        result = await engine.complete(SIMPLE[0], f"fixed:{CHEAP}")
        record = await engine.feedback(result.task_id, False, note="renamed the wrong symbol")
        with pytest.raises(InvalidRequestError, match="no task 'nope'"):
            await engine.feedback("nope", True)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        outcomes = ledger.outcomes(task_id=result.task_id)
    assert [(o.source, o.correct) for o in outcomes] == [("engine", None), ("user", False)]
    assert outcomes[-1].id == record.id and outcomes[-1].outcome == "failure"
    assert outcomes[-1].detail == "renamed the wrong symbol"


def test_gateway_feedback_endpoint_needs_a_key_and_records_the_verdict(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'gw.db'}")
    with running_gateway(settings) as served, served.http() as http:
        served.openai_fake.reply_completion({**_completion("RIGHT: done")})
        chat = served.openai().chat.completions.with_raw_response.create(
            model=CHEAP, messages=[{"role": "user", "content": SIMPLE[0]}]
        )
        task_id = chat.headers["x-tierwise-task-id"]
        body = {"task_id": task_id, "correct": True, "note": "works"}
        anonymous = http.post("/v1/tierwise/feedback", json=body)
        bad = http.post(
            "/v1/tierwise/feedback",
            json={"task_id": task_id, "correct": "yes"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        unknown = http.post(
            "/v1/tierwise/feedback",
            json={**body, "task_id": "missing"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        ok = http.post("/v1/tierwise/feedback", json=body, headers={"x-api-key": ADMIN_KEY})
    assert anonymous.status_code == 401 and "missing API key" in anonymous.text
    assert bad.status_code == 400 and "invalid feedback: correct" in bad.json()["error"]["message"]
    assert unknown.status_code == 404 and "no task 'missing'" in unknown.text
    assert ok.status_code == 200 and ok.json()["task_id"] == task_id and ok.json()["correct"]
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        user = [o for o in ledger.outcomes(task_id=task_id) if o.source == "user"]
    assert [(o.correct, o.detail) for o in user] == [(True, "via gateway key admin: works")]


def _completion(text: str) -> dict[str, object]:
    from tests.fakes.openai_upstream import completion  # noqa: PLC0415

    return completion(text, model="gpt-5-nano")


# --- learn ------------------------------------------------------------------------------------


async def test_learn_reports_aggressive_rules_and_imputes_by_tier(
    live: World, settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    report = _gather(settings, catalog, _options(tmp_path))
    assert report.tasks == 18 and report.labels.by_source == {"user": 18}
    assert report.labels.models == [STRONG, CHEAP]
    by_rule = report.kinds.by_rule
    # the arithmetic prompts go to the cheap model by default, and it gets them all wrong
    default = _kind(by_rule, "default")
    assert default.verdict == "too aggressive"
    assert (default.cheap_starts, default.cheap_failed.hits, default.cheap_failed.n) == (6, 6, 6)
    assert default.cheap_failed.low > 0.3
    assert _kind(by_rule, "simple").verdict == "ok"
    # security reviews go to the strong model; nothing yet says what the cheap one would do
    security = _kind(by_rule, "architecture")
    assert (security.dear_starts, security.cheap_pass.n, security.verdict) == (
        6,
        0,
        "not enough data",
    )
    assert report.baseline == {
        "tasks": 18.0,
        "escalation_rate": 0.0,
        "labels": 18.0,
        "live_labelled": 18.0,
        "live_quality": pytest.approx(12 / 18, abs=1e-6),
    }
    # a renamed helper passed on the cheap tier: the strong tier is imputed to pass it too
    lines = _lines(report.traces_path)
    assert len(lines) == report.labels.traces_written == 18 + 6 == 18 + report.labels.imputed
    imputed = [line for line in lines if line["metadata"]["imputed"]]
    assert {line["prompt_text"] for line in imputed} == set(SIMPLE)
    for line in imputed:
        (call,) = line["calls"]
        (outcome,) = line["outcomes"]
        assert call["model"] == STRONG and outcome["correct"] is True
        # the cheap call's 30 in, 10 out at Opus' $5 / $25 per million tokens
        assert Decimal(call["cost_usd"]) == Decimal("0.0004")
    wrong = [line for line in lines if line["prompt_text"] in DEFAULT]
    assert len(wrong) == 6 and all(
        line["outcomes"][0]["correct"] is False and line["metadata"]["category"] == "default"
        for line in wrong
    )


async def test_too_few_labelled_prompts_is_a_clear_error(
    live: World, settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    options = _options(tmp_path)
    report = _gather(settings, catalog, options)
    with pytest.raises(InsufficientDataError, match=r"only 6 prompts are labelled for all 2"):
        recalibrate(
            report, options, catalog=catalog, artifacts_dir=tmp_path, cache_dir=tmp_path / "c"
        )
    no_imputing = _gather(settings, catalog, _options(tmp_path, impute=False))
    with pytest.raises(InsufficientDataError, match="no prompt has a correctness label for every"):
        recalibrate(
            no_imputing, options, catalog=catalog, artifacts_dir=tmp_path, cache_dir=tmp_path
        )


async def test_after_shadowing_learn_finds_timid_rules_and_recalibrates(
    shadowed: World, settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    options = _options(tmp_path)
    report = _gather(settings, catalog, options)
    assert report.labels.by_source == {"user": 18, "judge": 36}
    assert report.labels.imputed == 0  # the shadow run filled every cell
    security = _kind(report.kinds.by_rule, "architecture")
    assert security.verdict == "too timid"
    assert (security.avoidable.hits, security.avoidable.n) == (6, 6)
    assert (security.cheap_pass.hits, security.cheap_pass.n) == (6, 6)
    assert _kind(report.kinds.by_words, "complex").verdict == "too timid"
    root = settings.routing.resolved_artifacts_dir()
    first = recalibrate(report, options, catalog=catalog, artifacts_dir=root, cache_dir=tmp_path)
    again = recalibrate(report, options, catalog=catalog, artifacts_dir=root, cache_dir=tmp_path)
    assert (first.meta.label, again.meta.label) == ("ledger@v1", "ledger@v2")
    meta = json.loads((root / "ledger" / "v1" / "meta.json").read_text("utf-8"))
    assert meta["source"] == "learned" and meta["models"] == [STRONG, CHEAP]
    assert meta["baseline"]["escalation_rate"] == 0.0 and meta["baseline"]["labels"] == 54.0
    assert meta["validation"]["relative_quality"] >= 0.9


# --- drift ------------------------------------------------------------------------------------


@pytest.fixture
async def calibrated(
    shadowed: World, settings: Settings, catalog: Catalog, tmp_path: Path
) -> World:
    options = _options(tmp_path)
    report = _gather(settings, catalog, options)
    root = settings.routing.resolved_artifacts_dir()
    recalibrate(report, options, catalog=catalog, artifacts_dir=root, cache_dir=tmp_path)
    return shadowed


async def test_drift_is_ok_while_live_traffic_matches(
    calibrated: World, settings: Settings
) -> None:
    async with calibrated.engine(settings) as engine:
        routed = await run_live(engine, ALL, LEARNED)
    # the learned router sends exactly the prompts the cheap model fails to the strong one
    to_strong = {p for p, r in zip(ALL, routed, strict=True) if r.response.model == STRONG}
    assert to_strong == set(DEFAULT)
    meta = find_meta(settings.routing.resolved_artifacts_dir(), "ledger")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        report = check_drift(ledger, meta, since=None, min_samples=5)
    assert report.scope == "tasks routed by ledger" and report.tasks == 18
    assert [(c.name, c.status) for c in report.checks] == [
        ("quality", "ok"),
        ("escalation rate", "ok"),
        ("strong share", "ok"),
    ]
    assert not report.recalibrate and "no drift" in report.advice


async def test_drift_says_recalibrate_when_live_quality_drops(
    calibrated: World, settings: Settings
) -> None:
    async with calibrated.engine(settings) as engine:
        for prompt in ALL:
            result = await engine.complete(prompt, LEARNED)
            await engine.feedback(result.task_id, False, note="users now want more")
    meta = find_meta(settings.routing.resolved_artifacts_dir(), "ledger")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        report = check_drift(ledger, meta, since=None, min_samples=5)
    quality = report.checks[0]
    assert quality.name == "quality" and quality.status == "drift"
    assert (quality.live.hits, quality.live.n) == (0, 18) and quality.live.high < 0.2
    assert report.recalibrate and "recalibrate ledger: quality" in report.advice
    with (
        Ledger.open(settings.resolved_ledger_url()) as ledger,
        pytest.raises(InsufficientDataError, match="too little live data"),
    ):
        check_drift(ledger, meta, since=None, min_samples=500)


# --- the CLI ----------------------------------------------------------------------------------


def test_cli_learn_and_drift_end_to_end(
    calibrated: World, settings: Settings, tmp_path: Path
) -> None:
    ledger = settings.resolved_ledger_url()
    traces = tmp_path / "cli.jsonl"
    learned = tierwise(
        "--ledger", ledger, "learn", "--out", str(traces), "--embedder", "hashing",
        "--resamples", "50", "--min-prompts", "10", "--min-samples", "5", "--min-cheap-pass", "0.6",
        "--target-quality", "0.9",
    )  # fmt: skip
    assert learned.returncode == 0, learned.stderr
    out = learned.stdout
    assert "54 labelled answers (judge 36, user 18)" in out and str(traces) in out.replace("\n", "")
    assert "rule 'default' is too aggressive" in out and "rule 'architecture' is too timid" in out
    assert "ledger@v2" in out and "test (held out)" in out  # v1 came from the fixture
    drift = tierwise("--ledger", ledger, "drift", "ledger", "--days", "0", "--min-samples", "5")
    assert drift.returncode == 0, drift.stderr
    assert "ledger@v2 vs live traffic" in drift.stdout and "quality" in drift.stdout


def test_cli_bad_input_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for args, message in [
        (["learn", "--embedder", "hashing"], "has no tasks in that window"),
        (["drift", "nothing-here"], "no router artifact named 'nothing-here'"),
        (["learn", "--target-quality", "0.9", "--max-cost", "1"], "exactly one of"),
    ]:
        result = tierwise("--ledger", empty, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr.replace("\n", " "), result.stderr
        assert "Traceback" not in result.stderr


async def test_cli_learn_with_labels_on_one_model_only_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    async with World().engine(settings) as engine:
        await run_live(engine, SIMPLE + DEFAULT)  # all on the cheap model
    result = tierwise(
        "--ledger", settings.resolved_ledger_url(), "learn", "--out", str(tmp_path / "t.jsonl"),
        "--no-impute", "--embedder", "hashing",
    )  # fmt: skip
    assert result.returncode == 2
    assert "12 labelled answers (user 12)" in result.stdout  # the report still prints
    assert "labels cover one model only (openai:gpt-5-nano)" in result.stderr
    assert SECURITY[0] not in result.stdout


# --- a cascade's gates and escalations --------------------------------------------------------

CASCADE = f"cascade:{CANDIDATES}?gates=regex:^RIGHT&retries=0"


async def test_cascade_gates_and_escalations_are_labels_and_escalation_drift(
    calibrated: World, settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    async with calibrated.engine(settings) as engine:
        for prompt in ALL:
            await engine.complete(prompt, CASCADE)
    report = _gather(settings, catalog, _options(tmp_path, since=since))
    # every cheap answer was gated; the six it failed climbed to the strong model, gated too
    assert report.tasks == 18 and report.labels.by_source == {"gate": 24}
    assert report.kinds.escalated.hits == 6
    default = _kind(report.kinds.by_rule, "default")
    assert (default.escalated.hits, default.escalated.n, default.verdict) == (
        6,
        6,
        "too aggressive",
    )
    assert _kind(report.kinds.by_rule, "simple").escalated.hits == 0
    # the strong tier is imputed to pass what the cheap one passed: every prompt is complete
    assert report.labels.imputed == 12
    # the artifact was learned on a ledger without escalations; now a third of tasks climb
    meta = find_meta(settings.routing.resolved_artifacts_dir(), "ledger")
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        drift = check_drift(ledger, meta, since=since, min_samples=5)
    assert drift.scope == "all live tasks; none routed by it" and drift.tasks == 18
    checks = {check.name: check for check in drift.checks}
    assert set(checks) == {"live quality", "escalation rate"}  # nothing routed: no strong share
    assert checks["escalation rate"].status == "drift" and checks["escalation rate"].live.low > 0
    # the cascade ends with right answers: better than the 12 of 18 the rules alone got
    assert checks["live quality"].calibrated == pytest.approx(12 / 18, abs=1e-6)
    assert checks["live quality"].status == "ok" and checks["live quality"].live.hits == 18
    assert drift.recalibrate and "escalation rate" in drift.advice


async def test_drift_of_an_unused_dataset_artifact_has_nothing_to_compare(
    shadowed: World, settings: Settings, tmp_path: Path
) -> None:
    root = settings.routing.resolved_artifacts_dir()
    matrix = load_matrix(str(tmp_path / "shadow.jsonl"), data_dir=None, cache_dir=tmp_path)
    calibrate(
        matrix,
        Objective(kind="strong-share", value=1.0),
        name="plain",
        artifacts_dir=root,
        embedder="hashing",
        resamples=20,
    )
    meta = find_meta(root, "plain")
    assert meta.baseline == {}
    with (
        Ledger.open(settings.resolved_ledger_url()) as ledger,
        pytest.raises(InsufficientDataError, match=r"nothing to compare: no task .* plain@v1"),
    ):
        check_drift(ledger, meta, since=None, min_samples=5)
    with pytest.raises(ArtifactError, match="has no version 3"):
        find_meta(root, "plain", version=3)


def test_sync_engine_feedback(settings: Settings) -> None:
    recorded = RecordedOutcome(row_id="1", prompt=DEFAULT[0], model=CHEAP, response_text="72")
    with SyncEngine(settings, providers={"openai": ReplayProvider("replay", [recorded])}) as sync:
        result = sync.complete(DEFAULT[0], f"fixed:{CHEAP}")
        record = sync.feedback(result.task_id, False, note="36 eggs, not 72")
    assert (record.task_id, record.source, record.correct) == (result.task_id, "user", False)
    assert record.detail == "36 eggs, not 72"


async def test_learn_reads_the_same_from_sqlite_and_postgresql(
    ledger_url: str,  # noqa: F811 (the fixture)
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    settings = load_settings(None, ledger_url=ledger_url)
    async with World().engine(settings) as engine:
        await run_live(engine, ALL)
    report = _gather(settings, catalog, _options(tmp_path))
    assert report.tasks == 18 and report.labels.by_source == {"user": 18}
    verdicts = {row.kind: row.verdict for row in report.kinds.by_rule}
    assert verdicts == {
        "default": "too aggressive",
        "simple": "ok",
        "architecture": "not enough data",
    }
    assert report.labels.imputed == 6 and report.baseline["live_quality"] == pytest.approx(
        2 / 3, abs=1e-6
    )
