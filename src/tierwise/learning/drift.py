"""``tierwise drift``: is live traffic still what a router artifact was calibrated on?

Over a recent window of the ledger, three live rates (each with a 95% Wilson interval) are
set against the artifact's metadata:

* **quality** — the share of labelled routed tasks answered right, against the held-out
  quality the calibration measured (``test.quality``); with no routed tasks, the share of
  labelled live tasks against the live quality of the ledger the router was learned from
  (``baseline.live_quality``): drift when the reference lies above the live interval;
* **escalation rate** — the share of tasks that climbed to another model, against the rate in the
  ledger the router was learned from (``baseline.escalation_rate``, written by
  ``tierwise learn``): drift when it lies below the live interval;
* **strong share** — the share of routed tasks sent to the strongest model, against the
  calibrated share: drift when it lies outside the live interval (the traffic changed).

The tasks are those routed by the artifact (policy ``route:learned?artifact=NAME``), or all
live tasks when none were. A check with fewer than ``min_samples`` observations says so and
takes no part in the verdict; when no check has enough, that is an
:class:`~tierwise.errors.InsufficientDataError`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tierwise.errors import ArtifactError, InsufficientDataError, PolicyError
from tierwise.learning.labels import TaskBundle, final_label, load_bundles
from tierwise.learning.stats import Rate, rate
from tierwise.ledger.store import Ledger
from tierwise.policies import parse_policy
from tierwise.routing.artifact import ArtifactMeta, list_artifacts

Status = Literal["drift", "ok", "not enough data"]


class DriftCheck(BaseModel):
    name: str
    calibrated: float
    live: Rate
    status: Status
    detail: str


class DriftReport(BaseModel):
    artifact: str
    since: datetime | None
    scope: str
    tasks: int
    checks: list[DriftCheck]
    recalibrate: bool
    advice: str


def find_meta(root: Path, name: str, version: int | None = None) -> ArtifactMeta:
    """The metadata of artifact ``name`` (its latest version unless ``version``)."""
    found = [(meta, path) for meta, path in list_artifacts(root) if path.parent.name == name]
    if not found:
        raise ArtifactError(
            f"no router artifact named {name!r} in {root} (`tierwise routers` lists them)"
        )
    if version is not None:
        found = [(meta, path) for meta, path in found if path.name == f"v{version}"]
        if not found:
            raise ArtifactError(f"router artifact {name!r} has no version {version}")
    meta, path = found[-1]
    if meta is None:
        raise ArtifactError(f"router artifact {name}@{path.name} is unreadable: recalibrate it")
    return meta


def _routed_by(bundle: TaskBundle, meta: ArtifactMeta) -> bool:
    try:
        spec = parse_policy(bundle.task.policy or "")
    except PolicyError:
        return False
    version = spec.params.get("version")
    return (
        spec.kind == "route"
        and spec.argument.partition("?")[0] == "learned"
        and spec.params.get("artifact") == meta.name
        and (version is None or version == str(meta.version))
    )


def _check(
    name: str, calibrated: float, live: Rate, min_samples: int, *, drifted: bool, unit: str
) -> DriftCheck:
    said = f"live {live} vs calibrated {calibrated:.1%}"
    if not live.enough(min_samples):
        return DriftCheck(
            name=name,
            calibrated=calibrated,
            live=live,
            status="not enough data",
            detail=f"{live.n} {unit} (need {min_samples}); {said}",
        )
    status: Status = "drift" if drifted else "ok"
    return DriftCheck(name=name, calibrated=calibrated, live=live, status=status, detail=said)


def _quality(tasks: list[TaskBundle], reference: float, min_samples: int, name: str) -> DriftCheck:
    finals = [v for v in (final_label(b) for b in tasks) if v is not None]
    live = rate(sum(finals), len(finals))
    drifted = reference > live.high
    return _check(name, reference, live, min_samples, drifted=drifted, unit="labelled")


def _quality_check(
    tasks: list[TaskBundle], meta: ArtifactMeta, min_samples: int, routed: bool
) -> list[DriftCheck]:
    """Routed tasks against the calibrated held-out quality; otherwise live tasks against
    the live quality of the ledger the router was learned from (when it was)."""
    if routed:
        return [_quality(tasks, meta.test.quality, min_samples, "quality")]
    if "live_quality" in meta.baseline:
        return [_quality(tasks, meta.baseline["live_quality"], min_samples, "live quality")]
    return []


def _escalation(tasks: list[TaskBundle], meta: ArtifactMeta, min_samples: int) -> DriftCheck:
    live = rate(sum(b.climbed for b in tasks), len(tasks))
    calibrated = meta.baseline["escalation_rate"]
    drifted = calibrated < live.low
    return _check("escalation rate", calibrated, live, min_samples, drifted=drifted, unit="tasks")


def _strong_share(tasks: list[TaskBundle], meta: ArtifactMeta, min_samples: int) -> DriftCheck:
    chosen = [b.executors[0].model for b in tasks if b.executors]
    live = rate(sum(model == meta.strongest for model in chosen), len(chosen))
    calibrated = meta.test.strong_share
    drifted = not live.low <= calibrated <= live.high
    return _check(
        "strong share", calibrated, live, min_samples, drifted=drifted, unit="routed tasks"
    )


def _advice(meta: ArtifactMeta, checks: list[DriftCheck]) -> tuple[bool, str]:
    drifted = [c.name for c in checks if c.status == "drift"]
    if drifted:
        return True, (
            f"recalibrate {meta.name}: {', '.join(drifted)} moved beyond the 95% interval "
            f"(`tierwise learn --name {meta.name}`)"
        )
    return False, f"no drift: {meta.label} still matches live traffic"


def check_drift(
    ledger: Ledger, meta: ArtifactMeta, *, since: datetime | None, min_samples: int = 30
) -> DriftReport:
    """Live rates since ``since`` against ``meta``'s calibrated ones (see the module doc)."""
    live = [b for b in load_bundles(ledger, since=since) if b.live and b.executors]
    routed = [b for b in live if _routed_by(b, meta)]
    tasks = routed or live
    if not tasks:
        raise InsufficientDataError(
            f"no tasks in the ledger at {ledger.url} in that window to compare with {meta.label}"
        )
    checks = _quality_check(tasks, meta, min_samples, routed=bool(routed))
    if "escalation_rate" in meta.baseline:
        checks.append(_escalation(tasks, meta, min_samples))
    if routed:
        checks.append(_strong_share(routed, meta, min_samples))
    if not checks:
        raise InsufficientDataError(
            f"nothing to compare: no task in that window was routed by {meta.label}, and it "
            "was not learned from the ledger (`tierwise learn` records a live baseline)"
        )
    if all(check.status == "not enough data" for check in checks):
        details = "; ".join(f"{c.name}: {c.detail}" for c in checks)
        raise InsufficientDataError(f"too little live data to check {meta.label}: {details}")
    recalibrate, advice = _advice(meta, checks)
    scope = f"tasks routed by {meta.name}" if routed else "all live tasks; none routed by it"
    return DriftReport(
        artifact=meta.label,
        since=since,
        scope=scope,
        tasks=len(tasks),
        checks=checks,
        recalibrate=recalibrate,
        advice=advice,
    )
