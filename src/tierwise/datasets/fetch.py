"""Finding a dataset file: a local copy, the cache, or a one-time pinned download."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx2

from tierwise.errors import DatasetError

Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) while downloading."""


class PinnedFile(Protocol):
    """A file known by URL and sha256 (a single-file ``DatasetSource`` or a ``DatasetFile``)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def local_path(self) -> str: ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, source: PinnedFile) -> Path:
    actual = sha256_of(path)
    if actual != source.sha256:
        raise DatasetError(
            f"{path} does not match dataset {source.name}: sha256 {actual[:12]}…, "
            f"expected {source.sha256[:12]}…"
        )
    return path


def _download(source: PinnedFile, target: Path, progress: Progress | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, httpx2.stream("GET", source.url, timeout=60) as reply:
            reply.raise_for_status()
            length = reply.headers.get("content-length")
            total = int(length) if length else None
            for chunk in reply.iter_bytes():
                out.write(chunk)
                if progress:
                    progress(reply.num_bytes_downloaded, total)
        _verified(Path(tmp_name), source)
        os.replace(tmp_name, target)
    except httpx2.HTTPError as exc:
        raise DatasetError(
            f"could not download dataset {source.name} from {source.url}: {exc}"
        ) from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def dataset_file(
    source: PinnedFile,
    *,
    data_dir: Path | None,
    cache_dir: Path,
    progress: Progress | None = None,
) -> Path:
    """The verified local file for ``source``: from ``data_dir`` if given, else the cache,
    downloading it there once (pinned by commit in the URL and checked by sha256)."""
    if data_dir is not None:
        local = data_dir / source.local_path
        if not local.is_file():
            raise DatasetError(f"dataset {source.name} not found at {local}")
        return _verified(local, source)
    cached = cache_dir / "datasets" / f"{source.name}-{source.sha256[:16]}{Path(source.url).suffix}"
    if not cached.is_file():
        _download(source, cached, progress)
    return cached
