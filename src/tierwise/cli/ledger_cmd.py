"""``tierwise ledger``: the ledger's housekeeping (importing spilled records by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tierwise.cli.state import CliState
from tierwise.ledger.store import Ledger

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ledger_app = typer.Typer(help="The ledger's housekeeping.", no_args_is_help=True)

DirArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Folder of spill files (default: the config's ledger_spill_dir).",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]
AnyLedgerOption = Annotated[
    bool,
    typer.Option("--any-ledger", help="Also import files spilled by another ledger URL."),
]


@ledger_app.command("import-spill")
def import_spill(
    ctx: typer.Context, directory: DirArgument = None, any_ledger: AnyLedgerOption = False
) -> None:
    """Store the records a gateway spilled at shutdown (its database was down) or left in
    the journal of a process that is gone (killed), and remove each file once done; a
    record the database refuses goes to <file>.rejected with the reason, the rest is
    stored. Exit 1 if a record is refused or a file kept (unreadable, another ledger, the
    database unreachable: tried again next time). Records already stored are skipped, so
    running it twice is safe."""
    state = ctx.ensure_object(CliState)
    folder = directory or state.settings.resolved_ledger_spill_dir()
    with Ledger.open(state.settings.resolved_ledger_url()) as ledger:
        report = ledger.import_spills(folder, any_ledger=any_ledger)
        where = ledger.url
    for path, count in report.imported:
        out.print(f"imported {count} records from {path}", markup=False)
    for rejected in report.rejected:
        err.print(
            f"rejected: {rejected.count} records of {rejected.path} refused by the database, "
            f"set aside in {rejected.side}: {rejected.reason}",
            markup=False,
        )
    for _path, reason in report.kept:
        err.print(f"kept: {reason}", markup=False)
    files = len(report.imported)
    out.print(
        f"{report.records} records from {files} spill file{'s' * (files != 1)} "
        f"into {where}; {report.rejected_records} rejected; {len(report.kept)} kept",
        markup=False,
    )
    if report.kept or report.rejected:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``tierwise ledger`` to ``app``."""
    app.add_typer(ledger_app, name="ledger")
