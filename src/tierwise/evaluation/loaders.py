"""``load_matrix``: a named dataset or a path, as one :class:`OutcomeMatrix`.

Names: ``routellm-gsm8k``, ``routellm-mmlu``, ``routerbench``, ``routerdc`` — read from a
local copy (``data_dir``, laid out like the shared data folder) or downloaded once into the
cache, pinned by commit and sha256. Paths: a trace JSONL (``tierwise export``), a RouteLLM or
RouterBench CSV, a RouterDC JSON list, or a folder of one of those.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from tierwise.catalog import Catalog, load_catalog
from tierwise.datasets.bundles import (
    ROUTELLM_MODELS,
    ROUTERBENCH_MODELS,
    FileProgress,
    bundle_names,
    get_bundle,
)
from tierwise.errors import DatasetError
from tierwise.evaluation.formats import read_routellm, read_routerbench, read_routerdc, reading
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.evaluation.traces import read_trace_files

CONTAMINATED = "contaminated_prompts.jsonl"


def load_matrix(
    source: str,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    progress: FileProgress | None = None,
    catalog: Catalog | None = None,
) -> OutcomeMatrix:
    """The outcome matrix of a dataset name or of a path (see the module docstring)."""
    catalog = catalog or load_catalog()
    if source in bundle_names():
        return _named(
            source, data_dir=data_dir, cache_dir=cache_dir, progress=progress, catalog=catalog
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder(path, catalog)
    if path.is_file():
        return _file(path, catalog)
    known = ", ".join(bundle_names())
    raise DatasetError(f"no dataset {source!r}: not a known name ({known}) nor an existing path")


def _named(
    name: str,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    progress: FileProgress | None,
    catalog: Catalog,
) -> OutcomeMatrix:
    bundle = get_bundle(name)
    paths = bundle.paths(data_dir=data_dir, cache_dir=cache_dir, progress=progress)
    contaminated = paths.pop("contaminated", None)
    if name == "routellm-gsm8k":
        return read_routellm(
            name,
            [(paths["responses"], "")],
            contaminated=contaminated,
            models=ROUTELLM_MODELS,
            catalog=catalog,
        )
    if name == "routellm-mmlu":
        files = [(path, _subject(path)) for _, path in sorted(paths.items())]
        return read_routellm(
            name, files, contaminated=contaminated, models=ROUTELLM_MODELS, catalog=catalog
        )
    ordered = [path for _, path in sorted(paths.items())]
    if name == "routerbench":
        return read_routerbench(name, ordered, models=ROUTERBENCH_MODELS)
    return read_routerdc(name, ordered)


def _subject(path: Path) -> str:
    return path.stem.removeprefix("mmlu_") if path.stem.startswith("mmlu_") else ""


def _file(path: Path, catalog: Catalog) -> OutcomeMatrix:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_trace_files(path.stem, [path])
    if suffix == ".json":
        return read_routerdc(path.stem, [path])
    if suffix == ".csv":
        return _csv_files(path.stem, [path], catalog)
    raise DatasetError(f"{path}: expected a .jsonl trace file, a .csv or a .json dataset file")


def _folder(path: Path, catalog: Catalog) -> OutcomeMatrix:
    if (path / "routellm_eval").is_dir() or (path / "routerbench_subset_routerdc").is_dir():
        raise DatasetError(
            f"{path} is a data folder: name a dataset ({', '.join(bundle_names())}) "
            "and pass the folder as --data-dir"
        )
    csvs = sorted(path.glob("*.csv")) or sorted(path.glob("responses/*.csv"))
    traces = sorted(p for p in path.glob("*.jsonl") if p.name != CONTAMINATED)
    readers: list[Callable[[], OutcomeMatrix]] = [
        lambda: read_trace_files(path.name, traces),
        lambda: _csv_files(path.name, csvs, catalog),
        lambda: read_routerdc(path.name, sorted(path.glob("*.json"))),
    ]
    for found, read in zip((traces, csvs, list(path.glob("*.json"))), readers, strict=True):
        if found:
            return read()
    raise DatasetError(f"{path} holds no .jsonl traces, .csv or .json dataset files")


def _csv_files(name: str, paths: list[Path], catalog: Catalog) -> OutcomeMatrix:
    if "sample_id" in _header(paths[0]):
        return read_routerbench(name, paths, models=ROUTERBENCH_MODELS)
    contaminated = _near(paths[0], CONTAMINATED)
    files = [(p, _subject(p)) for p in paths]
    return read_routellm(
        name, files, contaminated=contaminated, models=ROUTELLM_MODELS, catalog=catalog
    )


def _header(path: Path) -> list[str]:
    with reading(path), path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _near(path: Path, name: str) -> Path | None:
    """``name`` beside ``path`` or one folder up (RouteLLM's mmlu/responses layout)."""
    for folder in (path.parent, path.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None
