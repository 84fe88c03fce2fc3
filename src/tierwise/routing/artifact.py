"""Versioned router artifacts: a fitted predictor (joblib) and its JSON metadata.

Layout: ``<artifacts dir>/<name>/v<N>/{model.joblib, meta.json}``; versions count up from 1
and the latest is used unless one is asked for. The metadata says what the predictor was
trained on (source, data hash, models), how (estimator, embedder, calibration), the
operating point chosen (rule and threshold for a quality target, cost cap or strong share)
and how it did (validation and held-out test figures with bootstrap intervals).

The model file is a pickle: load only artifacts you (or your calibration runs) wrote.
Anything unreadable, tampered with or written by an incompatible version raises one
:class:`~tierwise.errors.ArtifactError` that says which and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from tierwise.config import user_data_dir
from tierwise.errors import ArtifactError

ARTIFACT_FORMAT = 1
MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

T = TypeVar("T")


def default_artifacts_dir() -> Path:
    """Where router artifacts live unless told otherwise."""
    return user_data_dir() / "routers"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


class Interval(BaseModel):
    low: float
    high: float


class SplitFigures(BaseModel):
    """How the chosen operating point did on one split, against all-on-the-strongest."""

    prompts: int
    quality: float
    quality_ci: Interval | None = None
    cost_usd: float
    """Mean dollars per call."""
    cost_ci: Interval | None = None
    relative_quality: float
    """Routed quality / the strongest model's quality."""
    relative_quality_ci: Interval | None = None
    savings: float
    """1 - routed cost / the strongest model's cost."""
    savings_ci: Interval | None = None
    strong_share: float
    strongest_quality: float
    strongest_cost_usd: float


class ArtifactMeta(BaseModel):
    format: int = ARTIFACT_FORMAT
    name: str
    version: int = 0
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    data_hash: str
    models: list[str]
    """Catalog ids (or dataset names) in the predictor's column order."""
    strongest: str
    estimator: str
    embedder: str
    embedder_model: str
    calibration: str
    rule: Literal["target", "lambda", "dollar"]
    threshold: float
    """The target (rule ``target``) or lambda (rule ``lambda``, per unit of relative cost;
    ``dollar``, per the dearest model's mean cost per call, on this prompt's cost)."""
    objective: str
    """What the threshold was chosen for, e.g. ``target-quality 0.95``."""
    seed: int
    resamples: int
    validation: SplitFigures
    test: SplitFigures
    baseline: dict[str, float] = Field(default_factory=dict)
    """Live figures of the ledger the router was learned from (``tierwise learn``), e.g.
    ``escalation_rate`` and ``tasks``: what ``tierwise drift`` compares live traffic with."""
    model_sha256: str = ""
    tierwise_version: str = Field(default_factory=lambda: package_version("tierwise"))
    sklearn_version: str = Field(default_factory=lambda: package_version("scikit-learn"))

    @property
    def label(self) -> str:
        return f"{self.name}@v{self.version}"


class Artifact(BaseModel):
    meta: ArtifactMeta
    path: Path
    payload: Any


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ArtifactError(f"artifact name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def _versions(root: Path, name: str) -> list[int]:
    folder = root / name
    if not folder.is_dir():
        return []
    found = (re.fullmatch(r"v(\d+)", p.name) for p in folder.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_artifact(root: Path, meta: ArtifactMeta, payload: object) -> Artifact:
    """Write ``payload`` and ``meta`` as the next version of ``meta.name``."""
    import joblib  # type: ignore[import-untyped]  # noqa: PLC0415

    name = _check_name(meta.name)
    (root / name).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root / name))
    try:
        joblib.dump(payload, staging / MODEL_FILE, compress=3)
        version = (_versions(root, name) or [0])[-1] + 1
        meta = meta.model_copy(
            update={"version": version, "model_sha256": _sha256(staging / MODEL_FILE)}
        )
        (staging / META_FILE).write_text(meta.model_dump_json(indent=2), "utf-8")
        target = root / name / f"v{version}"
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Artifact(meta=meta, path=target, payload=payload)


def _read_meta(path: Path, label: str) -> ArtifactMeta:
    try:
        raw = json.loads((path / META_FILE).read_text("utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"router artifact {label} is corrupt: {META_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"router artifact {label} is corrupt: {META_FILE}: {exc}") from None
    if isinstance(raw, dict) and raw.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(
            f"router artifact {label} has format {raw.get('format')!r}; this tierwise reads "
            f"format {ARTIFACT_FORMAT}: recalibrate it with `tierwise calibrate`"
        )
    try:
        return ArtifactMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ArtifactError(
            f"router artifact {label} is corrupt: {META_FILE}: {where}: {first['msg']}"
        ) from None


def _check_compatible(meta: ArtifactMeta) -> None:
    built = ".".join(meta.sklearn_version.split(".")[:2])
    here = ".".join(package_version("scikit-learn").split(".")[:2])
    if built != here:
        raise ArtifactError(
            f"router artifact {meta.label} was built with scikit-learn {meta.sklearn_version}, "
            f"this environment has {package_version('scikit-learn')}: recalibrate it"
        )


def _read_payload(path: Path, meta: ArtifactMeta, expected: type[T]) -> T:
    import joblib  # noqa: PLC0415

    model = path / MODEL_FILE
    if not model.is_file() or _sha256(model) != meta.model_sha256:
        raise ArtifactError(
            f"router artifact {meta.label} is corrupt: {MODEL_FILE} is missing or does not "
            "match its recorded checksum; recalibrate it"
        )
    try:
        payload = joblib.load(model)
    except Exception as exc:  # unpickling can fail in any way
        raise ArtifactError(
            f"router artifact {meta.label} cannot be loaded ({type(exc).__name__}: {exc}); "
            "recalibrate it"
        ) from None
    if not isinstance(payload, expected):
        raise ArtifactError(
            f"router artifact {meta.label} holds a {type(payload).__name__}, "
            f"not a {expected.__name__}"
        )
    return payload


def load_artifact(root: Path, name: str, expected: type[T], version: int | None = None) -> Artifact:
    """Version ``version`` (default: the latest) of artifact ``name``, verified."""
    versions = _versions(root, _check_name(name))
    if not versions:
        raise ArtifactError(
            f"no router artifact named {name!r} in {root} (`tierwise routers` lists them)"
        )
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        have = ", ".join(f"v{v}" for v in versions)
        raise ArtifactError(f"router artifact {name!r} has no version {chosen} (has {have})")
    path = root / name / f"v{chosen}"
    meta = _read_meta(path, f"{name}@v{chosen}")
    _check_compatible(meta)
    return Artifact(meta=meta, path=path, payload=_read_payload(path, meta, expected))


def list_artifacts(root: Path) -> list[tuple[ArtifactMeta | None, Path]]:
    """Every version of every artifact under ``root`` (metadata ``None``: unreadable)."""
    rows: list[tuple[ArtifactMeta | None, Path]] = []
    if not root.is_dir():
        return rows
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)):
        for version in _versions(root, folder.name):
            path = folder / f"v{version}"
            try:
                rows.append((_read_meta(path, f"{folder.name}@v{version}"), path))
            except ArtifactError:
                rows.append((None, path))
    return rows
