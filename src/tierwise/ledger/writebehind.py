"""Write-behind for the ledger: records queued in memory, written in batches by one thread.

The gateway's hot path must not wait for a database transaction per record. With write-behind
on, :meth:`WriteBehind.submit` only appends to an in-memory queue; a background thread takes
whatever has accumulated (waiting at most ``linger_s`` for more, up to ``batch_size``) and
writes it in **one transaction**. Order is kept (one queue, one writer).

Nothing is dropped on a database outage: a failed batch stays at the head of the queue and is
retried with a capped exponential backoff while new records keep queueing behind it; the
outage and the recovery are logged once each. ``max_pending`` is the bound: past it
:attr:`WriteBehind.backlogged` turns true (the gateway then refuses new requests with a 503
rather than grow memory without end) — records of requests already running are still taken.
A batch that fails for another reason than an outage (e.g. a constraint or a value the
database refuses) is written record by record, so that one unwritable record (a bug) cannot
block the rest; such a record is logged in full and dropped. :meth:`flush` waits until
everything submitted before it is written; :meth:`close` flushes (retrying until its deadline)
and stops the thread. Records still queued then are handed to ``spill`` when one is given (the
ledger writes them to a spill file, :mod:`tierwise.ledger.spill`, imported at the next start)
instead of being lost.

Records come in groups (one :meth:`WriteBehind.submit`: a task's records) and a batch never
splits one, so a task reaches the database with its calls in one transaction. With a
:class:`~tierwise.ledger.journal.Journal`, each group is appended to it as it is submitted
(the ticket :meth:`WriteBehind.durable` waits on) and the journal learns what was written;
what is still queued at :meth:`close` is in the journal already and is replayed at the next
start instead of spilled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tierwise.errors import LedgerError
from tierwise.ledger.journal import Journal
from tierwise.ledger.records import LedgerRecord

log = logging.getLogger("tierwise.ledger")

Writer = Callable[[Sequence[LedgerRecord]], None]
"""Writes records in one transaction (idempotently: a retried batch may repeat records)."""
Transient = Callable[[LedgerError], bool]
"""Whether a write failed for an outage (unreachable, locked, timed out): retry it later."""
Spill = Callable[[Sequence[Sequence[LedgerRecord]]], str]
"""Keeps the groups of records :meth:`WriteBehind.close` could not write (on disk); says
where, or raises LedgerError."""


@dataclass(frozen=True)
class _Group:
    """The records of one :meth:`WriteBehind.submit`, written in one transaction."""

    records: Sequence[LedgerRecord]
    ticket: int
    """The journal's ticket for it (0 without a journal)."""


@dataclass(frozen=True)
class WriteBehindOptions:
    """How the writer batches and how much it may hold while the database is down."""

    batch_size: int = 1000
    linger_s: float = 0.2
    """How long the writer waits for more records before writing a batch. A short linger
    (0.02 s) meant one thread wake-up and one transaction per request at low rates; a flush,
    a read or a full batch does not wait for it."""
    max_pending: int = 100_000
    """Records held before :attr:`WriteBehind.backlogged` turns true."""
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
    close_timeout_s: float = 30.0
    """How long :meth:`WriteBehind.close` may take in all (retrying, then stopping the
    writer) before giving up (the gateway's ``ledger_close_timeout_s``)."""


class WriteBehind:
    """A queue of ledger records and the thread that writes them in batches."""

    def __init__(
        self,
        write: Writer,
        transient: Transient,
        options: WriteBehindOptions | None = None,
        *,
        spill: Spill | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.options = options or WriteBehindOptions()
        self._write = write
        self._transient = transient
        self._spill = spill
        self.journal = journal
        """Where each group is kept on disk until it is written (None: memory only)."""
        self._queue: deque[_Group] = deque()
        self._queued = 0
        """Records in the queue."""
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        """Records written (or, if unwritable, logged and dropped), in submission order."""
        self._urgent = 0
        """Flushes waiting: the writer skips its linger while any is."""
        self._closing = False
        self._backlog_logged = False
        self.last_error: str | None = None
        """The last write failure while it lasts (``None`` once a batch goes through)."""
        self._thread = threading.Thread(target=self._run, name="tierwise-ledger", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records submitted and not yet written."""
        return self._submitted - self._done

    @property
    def backlogged(self) -> bool:
        """More than ``max_pending`` records wait (the database is down or too slow)."""
        return self.pending >= self.options.max_pending

    def submit(self, records: Sequence[LedgerRecord]) -> int:
        """Queue ``records`` as one group (journaled first, if there is a journal); never
        blocks on the database. The group's ticket for :meth:`durable`."""
        with self._cond:
            if self._closing:
                raise LedgerError("the ledger's writer is closed")
            idle = not self._queue
            ticket = self.journal.append(records) if self.journal else 0
            self._queue.append(_Group(records, ticket))
            self._queued += len(records)
            self._submitted += len(records)
            if idle or self._queued >= self.options.batch_size:
                self._cond.notify_all()  # not on every record: the writer lingers undisturbed
        if self.backlogged and not self._backlog_logged:
            self._backlog_logged = True
            log.error(
                "ledger writer backlogged: %d records held in memory (bound %d): %s",
                self.pending,
                self.options.max_pending,
                self.last_error or "the database is too slow",
            )
        return ticket

    async def durable(self, ticket: int) -> None:
        """Return once group ``ticket`` is fsynced in the journal (at once without one)."""
        if self.journal is not None:
            await self.journal.durable(ticket)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record submitted so far is written; LedgerError on timeout."""
        with self._cond:
            target = self._submitted
            self._urgent += 1
            self._cond.notify_all()
            try:
                if not self._cond.wait_for(lambda: self._done >= target, timeout):
                    raise LedgerError(self._unwritten_message(target - self._done))
            finally:
                self._urgent -= 1

    def close(self) -> None:
        """Flush (retrying) and stop the writer thread, within ``close_timeout_s`` in all.

        Records still unwritten then are spilled when a ``spill`` was given (logged with the
        place and count); otherwise, or if spilling fails, LedgerError says how many are lost.
        """
        deadline = time.monotonic() + self.options.close_timeout_s
        unwritten: LedgerError | None = None
        try:
            self.flush(self.options.close_timeout_s)
        except LedgerError as exc:
            unwritten = exc
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))  # not a second full wait
        with self._cond:  # a writer still stuck in a write keeps its batch here: spill it too
            left = [group.records for group in self._queue]
        if self.journal is not None:
            self._keep_journal(sum(len(group) for group in left))
        elif left and self._spill is not None:
            self._spill_left(left)
        elif unwritten is not None:
            raise unwritten

    def _keep_journal(self, count: int) -> None:
        """Close the journal: what is still unwritten stays in it for the next start."""
        assert self.journal is not None
        kept = self.journal.close()
        if count:
            log.warning(
                "ledger unwritable at shutdown (%s): %d records kept in the journal (%s); "
                "they are replayed at the next start or by `tierwise ledger import-spill`",
                self.last_error or "the writer did not finish",
                count,
                ", ".join(str(path) for path in kept),
            )

    def _spill_left(self, groups: list[Sequence[LedgerRecord]]) -> None:
        """Hand the records the writer could not store to the spill; LedgerError if it fails."""
        count = sum(len(group) for group in groups)
        try:
            where = self._spill(groups) if self._spill else ""
        except LedgerError as exc:
            message = f"{count} ledger records are lost: not written and {exc.message}"
            log.error("%s", message)
            raise LedgerError(message) from exc
        log.warning(
            "ledger unwritable at shutdown (%s): %d records spilled to %s; they are imported "
            "at the next start or by `tierwise ledger import-spill`",
            self.last_error or "the writer did not finish",
            count,
            where,
        )

    def _unwritten_message(self, count: int) -> str:
        reason = f": {self.last_error}" if self.last_error else ""
        return f"{count} ledger records are not written yet{reason}"

    # --- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.options.retry_initial_s
        while batch := self._next_batch():
            if self._write_batch(batch):
                backoff = self.options.retry_initial_s
                continue
            with self._cond:  # keep the batch at the head; wait, unless closing gives up
                if self._cond.wait_for(lambda: self._closing, backoff):
                    return
            backoff = min(backoff * 2, self.options.retry_max_s)

    def _next_batch(self) -> list[_Group]:
        """The whole groups at the head of the queue, up to ``batch_size`` records (at least
        one group), left there until written; [] to stop."""
        limit = self.options.batch_size
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closing)
            if not self._queue:
                return []
            deadline = time.monotonic() + self.options.linger_s
            while self._queued < limit and not self._urgent and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            batch: list[_Group] = []
            size = 0
            for group in self._queue:
                if batch and size + len(group.records) > limit:
                    break
                batch.append(group)
                size += len(group.records)
            return batch

    def _write_batch(self, batch: list[_Group]) -> bool:
        """Write ``batch``; True when it is out of the queue (written or poison dropped)."""
        try:
            self._write([record for group in batch for record in group.records])
        except LedgerError as exc:
            if self._transient(exc):
                self._note_outage(exc)
                return False
            self._write_group_by_group(batch)
        self._note_recovery()
        self._mark_done(batch)
        return True

    def _write_group_by_group(self, batch: list[_Group]) -> None:
        """Each group in its own transaction; a group refused, record by record (a record
        the database refuses, a bug, is logged in full and dropped)."""
        for group in batch:
            try:
                self._write(group.records)
                continue
            except LedgerError:
                pass
            for record in group.records:
                try:
                    self._write([record])
                except LedgerError as exc:
                    log.error("ledger record dropped, it cannot be written (%s): %s", exc, record)

    def _mark_done(self, batch: list[_Group]) -> None:
        count = sum(len(group.records) for group in batch)
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            self._queued -= count
            self._done += count
            if self.journal is not None and batch[-1].ticket:
                self.journal.written(batch[-1].ticket)  # before a flush waiting on it returns
            self._cond.notify_all()

    def _note_outage(self, exc: LedgerError) -> None:
        if self.last_error is None:
            log.warning(
                "ledger unreachable; %d records buffered in memory and retried: %s",
                self.pending,
                exc.message,
            )
        self.last_error = exc.message

    def _note_recovery(self) -> None:
        if self.last_error is not None:
            log.warning("ledger reachable again; writing %d buffered records", self.pending)
            self.last_error = None
        if self._backlog_logged and not self.backlogged:
            self._backlog_logged = False
