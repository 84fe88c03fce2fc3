"""Spill files: ledger records the write-behind could not store before shutdown, on disk.

When the database stays unreachable past :meth:`~tierwise.ledger.writebehind.WriteBehind.close`'s
deadline, the records still queued are written to a JSON-lines file in the spill directory
rather than lost: a header line (format, the ledger's URL with its password masked, the
count), then one line per record, ``{"type": "CallRecord", "record": {...}}``, serialised by
the record's own pydantic model (Decimal costs as exact strings, timestamps with their zone).
Each file is written under a hidden temporary name, fsynced, then renamed to a unique
``spill-<UTC time>-<pid>-<random>.jsonl`` (and the directory fsynced), so a reader never sees
half a file.

:func:`import_spills` reads them back (``Ledger.import_spills``; the gateway does it at
start-up): records keep their ids and the write skips ids already stored, so a second import,
or a record that reached the database after all, stores each record once. A record the
database refuses for good (an integrity or data error, not an outage) goes to the side file
``<file>.rejected`` — the spill format, each line with the ``reason`` too (renamed to
``spill-*.jsonl`` it can be imported again) — and the rest of its file is written. A file is
removed once each of its records is written or set aside; a file that cannot be parsed, that
belongs to another ledger or that meets an outage (connection lost, database locked) is kept
and reported, for the next try.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from tierwise.errors import LedgerError
from tierwise.ledger.records import LedgerRecord

FORMAT = "tierwise-ledger-spill/1"
PATTERN = "spill-*.jsonl"
IMPORT_BATCH = 1000
"""Records written per transaction on import."""

_TYPES: dict[str, type[LedgerRecord]] = {cls.__name__: cls for cls in get_args(LedgerRecord)}

Write = Callable[[Sequence[LedgerRecord]], None]
Outage = Callable[[LedgerError], bool]
"""Whether a write's error is an outage (retry later), not the database refusing the data."""
Rejection = tuple[LedgerRecord, str]
"""A record the database refuses, and why."""


@dataclass(frozen=True)
class SpillFile:
    """One spill file read back: the ledger it was meant for and its records, in order."""

    path: Path
    ledger: str
    records: list[LedgerRecord]
    groups: list[int] = field(default_factory=list)
    """Each record's group (one task's records, written in one transaction); empty for a
    file written without them."""


@dataclass(frozen=True)
class Rejected:
    """The records of spill file ``path`` the database refused, set aside in ``side``."""

    path: Path
    side: Path
    count: int
    reason: str
    """The first record's reason (each record's is in the side file)."""


@dataclass
class SpillImport:
    """What an import did: files imported (and removed) with the records written, records
    set aside, files kept."""

    imported: list[tuple[Path, int]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)
    """Each file left in place and why (unreadable, another ledger, an outage)."""

    @property
    def records(self) -> int:
        return sum(count for _, count in self.imported)

    @property
    def rejected_records(self) -> int:
        return sum(rejected.count for rejected in self.rejected)


# --- writing -------------------------------------------------------------------------------


def write_spill(
    directory: Path, records: Sequence[LedgerRecord], ledger: str, *, sizes: Sequence[int] = ()
) -> Path:
    """Write ``records`` to a new spill file in ``directory``; LedgerError if that fails.
    ``sizes``: how many records each group holds, in order (a group is imported in one
    transaction); none: no groups."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    final = directory / f"spill-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    groups = [number for number, size in enumerate(sizes) for _ in range(size)]
    marks = [f', "group": {g}' for g in groups] if groups else [""] * len(records)
    rows = [(r, None) for r in records]
    _write_durably(final, _lines(rows, ledger, marks), "a ledger spill file")
    return final


def group_sizes(groups: Sequence[Sequence[LedgerRecord]]) -> tuple[list[LedgerRecord], list[int]]:
    """``groups`` as one list of records and each group's size (for :func:`write_spill`)."""
    return [record for group in groups for record in group], [len(group) for group in groups]


def _write_durably(final: Path, lines: Iterator[str], what: str) -> None:
    """``lines`` to ``final``: a hidden temporary file, fsynced, renamed (the directory too)."""
    directory = final.parent
    partial = directory / f".{final.name}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with partial.open("w", encoding="utf-8") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(final)
        fsync_dir(directory)
    except OSError as exc:
        with suppress(OSError):
            partial.unlink(missing_ok=True)
        raise LedgerError(f"cannot write {what} in {directory}: {exc}") from exc


def _lines(
    records: Sequence[tuple[LedgerRecord, str | None]], ledger: str, marks: Sequence[str] = ()
) -> Iterator[str]:
    """The header, then each record (with its ``reason`` when it has one, and its mark)."""
    header = {"format": FORMAT, "ledger": ledger, "count": len(records)}
    yield json.dumps(header) + "\n"
    for (record, reason), mark in zip(records, marks or [""] * len(records), strict=True):
        why = "" if reason is None else f', "reason": {json.dumps(reason)}'
        yield f"{record_row(record)[:-1]}{why}{mark}}}\n"


def fsync_dir(directory: Path) -> None:
    """Make a rename or an unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading and importing ------------------------------------------------------------------


def spill_files(directory: Path) -> list[Path]:
    """The spill files in ``directory``, oldest first (none if it does not exist)."""
    return sorted(directory.glob(PATTERN)) if directory.is_dir() else []


def read_spill(path: Path) -> SpillFile:
    """A spill file's records; LedgerError naming the line when it is not one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read ledger spill file {path}: {exc}") from exc
    if not lines:
        raise LedgerError(f"ledger spill file {path} is empty")
    header = _header(path, lines[0])
    rows = [_record(path, number, line) for number, line in enumerate(lines[1:], start=2)]
    if len(rows) != header["count"]:
        raise LedgerError(
            f"ledger spill file {path} holds {len(rows)} records, "
            f"its header says {header['count']} (truncated?)"
        )
    groups = [group for _, group in rows]
    return SpillFile(
        path,
        str(header["ledger"]),
        [record for record, _ in rows],
        [g for g in groups if g is not None] if None not in groups else [],
    )


def _header(path: Path, line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LedgerError(f"ledger spill file {path}: line 1 is not a {FORMAT} header")
    if not isinstance(header.get("count"), int) or not isinstance(header.get("ledger"), str):
        raise LedgerError(f"ledger spill file {path}: line 1 lacks the ledger or the count")
    return header


def _record(path: Path, number: int, line: str) -> tuple[LedgerRecord, int | None]:
    """The record on a line, and its group if it has one."""
    where = f"ledger spill file {path}, line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"{where}: not JSON ({exc.msg})") from None
    group = row.get("group") if isinstance(row, dict) else None
    return parse_row(where, row), group if isinstance(group, int) else None


def record_row(record: LedgerRecord) -> str:
    """``record`` as a spill or journal row: ``{"type": …, "record": {…}}`` (no newline)."""
    return f'{{"type": "{type(record).__name__}", "record": {record.model_dump_json()}}}'


def parse_row(where: str, row: object) -> LedgerRecord:
    """The record a decoded row holds; LedgerError (naming ``where``) if it holds none."""
    kind = _TYPES.get(row.get("type", "")) if isinstance(row, dict) else None
    if kind is None or not isinstance(row, dict) or not isinstance(row.get("record"), dict):
        raise LedgerError(f"{where}: not a ledger record")
    try:
        return kind.model_validate(row["record"])
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(part) for part in first["loc"])
        raise LedgerError(f"{where}: {field_name}: {first['msg']}") from None


def import_spills(
    directory: Path, ledger: str, write: Write, outage: Outage, *, any_ledger: bool = False
) -> SpillImport:
    """Write every spill file of ``directory`` meant for ``ledger`` with ``write``
    (idempotent), setting aside the records the database refuses (``outage`` tells an outage
    from a refusal) and removing each file once done; files of other ledgers are kept unless
    ``any_ledger``."""
    report = SpillImport()
    for path in spill_files(directory):
        try:
            spilled = read_spill(path)
        except LedgerError as exc:
            if path.exists():  # another process may have imported it meanwhile
                report.kept.append((path, exc.message))
            continue
        if spilled.ledger != ledger and not any_ledger:
            other = f"ledger spill file {path} is for the ledger at {spilled.ledger}, not {ledger}"
            report.kept.append((path, other))
            continue
        try:
            refused = write_batches(_batches(spilled), write, outage)
            if refused:
                report.rejected.append(set_aside(spilled, refused))
        except LedgerError as exc:
            report.kept.append((path, f"ledger spill file {path} not imported: {exc.message}"))
            continue
        path.unlink(missing_ok=True)
        fsync_dir(directory)
        report.imported.append((path, len(spilled.records) - len(refused)))
    return report


def _batches(spilled: SpillFile) -> list[list[LedgerRecord]]:
    """The file's records in batches of about :data:`IMPORT_BATCH`, a group never split."""
    records = spilled.records
    if not spilled.groups:
        return [
            records[start : start + IMPORT_BATCH] for start in range(0, len(records), IMPORT_BATCH)
        ]
    groups: list[list[LedgerRecord]] = []
    previous: int | None = None
    for record, group in zip(records, spilled.groups, strict=True):
        if groups and group == previous:
            groups[-1].append(record)
        else:
            groups.append([record])
        previous = group
    return pack(groups, IMPORT_BATCH)


def pack(groups: Sequence[Sequence[LedgerRecord]], size: int) -> list[list[LedgerRecord]]:
    """``groups`` in order, packed into batches of up to ``size`` records without splitting a
    group (one larger than ``size`` is a batch of its own)."""
    batches: list[list[LedgerRecord]] = []
    for group in groups:
        if batches and len(batches[-1]) + len(group) <= size:
            batches[-1].extend(group)
        else:
            batches.append(list(group))
    return batches


def write_batches(
    batches: Sequence[list[LedgerRecord]], write: Write, outage: Outage
) -> list[Rejection]:
    """Write each batch in one transaction; a batch the database refuses is written one by
    one. The records refused; LedgerError on an outage (what was written stays: ids are
    skipped)."""
    refused: list[Rejection] = []
    for batch in batches:
        try:
            write(batch)
        except LedgerError as exc:
            if outage(exc):
                raise
            refused += _write_one_by_one(batch, write, outage)
    return refused


def _write_one_by_one(batch: list[LedgerRecord], write: Write, outage: Outage) -> list[Rejection]:
    refused: list[Rejection] = []
    for record in batch:
        try:
            write([record])
        except LedgerError as exc:
            if outage(exc):
                raise
            refused.append((record, exc.message))
    return refused


def set_aside(spilled: SpillFile, refused: list[Rejection]) -> Rejected:
    """Write ``refused`` to ``<file>.rejected`` (replacing one left by an earlier try)."""
    side = spilled.path.with_name(spilled.path.name + ".rejected")
    _write_durably(side, _lines(refused, spilled.ledger), "a rejected-records file")
    return Rejected(spilled.path, side, len(refused), refused[0][1])
