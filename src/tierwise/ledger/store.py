"""The ledger: an append-only record of every model call and every decision.

``Ledger.open(url)`` connects (SQLite by default, PostgreSQL by URL), migrates the schema to
the newest revision and hands back a ledger that can only ``append`` and read — there is no
update or delete. The API is synchronous and thread-safe (the async engine calls it through a
thread): every operation checks a connection out of SQLAlchemy's pool for its own
transaction. Every database failure surfaces as a one-line :class:`~tierwise.errors.LedgerError`
whose URL has its password masked.

SQLite runs in WAL mode with a busy timeout, and tierwise issues ``BEGIN`` itself (``BEGIN
IMMEDIATE`` for writes) so that migrations are transactional and concurrent writers queue
instead of failing.

With write-behind on and a spill directory given, records the writer still holds when it is
closed (the database down past its deadline) go to a spill file there; the next
:meth:`Ledger.start_write_behind` with that directory imports them first
(:mod:`tierwise.ledger.spill`). With a journal too (:mod:`tierwise.ledger.journal`), each
group of records is also on local disk before :meth:`Ledger.append_durably` returns, and the
journals of processes that are gone are replayed at start.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from alembic.util import CommandError
from platformdirs import user_data_dir
from pydantic import BaseModel
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    create_engine,
    event,
    insert,
    make_url,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import StaticPool

from tierwise.errors import LedgerError
from tierwise.ledger import journal, migrate, spill
from tierwise.ledger.journal import Journal
from tierwise.ledger.records import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    LedgerRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.schema import record_columns, table_for, tasks
from tierwise.ledger.writebehind import Spill, WriteBehind, WriteBehindOptions

R = TypeVar("R", bound=BaseModel)
log = logging.getLogger("tierwise.ledger")

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 10
_WRITE = "tierwise_write"
_POSTGRES_HINT = " (PostgreSQL needs: pip install 'tierwise[postgres]')"
_URL_HINT = "expected sqlite:///path/to/ledger.db or postgresql://user@host/db"
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*):[^@/]*@")
_OUTAGES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)
READ_FLUSH_TIMEOUT_S = 10.0
"""With write-behind on, a read first waits this long at most for queued records."""


def default_ledger_url() -> str:
    """The default ledger: ``ledger.db`` in the user's data directory for tierwise."""
    path = Path(user_data_dir("tierwise")) / "ledger.db"
    return f"sqlite:///{path.as_posix()}"


def normalize_url(url: str) -> URL:
    """``url`` parsed; ``postgresql://`` and ``postgres://`` use the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerError(f"invalid ledger URL {mask_password(url)!r}: {_URL_HINT}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def mask_password(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD_IN_URL.sub(r"\1:***@", url)


def one_line(exc: BaseException, secret: str | None = None) -> str:
    """The reason a database error gives, on one line, without ``secret``."""
    cause = getattr(exc, "orig", None) or exc
    reason = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())
    reason = reason or type(cause).__name__
    return reason.replace(secret, "***") if secret else reason


class Ledger:
    """An append-only ledger in a SQL database; build it with :meth:`open`."""

    def __init__(self, engine: Engine, display_url: str) -> None:
        self._engine: Engine | None = engine
        self._secret = engine.url.password
        self._serial: AbstractContextManager[Any] = (
            threading.Lock() if isinstance(engine.pool, StaticPool) else nullcontext()
        )
        self.url = display_url
        """The database URL with its password masked, for messages."""
        self._behind: WriteBehind | None = None

    @classmethod
    def open(cls, url: str) -> Ledger:
        """Connect to ``url`` and migrate its schema to the newest revision."""
        shown = mask_password(url)
        ledger = cls(_create_engine(normalize_url(url), shown), shown)
        try:
            ledger._migrate()
        except LedgerError:
            ledger.close()
            raise
        return ledger

    def append(self, *records: LedgerRecord) -> None:
        """Store ``records`` in one transaction: all of them or, on error, none.

        With write-behind on (:meth:`start_write_behind`) they are queued instead and written
        in batches by a background thread; reads through this ledger wait for them first.
        """
        if self._behind is not None:
            for record in records:
                table_for(type(record))  # only records: TypeError here, not in the writer
            self._behind.submit(records)
            return
        self._append_now(records)

    async def append_durably(self, records: Sequence[LedgerRecord]) -> None:
        """Store ``records`` in one transaction, returning once they survive this process
        being killed: written (off the event loop), or with write-behind queued as one group
        and, with a journal, fsynced there. Without a journal, queued is all."""
        if self._behind is None:
            await asyncio.to_thread(self._append_now, records)
            return
        for record in records:
            table_for(type(record))
        await self._behind.durable(self._behind.submit(records))

    def _append_now(self, records: Sequence[LedgerRecord]) -> None:
        rows = _rows_by_table(records)
        if not rows:
            return
        with self._connection("could not write to the ledger", write=True) as conn:
            for table, batch in rows.items():
                conn.execute(insert(table), batch)

    def read(
        self,
        record_type: type[R],
        *,
        task_ids: Collection[str] | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[R]:
        """Records of one type, oldest first.

        ``task_ids`` keeps the records of those tasks (for tasks: those ids); ``since`` keeps
        records created at or after it; ``limit`` keeps the newest ``limit`` of them.
        """
        stmt = _select(table_for(record_type), task_ids, since, limit)
        self.flush(READ_FLUSH_TIMEOUT_S)
        with self._connection("could not read the ledger") as conn:
            rows = conn.execute(stmt).mappings().all()
        records = [record_type.model_validate(dict(row)) for row in rows]
        return records if limit is None else records[::-1]

    def tasks(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[TaskRecord]:
        """Tasks, oldest first (see :meth:`read` for the filters)."""
        return self.read(TaskRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def calls(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[CallRecord]:
        """Model calls, oldest first (see :meth:`read` for the filters)."""
        return self.read(CallRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def decisions(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[DecisionRecord]:
        """Routing decisions, oldest first (see :meth:`read` for the filters)."""
        return self.read(DecisionRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def escalations(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[EscalationRecord]:
        """Escalations, oldest first (see :meth:`read` for the filters)."""
        return self.read(EscalationRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def gate_results(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[GateRecord]:
        """Gate results, oldest first (see :meth:`read` for the filters)."""
        return self.read(GateRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def outcomes(
        self, task_id: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[OutcomeRecord]:
        """Task outcomes, oldest first (see :meth:`read` for the filters)."""
        return self.read(OutcomeRecord, task_ids=_ids(task_id), since=since, limit=limit)

    def transaction(
        self, action: str, *, write: bool = False
    ) -> AbstractContextManager[Connection]:
        """A connection in its own transaction, for tables beside the records (API keys).

        It does not wait for write-behind records: call :meth:`flush` first to see them.
        """
        return self._connection(action, write=write)

    # --- write-behind ---------------------------------------------------------------------

    def start_write_behind(
        self,
        options: WriteBehindOptions | None = None,
        *,
        spill_dir: Path | None = None,
        journal_options: journal.JournalOptions | None = None,
    ) -> None:
        """Queue appends and write them in batches from a background thread (the gateway).

        With ``spill_dir``, the spill files there are imported first (a failure is logged,
        the files kept) and records unwritten at :meth:`close` are spilled there. With
        ``journal_options``, the journals of gone processes in its directory are replayed
        first, then this process's journal is opened (LedgerError if it cannot be written);
        records unwritten at :meth:`close` stay in it instead of being spilled.
        """
        if self._behind is not None:
            return
        folders = [spill_dir] if spill_dir is not None else []
        if journal_options is not None and journal_options.directory not in folders:
            folders.append(journal_options.directory)
        for folder in folders:
            self._import_at_start(folder)
        kept: Journal | None = None
        if journal_options is not None:
            kept = Journal.open(journal_options, self.url)
        keep: Spill | None = None
        if spill_dir is not None and kept is None:
            keep = lambda groups: self._spill(spill_dir, groups)  # noqa: E731
        self._behind = WriteBehind(self._append_batch, is_outage, options, spill=keep, journal=kept)

    def _spill(self, directory: Path, groups: Sequence[Sequence[LedgerRecord]]) -> str:
        records, sizes = spill.group_sizes(groups)
        return str(spill.write_spill(directory, records, self.url, sizes=sizes))

    def import_spills(self, directory: Path, *, any_ledger: bool = False) -> spill.SpillImport:
        """Store the records of the spill files and of the journals of gone processes in
        ``directory`` (once each, ids kept; a task's records in one transaction), set aside
        those the database refuses (``<file>.rejected``) and remove each file once done; a
        file meeting an outage is kept, as are files of another ledger unless ``any_ledger``."""
        found = spill.import_spills(
            directory, self.url, self._append_batch, is_outage, any_ledger=any_ledger
        )
        replayed = journal.replay(
            directory, self.url, self._append_batch, is_outage, any_ledger=any_ledger
        )
        found.imported += replayed.imported
        found.rejected += replayed.rejected
        found.kept += replayed.kept
        return found

    def _import_at_start(self, directory: Path) -> None:
        found = self.import_spills(directory)
        for path, count in found.imported:
            if count:  # a journal left by a killed process may hold none
                log.warning("ledger: imported %d unwritten records from %s", count, path)
        for rejected in found.rejected:
            log.error(
                "ledger: %d spilled records of %s refused by the database, set aside in %s: %s",
                rejected.count,
                rejected.path,
                rejected.side,
                rejected.reason,
            )
        for _path, reason in found.kept:
            log.error("%s (kept)", reason)

    def stop_write_behind(self) -> None:
        """Write everything queued and go back to writing on :meth:`append`."""
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.close()

    @property
    def write_behind(self) -> WriteBehind | None:
        """The write-behind queue while it is on (its ``pending``, ``backlogged`` …)."""
        return self._behind

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is written (no-op without write-behind)."""
        if self._behind is not None:
            self._behind.flush(timeout)

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self._connection("could not read the ledger") as conn:
            return migrate.current_revision(conn)

    def close(self) -> None:
        """Write what is queued, release the connections; further use raises LedgerError."""
        try:
            self.stop_write_behind()
        finally:
            self._dispose()

    def _dispose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def _append_batch(self, records: Sequence[LedgerRecord]) -> None:
        """The writer's append: one transaction; records already stored are skipped."""
        with self._connection("could not write to the ledger", write=True) as conn:
            for table, batch in _rows_by_table(records).items():
                conn.execute(_insert_new(table, conn.dialect.name), batch)

    def _migrate(self) -> None:
        try:
            with self._connection("ledger migration failed", write=True) as conn:
                migrate.upgrade(conn)
        except CommandError as exc:
            raise LedgerError(f"ledger migration failed at {self.url}: {one_line(exc)}") from exc

    @contextmanager
    def _connection(self, action: str, *, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction; database errors become one-line LedgerErrors."""
        engine = self._engine
        if engine is None:
            raise LedgerError(f"the ledger at {self.url} is closed")
        with self._serial:
            conn = self._connect(engine)
            with (
                conn,
                self._translated(action),
                conn.execution_options(**{_WRITE: write}).begin(),
            ):
                yield conn

    def _connect(self, engine: Engine) -> Connection:
        with self._translated("ledger database unreachable"):
            return engine.connect()

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, OverflowError) as exc:  # sqlite3: an integer past 64 bits
            raise LedgerError(f"{action} at {self.url}: {one_line(exc, self._secret)}") from exc


def _ids(task_id: str | None) -> list[str] | None:
    return None if task_id is None else [task_id]


def is_outage(error: LedgerError) -> bool:
    """Whether ``error`` came from the database being unreachable, locked or timing out."""
    return isinstance(error.__cause__, _OUTAGES)


def _insert_new(table: Table, dialect: str) -> Insert:
    """An insert that skips rows whose ``id`` is stored already (a retried batch)."""
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    return insert(table)


def _rows_by_table(records: Sequence[LedgerRecord]) -> Mapping[Table, list[dict[str, Any]]]:
    rows: dict[Table, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        table, fields = _table_and_fields(type(record))
        rows[table].append(record.model_dump(include=fields))
    return rows


@cache
def _table_and_fields(record_type: type[BaseModel]) -> tuple[Table, set[str]]:
    """A record type's table and the fields its columns hold (worked out once per type; the
    set is shared, read only)."""
    table = table_for(record_type)
    return table, {column.name for column in record_columns(table)}


def _select(
    table: Table, task_ids: Collection[str] | None, since: datetime | None, limit: int | None
) -> Select[Any]:
    stmt = select(*record_columns(table))
    if task_ids is not None:
        key = table.c.id if table is tasks else table.c.task_id
        stmt = stmt.where(key.in_(list(task_ids)))
    if since is not None:
        stmt = stmt.where(table.c.created_at >= since)
    if limit is None:
        return stmt.order_by(table.c.created_at, table.c.seq)
    return stmt.order_by(table.c.created_at.desc(), table.c.seq.desc()).limit(limit)


def _create_engine(url: URL, display_url: str) -> Engine:
    """An engine for ``url``; a missing driver or folder is a LedgerError."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        return create_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))
    except (ArgumentError, NoSuchModuleError, ImportError, OSError) as exc:
        hint = _POSTGRES_HINT if url.get_backend_name() == "postgresql" else ""
        raise LedgerError(
            f"cannot open the ledger at {display_url}: {one_line(exc)}{hint}"
        ) from exc


def _connect_args(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        return {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
    return {}


def _sqlite_engine(url: URL) -> Engine:
    """A SQLite engine: parent folder created, WAL, busy timeout, our own BEGIN."""
    memory = url.database in (None, "", ":memory:")
    if not memory and "uri" not in url.query:
        Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = create_engine(url, connect_args={"check_same_thread": False}, **options)
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # tierwise emits BEGIN itself (_on_sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
