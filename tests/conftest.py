"""Shared fixtures. The network is closed (pytest-socket, loopback only; see pyproject)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierwise.catalog import Catalog, load_catalog
from tierwise.config import Settings, load_settings

SHARED_DATA = Path(
    os.environ.get("TIERWISE_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data")
)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep every test out of the real user config, data and cache directories."""
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in list(os.environ):
        if var.startswith("TIERWISE_") or var.endswith("_API_KEY"):
            monkeypatch.delenv(var, raising=False)
    yield


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set TIERWISE_SHARED_DATA)")
    return SHARED_DATA
