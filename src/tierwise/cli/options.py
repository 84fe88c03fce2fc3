"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="TIERWISE_DATA_DIR",
        help="Local copy of the datasets (e.g. ../shared/data); default: download once.",
    ),
]
