"""The ledger's journal: each group of records on local disk before its answer goes out.

With write-behind the records of a request wait in memory for the writer thread, and a process
killed (``kill -9``, the OOM killer, a crash) loses them. With a journal,
:meth:`Journal.append` first writes the group (one task's records) as one line to this
process's journal file, and :meth:`Journal.durable` waits until an fsync covers it: a flusher
thread fsyncs as soon as a group is pending (after ``sync_interval_s`` more, if set), and one
fsync covers every group appended meanwhile (group commit). The write-behind says what reached
the database (:meth:`Journal.written`); past ``segment_bytes`` the journal moves on to a new
file, and a file whose groups are all in the database is deleted.

Each process writes its own files, ``journal-<UTC time>-<pid>-<random>.jsonl`` (mode 0600,
in a folder it creates 0700: they hold prompts), and holds an exclusive ``flock`` on each
while it lives, so that :func:`replay` (at the next start, by any worker, or ``tierwise
ledger import-spill``) reads only the files of processes that are gone. A file is a header
line (format, the ledger's URL with its password masked), then one line per group,
``{"group": [<spill rows>]}`` (:func:`tierwise.ledger.spill.record_row`). A torn last line
(the process died writing it, its answer unsent) is ignored with a log line; each group is
written in one transaction, ids kept, so a file imported in part before is stored once.

A write that fails while serving (the disk filled up) is undone (the file truncated back) and
logged once: the records stay queued in memory as without a journal, the request is not
failed for it. A journal that cannot be written at all fails at start (:class:`Journal`'s
constructor).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tierwise.errors import LedgerError
from tierwise.ledger import spill
from tierwise.ledger.records import LedgerRecord

log = logging.getLogger("tierwise.ledger")

FORMAT = "tierwise-ledger-journal/1"
PATTERN = "journal-*.jsonl"
MIB = 1024 * 1024


@dataclass(frozen=True)
class JournalOptions:
    """Where the journal is and how it batches (the gateway's ``journal_*`` settings)."""

    directory: Path
    sync_interval_s: float = 0.0
    segment_bytes: int = 4 * MIB
    wait_fsync: bool = True
    """:meth:`Journal.durable` waits for the fsync (False: the write alone, which a killed
    process does not undo; the fsync follows as soon as it can)."""


@dataclass
class _Segment:
    """One journal file this process writes (locked while open)."""

    path: Path
    fd: int
    size: int
    last: int = 0
    """The ticket of the last group written to it (0: none yet)."""


@dataclass
class _Waiter:
    ticket: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the waiter may have been cancelled
        future.set_result(None)


class Journal:
    """This process's journal in ``directory``; LedgerError at once if it cannot be written."""

    @classmethod
    def open(cls, options: JournalOptions, ledger: str) -> Journal:
        return cls(
            options.directory,
            ledger,
            sync_interval_s=options.sync_interval_s,
            segment_bytes=options.segment_bytes,
            wait_fsync=options.wait_fsync,
        )

    def __init__(
        self,
        directory: Path,
        ledger: str,
        *,
        sync_interval_s: float = 0.0,
        segment_bytes: int = 4 * MIB,
        wait_fsync: bool = True,
    ) -> None:
        self.directory = directory
        self._wait_fsync = wait_fsync
        self._ledger = ledger
        self._sync_interval_s = sync_interval_s
        self._segment_bytes = segment_bytes
        self._current = self._new_segment()
        self._sealed: list[_Segment] = []
        """Segments moved on from, fsynced, deleted once their groups are written."""
        self._cond = threading.Condition()
        self._appended = 0
        self._synced = 0
        self._written = 0
        self._waiters: list[_Waiter] = []
        self._closing = False
        self._closed = False
        self._failing = False
        self.fsyncs = 0
        """fsyncs made (groups appended / fsyncs: the group commit's batching)."""
        self._thread = threading.Thread(target=self._run, name="tierwise-journal", daemon=True)
        self._thread.start()

    @property
    def path(self) -> Path:
        """The file appended to now."""
        return self._current.path

    def append(self, records: Sequence[LedgerRecord]) -> int:
        """Write ``records`` as one group; its ticket for :meth:`durable` and :meth:`written`.

        Once this returns the group survives the process being killed; after
        :meth:`durable` it survives the machine going down too.
        """
        line = _group_line(records)
        with self._cond:
            if self._closing:
                raise LedgerError("the ledger's journal is closed")
            self._appended += 1
            self._write(self._current, line)
            self._cond.notify()
            return self._appended

    async def durable(self, ticket: int) -> None:
        """Return once group ``ticket`` is fsynced (at once if it is already, or when this
        journal does not wait for its fsyncs)."""
        with self._cond:
            if self._synced >= ticket or self._closing or not self._wait_fsync:
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(ticket, loop, loop.create_future())
            self._waiters.append(waiter)
        await waiter.future

    def wait_durable(self, ticket: int, timeout: float | None = None) -> bool:
        """Block until group ``ticket`` is fsynced; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._synced >= ticket, timeout)

    def written(self, ticket: int) -> None:
        """Groups up to ``ticket`` are in the database: delete the sealed files they fill."""
        with self._cond:
            if self._closed:  # a writer finishing late: the files are closed or kept already
                return
            self._written = max(self._written, ticket)
            done = [s for s in self._sealed if s.last <= self._written]
            self._sealed = [s for s in self._sealed if s.last > self._written]
        for segment in done:
            _delete(segment)

    def close(self) -> list[Path]:
        """fsync what is pending, stop the flusher, delete the files whose groups are all
        written; the files kept (replayed at the next start)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._closed = True
            segments, written = [*self._sealed, self._current], self._written
        self._wake(self._waiters)
        kept: list[Path] = []
        for segment in segments:
            if segment.last <= written:
                _delete(segment)
            else:
                os.close(segment.fd)
                kept.append(segment.path)
        return kept

    # --- writing ------------------------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.directory / f"journal-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        header = json.dumps({"format": FORMAT, "ledger": self._ledger, "pid": os.getpid()})
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise LedgerError(
                f"cannot write the ledger journal in {self.directory}: {exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            segment = _Segment(path, fd, 0)
            _write_fully(fd, f"{header}\n".encode())
            os.fsync(fd)
            spill.fsync_dir(self.directory)
        except OSError as exc:
            os.close(fd)
            with suppress(OSError):
                path.unlink()
            raise LedgerError(f"cannot write the ledger journal {path}: {exc}") from exc
        segment.size = os.fstat(fd).st_size
        return segment

    def _write(self, segment: _Segment, line: bytes) -> None:
        """Append ``line``; a failure is undone and logged (once until a write succeeds)."""
        try:
            _write_fully(segment.fd, line)
        except OSError as exc:
            with suppress(OSError):
                os.ftruncate(segment.fd, segment.size)  # no torn line before the next one
            if not self._failing:
                self._failing = True
                log.error(
                    "ledger journal %s unwritable, records held in memory only until it "
                    "works again: %s",
                    segment.path,
                    exc,
                )
            return
        segment.size += len(line)
        segment.last = self._appended
        if self._failing:
            self._failing = False
            log.warning("ledger journal %s writable again", segment.path)

    # --- the flusher thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._appended > self._synced or self._closing)
                if self._appended == self._synced:
                    return  # closing, nothing pending
                closing = self._closing
            if self._sync_interval_s and not closing:
                time.sleep(self._sync_interval_s)  # more groups share this fsync
            self._sync_once()

    def _sync_once(self) -> None:
        with self._cond:
            target, segment = self._appended, self._current
        self._fsync(segment)
        if segment.size >= self._segment_bytes and not self._closing:
            target = self._move_on(segment) or target
        with self._cond:
            self._synced = max(self._synced, target)
            ready = [w for w in self._waiters if w.ticket <= self._synced]
            self._waiters = [w for w in self._waiters if w.ticket > self._synced]
            self._cond.notify_all()
        self._wake(ready)

    def _move_on(self, segment: _Segment) -> int | None:
        """Start a new file; the old one is sealed. The ticket fsynced now (None: kept on)."""
        try:
            fresh = self._new_segment()
        except LedgerError as exc:
            log.error("%s; appending to %s meanwhile", exc, segment.path)
            return None
        with self._cond:
            self._current = fresh
            target = self._appended
        self._fsync(segment)  # the groups appended since the first fsync
        with self._cond:
            if segment.last <= self._written:
                done = True
            else:
                done = False
                self._sealed.append(segment)
        if done:
            _delete(segment)
        return target

    def _fsync(self, segment: _Segment) -> None:
        try:
            os.fsync(segment.fd)
        except OSError as exc:
            log.error("ledger journal %s: fsync failed: %s", segment.path, exc)
        self.fsyncs += 1

    @staticmethod
    def _wake(waiters: list[_Waiter]) -> None:
        for waiter in waiters:
            with suppress(RuntimeError):  # its loop is closed: nobody waits any more
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)


def check_writable(directory: Path) -> None:
    """Create ``directory`` and write, fsync and remove a file in it; LedgerError if any
    step fails (a read-only or full disk): ``tierwise serve`` says so before it starts."""
    probe = directory / f".journal-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with probe.open("wb") as out:
            out.write(b"x" * 4096)
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()
    except OSError as exc:
        with suppress(OSError):
            probe.unlink()
        raise LedgerError(f"cannot write the ledger journal in {directory}: {exc}") from exc


def _group_line(records: Sequence[LedgerRecord]) -> bytes:
    rows = ", ".join(spill.record_row(record) for record in records)
    return f'{{"group": [{rows}]}}\n'.encode()


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _delete(segment: _Segment) -> None:
    """Remove a journal file whose groups are all in the database (lock released last)."""
    with suppress(OSError):
        segment.path.unlink()
    os.close(segment.fd)


# --- replay ---------------------------------------------------------------------------------


def journal_files(directory: Path) -> list[Path]:
    """The journal files in ``directory``, oldest first (none if it does not exist)."""
    return sorted(directory.glob(PATTERN)) if directory.is_dir() else []


def replay(
    directory: Path,
    ledger: str,
    write: spill.Write,
    outage: spill.Outage,
    *,
    any_ledger: bool = False,
) -> spill.SpillImport:
    """Write the groups of every journal in ``directory`` no live process holds, one
    transaction per batch of whole groups (idempotent), and remove each file once done; as
    :func:`tierwise.ledger.spill.import_spills` does with spill files."""
    report = spill.SpillImport()
    for path in journal_files(directory):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # imported and removed by another process meanwhile
        try:
            if _take(fd):
                _replay_one(path, ledger, (write, outage), any_ledger, report)
        finally:
            os.close(fd)
    return report


def _take(fd: int) -> bool:
    """Lock a journal file for replay: False if its process lives or it is gone already."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return os.fstat(fd).st_nlink > 0


def _replay_one(
    path: Path,
    ledger: str,
    writer: tuple[spill.Write, spill.Outage],
    any_ledger: bool,
    report: spill.SpillImport,
) -> None:
    write, outage = writer
    try:
        meant_for, groups = read_journal(path)
    except LedgerError as exc:
        report.kept.append((path, exc.message))
        return
    if meant_for not in (ledger, None) and not any_ledger:
        other = f"ledger journal {path} is for the ledger at {meant_for}, not {ledger}"
        report.kept.append((path, other))
        return
    records = [record for group in groups for record in group]
    try:
        refused = spill.write_batches(spill.pack(groups, spill.IMPORT_BATCH), write, outage)
        if refused:
            report.rejected.append(
                spill.set_aside(spill.SpillFile(path, meant_for or ledger, records), refused)
            )
    except LedgerError as exc:
        report.kept.append((path, f"ledger journal {path} not replayed: {exc.message}"))
        return
    path.unlink(missing_ok=True)
    spill.fsync_dir(path.parent)
    report.imported.append((path, len(records) - len(refused)))


def read_journal(path: Path) -> tuple[str | None, list[list[LedgerRecord]]]:
    """A journal's ledger (None: its header is torn, nothing in it) and its groups in order;
    LedgerError naming the line when a line other than a torn last one is not a group."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise LedgerError(f"cannot read ledger journal {path}: {exc}") from exc
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline, as each complete line does
    if torn:
        log.warning(
            "ledger journal %s: ignored a torn last line of %d bytes (its process died "
            "writing it, before its answer was sent)",
            path,
            len(torn.encode()),
        )
    if not lines:
        return None, []
    ledger = _journal_header(path, lines[0])
    groups = [_group(path, number, line) for number, line in enumerate(lines[1:], start=2)]
    return ledger, groups


def _journal_header(path: Path, line: str) -> str:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise LedgerError(f"ledger journal {path}: line 1 is not a {FORMAT} header")
    if not isinstance(header.get("ledger"), str):
        raise LedgerError(f"ledger journal {path}: line 1 lacks the ledger")
    return str(header["ledger"])


def _group(path: Path, number: int, line: str) -> list[LedgerRecord]:
    where = f"ledger journal {path}, line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"{where}: not JSON ({exc.msg})") from None
    rows = row.get("group") if isinstance(row, dict) else None
    if not isinstance(rows, list):
        raise LedgerError(f"{where}: not a group of ledger records")
    return [spill.parse_row(where, item) for item in rows]
