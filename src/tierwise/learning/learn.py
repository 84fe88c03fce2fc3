"""``tierwise learn``: ledger outcomes -> labelled traces -> a re-calibrated router.

Reads the tasks of a window, labels their executor calls (:mod:`tierwise.learning.labels`),
reports escalations per task kind (:mod:`tierwise.learning.report`), writes the labels as
traces (:mod:`tierwise.learning.traces`) and, when enough prompts are labelled for every
model, calibrates a learned router on them with :func:`tierwise.routing.calibrate.calibrate`
— a new version of a named artifact whose metadata keeps the live escalation rate and label
quality for ``tierwise drift``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tierwise.catalog import Catalog
from tierwise.errors import DatasetError, InsufficientDataError
from tierwise.learning.kinds import KindReader
from tierwise.learning.labels import Label, TaskBundle, all_labels, final_label, load_bundles
from tierwise.learning.report import KindsReport, Thresholds, kinds_report
from tierwise.learning.traces import cells_for, write_traces
from tierwise.ledger.store import Ledger
from tierwise.routing.calibrate import CalibrationReport, Objective, Stage

FEEDBACK_HINT = (
    "label answers with Engine.feedback / POST /v1/tierwise/feedback, a cascade with gates, "
    "or `tierwise shadow --judge MODEL`"
)


class LearnOptions(BaseModel):
    since: datetime | None = None
    traces_path: Path
    impute: bool = True
    min_prompts: int = 30
    objective: Objective = Objective(kind="target-quality", value=0.95)
    name: str = "ledger"
    estimator: str = "logreg"
    embedder: str = "auto"
    rule: Literal["auto", "target", "lambda"] = "auto"
    seed: int = 0
    resamples: int = 1000
    thresholds: Thresholds = Thresholds()


class LabelCounts(BaseModel):
    labels: int
    by_source: dict[str, int]
    prompts: int
    models: list[str]
    imputed: int
    traces_written: int


class LearnReport(BaseModel):
    tasks: int
    labels: LabelCounts
    kinds: KindsReport
    traces_path: Path
    baseline: dict[str, float]
    calibration: CalibrationReport | None = None


def _baseline(
    kinds: KindsReport, labels: list[Label], bundles: list[TaskBundle]
) -> dict[str, float]:
    """What the live ledger looked like, for ``tierwise drift``: its escalation rate and the
    share of labelled live tasks whose final answer was right."""
    finals = [v for v in (final_label(b) for b in bundles if b.live) if v is not None]
    baseline = {
        "tasks": float(kinds.tasks),
        "escalation_rate": round(kinds.escalated.value, 6),
        "labels": float(len(labels)),
        "live_labelled": float(len(finals)),
    }
    if finals:
        baseline["live_quality"] = round(sum(finals) / len(finals), 6)
    return baseline


def _check_ledger(bundles: list[TaskBundle], labels: list[Label], ledger: Ledger) -> None:
    if not bundles:
        raise InsufficientDataError(
            f"the ledger at {ledger.url} has no tasks in that window: run traffic through "
            "tierwise first"
        )
    if not labels:
        raise InsufficientDataError(
            f"none of the {len(bundles)} tasks in the ledger at {ledger.url} has a labelled "
            f"answer: {FEEDBACK_HINT}"
        )


def gather(
    ledger: Ledger, catalog: Catalog, reader: KindReader, options: LearnOptions
) -> LearnReport:
    """Labels, traces and the kinds report, without calibrating."""
    bundles = load_bundles(ledger, since=options.since)
    labels = list(all_labels(bundles))
    _check_ledger(bundles, labels, ledger)
    kinds = kinds_report(bundles, labels, catalog, reader, options.thresholds)
    cells = cells_for(labels, catalog, impute=options.impute)
    written = write_traces(options.traces_path, cells, reader)
    counts = LabelCounts(
        labels=len(labels),
        by_source=dict(Counter(label.source for label in labels)),
        prompts=len({label.prompt for label in labels}),
        models=sorted({label.model for label in labels}),
        imputed=sum(cell.imputed for cell in cells),
        traces_written=written,
    )
    return LearnReport(
        tasks=len(bundles),
        labels=counts,
        kinds=kinds,
        traces_path=options.traces_path,
        baseline=_baseline(kinds, labels, bundles),
    )


def recalibrate(
    report: LearnReport,
    options: LearnOptions,
    *,
    catalog: Catalog,
    artifacts_dir: Path,
    cache_dir: Path,
    stage: Stage | None = None,
) -> CalibrationReport:
    """Calibrate a learned router on ``report``'s traces; too few complete prompts (or one
    model only) is an :class:`InsufficientDataError`."""
    from tierwise.evaluation.loaders import load_matrix  # noqa: PLC0415
    from tierwise.routing.calibrate import calibrate  # noqa: PLC0415

    models = report.labels.models
    if len(models) < 2:
        raise InsufficientDataError(
            f"labels cover one model only ({', '.join(models)}): a router needs outcomes of "
            "two or more; run `tierwise shadow` to label the other tiers"
        )
    try:
        matrix = load_matrix(
            str(report.traces_path), data_dir=None, cache_dir=cache_dir, catalog=catalog
        )
    except DatasetError as exc:
        raise InsufficientDataError(f"not enough labelled data to calibrate: {exc}") from None
    if len(matrix) < options.min_prompts:
        raise InsufficientDataError(
            f"only {len(matrix)} prompts are labelled for all {len(matrix.models)} models "
            f"(need {options.min_prompts} to calibrate): {FEEDBACK_HINT}"
        )
    return calibrate(
        matrix,
        options.objective,
        name=options.name,
        artifacts_dir=artifacts_dir,
        cache_dir=cache_dir,
        estimator=options.estimator,
        embedder=options.embedder,
        rule=options.rule,
        seed=options.seed,
        resamples=options.resamples,
        stage=stage,
        baseline=report.baseline,
    )
