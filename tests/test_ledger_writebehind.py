"""Write-behind ledger on real databases: batching, flush on read and close, outages, poison.

Outages are real: SQLite is locked by another connection; PostgreSQL is reached through a
loopback relay (tests/fakes/tcp_proxy.py) that is cut and restored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.tcp_proxy import TcpProxy
from tests.gateway_harness import gateway_settings, running_gateway
from tests.test_cli import tierwise
from tests.test_ledger import _admin, postgres_url
from tierwise.config import load_settings
from tierwise.errors import ConfigError, LedgerError
from tierwise.ledger import CallRecord, Ledger, OutcomeRecord, TaskRecord, spill
from tierwise.ledger import store as ledger_store
from tierwise.ledger.writebehind import WriteBehind, WriteBehindOptions

__all__ = ["postgres_url"]  # a fixture, used by name

FAST_RETRY = WriteBehindOptions(retry_initial_s=0.02, retry_max_s=0.1, close_timeout_s=10)


def _calls(count: int, task_id: str = "t") -> list[CallRecord]:
    return [
        CallRecord(task_id=task_id, provider="p", model="p:m", input_tokens=i, cost_usd=Decimal(i))
        for i in range(count)
    ]


def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll for a state (not a duration): fail if it never comes."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    with _pg_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


class _pg_schema:
    """A fresh PostgreSQL schema (dropped afterwards); ``port`` reroutes through a relay."""

    def __init__(self, base: str, port: int | None = None) -> None:
        self.base, self.port = base, port
        self.schema = f"tierwise_wb_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        _admin(self.base, "CREATE SCHEMA {}", self.schema)
        base = self.base if self.port is None else self.base.replace(":5432/", f":{self.port}/")
        return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{self.schema}"

    def __exit__(self, *exc: object) -> None:
        _admin(self.base, "DROP SCHEMA {} CASCADE", self.schema)


# --- batching and visibility ---------------------------------------------------------------


def test_queued_records_are_written_in_batches_one_transaction_each(sqlite_url: str) -> None:
    batches: list[int] = []
    with Ledger.open(sqlite_url) as ledger:

        def write(records) -> None:
            batches.append(len(records))
            ledger.append(*records)  # one transaction per call

        behind = WriteBehind(write, ledger_store.is_outage, WriteBehindOptions(batch_size=100))
        for record in _calls(250):
            behind.submit([record])  # a group of one each
        behind.flush(10)
        behind.close()
        assert batches == [100, 100, 50]
        assert [c.input_tokens for c in ledger.calls()] == list(range(250))


def test_a_batch_never_splits_a_group(sqlite_url: str) -> None:
    """One submit (a task's records) is written in one transaction, whatever the batch size:
    groups of 30 in batches of 100 go 3 to a batch, a group of 150 alone."""
    batches: list[list[str]] = []
    with Ledger.open(sqlite_url) as ledger:

        def write(records) -> None:
            batches.append([r.task_id for r in records])
            ledger.append(*records)

        options = WriteBehindOptions(batch_size=100, linger_s=0.5)
        behind = WriteBehind(write, ledger_store.is_outage, options)
        sizes = [30, 30, 30, 30, 150, 30]
        for number, size in enumerate(sizes):
            behind.submit(_calls(size, task_id=f"t{number}"))
        behind.flush(10)
        behind.close()
        for batch in batches:  # each task whole in exactly one batch
            for task in set(batch):
                assert batch.count(task) == sizes[int(task[1:])]
        assert [len(b) for b in batches] == [90, 30, 150, 30]
        assert len(ledger.calls()) == sum(sizes)


def test_reads_wait_for_queued_records_and_close_writes_the_rest(any_url: str) -> None:
    ledger = Ledger.open(any_url)
    ledger.start_write_behind(WriteBehindOptions(linger_s=0.05))
    task = TaskRecord(policy="fixed:p:m")
    ledger.append(task)
    for call in _calls(30, task.id):
        ledger.append(call)
    assert len(ledger.calls(task_id=task.id)) == 30  # a read flushes first
    ledger.append(OutcomeRecord(task_id=task.id, outcome="success"))
    ledger.append(*_calls(5, "later"))
    ledger.close()  # flushes what is queued
    with Ledger.open(any_url) as reopened:
        assert reopened.tasks() == [task]
        assert [o.outcome for o in reopened.outcomes()] == ["success"]
        stored = reopened.calls()
        assert [c.input_tokens for c in stored] == list(range(30)) + list(range(5))
        assert sum(c.cost_usd or 0 for c in stored) == Decimal(435 + 10)


def test_stop_write_behind_goes_back_to_direct_writes(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        ledger.start_write_behind()
        ledger.append(*_calls(3))
        ledger.stop_write_behind()
        assert ledger.write_behind is None
        ledger.append(*_calls(2))
        assert len(ledger.calls()) == 5


def test_only_records_are_queued(sqlite_url: str) -> None:
    with Ledger.open(sqlite_url) as ledger:
        ledger.start_write_behind()
        with pytest.raises(TypeError, match="str is not a ledger record type"):
            ledger.append("nope")  # type: ignore[arg-type]
        assert ledger.write_behind is not None
        assert ledger.write_behind.pending == 0


def test_a_retried_batch_stores_each_record_once(any_url: str) -> None:
    records = _calls(4)
    with Ledger.open(any_url) as ledger:
        ledger.start_write_behind()
        ledger.append(*records)
        ledger.flush(10)
        ledger.append(*records[1:3])  # the same ids again: an ambiguous commit retried
        assert [c.id for c in ledger.calls()] == [c.id for c in records]


# --- outages -------------------------------------------------------------------------------


@pytest.fixture
def locked_sqlite(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Ledger, sqlite3.Connection]]:
    """A write-behind ledger on SQLite and a second connection that can hold the write lock."""
    monkeypatch.setattr(ledger_store, "SQLITE_BUSY_TIMEOUT_MS", 20)
    ledger = Ledger.open(sqlite_url)
    ledger.start_write_behind(FAST_RETRY)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        yield ledger, blocker
    finally:
        blocker.close()
        ledger.close()


def test_sqlite_locked_buffers_then_writes_everything(locked_sqlite, caplog) -> None:
    ledger, blocker = locked_sqlite
    behind = ledger.write_behind
    assert behind is not None
    ledger.append(*_calls(2, "before"))
    ledger.flush(10)
    caplog.set_level(logging.WARNING, logger="tierwise.ledger")
    blocker.execute("BEGIN IMMEDIATE")
    ledger.append(*_calls(50, "during"))
    _until(lambda: behind.last_error is not None, "the write fails while the lock is held")
    assert behind.pending == 50
    assert "database is locked" in behind.last_error
    blocker.execute("ROLLBACK")
    ledger.flush(10)
    assert behind.last_error is None
    assert len(ledger.calls(task_id="during")) == 50
    messages = [r.getMessage() for r in caplog.records]
    assert any("50 records buffered" in m for m in messages)
    assert any("reachable again" in m for m in messages)


def test_backlog_past_the_bound_is_flagged_and_still_kept(sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setattr(ledger_store, "SQLITE_BUSY_TIMEOUT_MS", 20)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    with Ledger.open(sqlite_url) as ledger:
        options = WriteBehindOptions(max_pending=10, retry_initial_s=0.02, retry_max_s=0.05)
        ledger.start_write_behind(options)
        behind = ledger.write_behind
        assert behind is not None
        blocker.execute("BEGIN IMMEDIATE")
        ledger.append(*_calls(9))
        assert not behind.backlogged
        ledger.append(*_calls(3))
        assert behind.backlogged
        blocker.execute("ROLLBACK")
        ledger.flush(10)
        assert not behind.backlogged
        assert len(ledger.calls()) == 12
    blocker.close()


def test_close_during_an_outage_says_how_many_are_unwritten(sqlite_url, monkeypatch, tmp_path):
    monkeypatch.setattr(ledger_store, "SQLITE_BUSY_TIMEOUT_MS", 20)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    ledger = Ledger.open(sqlite_url)
    ledger.start_write_behind(WriteBehindOptions(retry_initial_s=0.02, close_timeout_s=0.3))
    blocker.execute("BEGIN IMMEDIATE")
    ledger.append(*_calls(3))
    with pytest.raises(LedgerError, match=r"^3 ledger records are not written yet: .*locked"):
        ledger.close()
    blocker.execute("ROLLBACK")
    blocker.close()


def test_postgres_outage_buffers_then_writes_everything(postgres_url: str) -> None:
    with TcpProxy(5432) as relay, _pg_schema(postgres_url, relay.port) as url:
        ledger = Ledger.open(url)
        ledger.start_write_behind(FAST_RETRY)
        behind = ledger.write_behind
        assert behind is not None
        ledger.append(*_calls(3, "before"))
        ledger.flush(10)
        relay.cut()
        for call in _calls(40, "during"):
            ledger.append(call)
        _until(lambda: behind.last_error is not None, "a write fails while PostgreSQL is cut")
        assert behind.pending == 40
        relay.restore()
        ledger.flush(20)
        assert behind.last_error is None
        assert [c.input_tokens for c in ledger.calls(task_id="during")] == list(range(40))
        ledger.close()


# --- a record the database refuses ---------------------------------------------------------


def test_an_unwritable_record_is_logged_and_the_rest_written(sqlite_url, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="tierwise.ledger")
    poison = CallRecord(task_id="t", provider="p", model="p:bad")
    poison.__dict__["cost_usd"] = Decimal("NaN")  # past validation, as a bug would be
    with Ledger.open(sqlite_url) as ledger:
        ledger.start_write_behind()
        ledger.append(*_calls(2), poison, *_calls(2))
        assert [c.model for c in ledger.calls()] == ["p:m"] * 4
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert poison.id in dropped[0]
    assert "finite Decimal" in dropped[0]


def test_an_integer_past_64_bits_is_a_refused_record_not_a_dead_writer(sqlite_url) -> None:
    """sqlite3 raises a bare OverflowError for it: a LedgerError like any refusal."""
    with Ledger.open(sqlite_url) as ledger:
        ledger.start_write_behind()
        ledger.append(*_calls(2), _refused(), *_calls(2))
        assert [c.model for c in ledger.calls()] == ["p:m"] * 4


# --- spill: records unwritten at close are kept on disk and imported at the next start --------

EXACT_COSTS = [Decimal("0.000123456789012345"), Decimal("12.000000000000000001"), Decimal(0)]


def _task_with_calls(count: int) -> list[TaskRecord | CallRecord | OutcomeRecord]:
    task = TaskRecord(policy="fixed:p:m", metadata={"gateway_key": "k1"})
    calls = [
        CallRecord(
            task_id=task.id,
            provider="p",
            model="p:m",
            input_tokens=i,
            cost_usd=EXACT_COSTS[i % len(EXACT_COSTS)],
        )
        for i in range(count)
    ]
    return [task, *calls, OutcomeRecord(task_id=task.id, outcome="success", correct=True)]


def _stored(ledger: Ledger, task_id: str) -> list[TaskRecord | CallRecord | OutcomeRecord]:
    return [*ledger.tasks(task_id), *ledger.calls(task_id), *ledger.outcomes(task_id)]


def _spill_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "spilled to" in r.getMessage()]


def test_close_while_sqlite_is_locked_spills_and_the_next_start_imports(
    sqlite_url, monkeypatch, tmp_path, caplog
) -> None:
    monkeypatch.setattr(ledger_store, "SQLITE_BUSY_TIMEOUT_MS", 20)
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(7)
    blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    ledger = Ledger.open(sqlite_url)
    ledger.start_write_behind(
        WriteBehindOptions(retry_initial_s=0.02, close_timeout_s=0.3), spill_dir=spill_dir
    )
    blocker.execute("BEGIN IMMEDIATE")
    ledger.append(*records)
    caplog.set_level(logging.WARNING, logger="tierwise.ledger")
    ledger.close()  # no error: nothing is lost
    (spilled,) = spill_dir.glob("spill-*.jsonl")
    assert _spill_messages(caplog) == [
        f"ledger unwritable at shutdown ({_last_error(caplog)}): 9 records spilled to {spilled}; "
        "they are imported at the next start or by `tierwise ledger import-spill`"
    ]
    blocker.execute("ROLLBACK")
    blocker.close()

    with Ledger.open(sqlite_url) as reopened:
        assert reopened.calls() == []
        reopened.start_write_behind(spill_dir=spill_dir)
        assert _stored(reopened, records[0].id) == records  # ids, Decimal costs, times exact
    assert list(spill_dir.iterdir()) == []
    assert any(f"imported 9 unwritten records from {spilled}" in m for m in _messages(caplog))


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def _last_error(caplog: pytest.LogCaptureFixture) -> str:
    outage = next(m for m in _messages(caplog) if "database is locked" in m)
    return outage[outage.index("could not write") :]


def test_postgres_cut_at_close_spills_and_the_next_start_imports(postgres_url, tmp_path) -> None:
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(5)
    options = WriteBehindOptions(retry_initial_s=0.02, retry_max_s=0.05, close_timeout_s=0.5)
    with TcpProxy(5432) as relay, _pg_schema(postgres_url, relay.port) as url:
        ledger = Ledger.open(url)
        ledger.start_write_behind(options, spill_dir=spill_dir)
        relay.cut()
        ledger.append(*records)
        ledger.close()
        assert len(list(spill_dir.glob("spill-*.jsonl"))) == 1
        relay.restore()
        with Ledger.open(url) as reopened:  # the same configuration starting again
            reopened.start_write_behind(spill_dir=spill_dir)
            assert _stored(reopened, records[0].id) == records
        assert list(spill_dir.iterdir()) == []


class _Outage:
    """A writer that fails like an unreachable database until told otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.written: list[str] = []

    def __call__(self, records) -> None:
        if self.down:
            raise LedgerError("could not write to the ledger: connection refused")
        self.written += [r.id for r in records]


def test_a_transient_writer_error_at_close_spills_what_is_queued(sqlite_url, tmp_path) -> None:
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(3)
    shown = Ledger.open(sqlite_url)
    shown.close()
    behind = WriteBehind(
        _Outage(),
        lambda _error: True,
        WriteBehindOptions(retry_initial_s=0.02, close_timeout_s=0.2),
        spill=lambda gs: str(spill.write_spill(spill_dir, [r for g in gs for r in g], shown.url)),
    )
    behind.submit(records)
    behind.close()
    (path,) = spill.spill_files(spill_dir)
    assert spill.read_spill(path).records == records
    with Ledger.open(sqlite_url) as ledger:
        ledger.append(records[0])  # the task did get through once: it is not stored twice
        found = ledger.import_spills(spill_dir)
        assert (found.imported, found.kept, found.records) == ([(path, 5)], [], 5)
        assert _stored(ledger, records[0].id) == records
        assert ledger.import_spills(spill_dir).records == 0  # nothing left to import


def test_a_spill_that_cannot_be_written_says_the_records_are_lost(tmp_path, caplog) -> None:
    in_the_way = tmp_path / "not-a-folder"
    in_the_way.write_text("")
    behind = WriteBehind(
        _Outage(),
        lambda _error: True,
        WriteBehindOptions(retry_initial_s=0.02, close_timeout_s=0.2),
        spill=lambda gs: str(spill.write_spill(in_the_way, [r for g in gs for r in g], "x")),
    )
    behind.submit(_calls(4))
    with pytest.raises(LedgerError, match=r"^4 ledger records are lost: not written and cannot "):
        behind.close()
    assert in_the_way.read_text() == ""


def test_an_unreadable_spill_file_is_kept_and_reported(sqlite_url, tmp_path) -> None:
    spill_dir = tmp_path / "spill"
    good = spill.write_spill(spill_dir, _calls(2, "good"), "ignored")
    broken = spill.write_spill(spill_dir, _calls(3, "broken"), "ignored")
    lines = broken.read_text().splitlines()
    broken.write_text("\n".join([lines[0], lines[1], lines[2][:40]]) + "\n")
    with Ledger.open(sqlite_url) as ledger:
        good.write_text(good.read_text().replace('"ignored"', json.dumps(ledger.url), 1))
        broken.write_text(broken.read_text().replace('"ignored"', json.dumps(ledger.url), 1))
        found = ledger.import_spills(spill_dir)
        assert found.imported == [(good, 2)]
        assert found.kept == [
            (
                broken,
                f"ledger spill file {broken}, line 3: not JSON (Unterminated string starting at)",
            )
        ]
        assert [c.task_id for c in ledger.calls()] == ["good", "good"]  # nothing of the broken
    assert spill.spill_files(spill_dir) == [broken]


def test_a_spill_file_of_another_ledger_is_kept_unless_asked(sqlite_url, tmp_path) -> None:
    spill_dir = tmp_path / "spill"
    other = spill.write_spill(spill_dir, _calls(2), "postgresql://u:***@elsewhere/db")
    with Ledger.open(sqlite_url) as ledger:
        found = ledger.import_spills(spill_dir)
        assert found.imported == []
        assert found.kept == [
            (
                other,
                f"ledger spill file {other} is for the ledger at "
                f"postgresql://u:***@elsewhere/db, not {ledger.url}",
            )
        ]
        assert ledger.import_spills(spill_dir, any_ledger=True).imported == [(other, 2)]
        assert len(ledger.calls()) == 2


def test_cli_import_spill_reports_counts_and_keeps_what_it_cannot_read(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(4)
    good = spill.write_spill(spill_dir, records, ledger_store.mask_password(url))
    broken = spill_dir / "spill-99999999T000000000000Z-1-deadbeef.jsonl"
    broken.write_text("not a spill file\n")

    result = tierwise("--ledger", url, "ledger", "import-spill", str(spill_dir))
    assert result.returncode == 1, result.stderr
    assert f"imported 6 records from {good}" in result.stdout
    assert "6 records from 1 spill file into" in result.stdout
    assert "1 kept" in result.stdout
    assert result.stderr.strip() == (
        f"kept: ledger spill file {broken}: line 1 is not a tierwise-ledger-spill/1 header"
    )
    assert spill.spill_files(spill_dir) == [broken]
    with Ledger.open(url) as ledger:
        assert _stored(ledger, records[0].id) == records

    broken.unlink()
    again = tierwise("--ledger", url, "ledger", "import-spill", str(spill_dir))
    assert again.returncode == 0, again.stderr
    assert "0 records from 0 spill files" in again.stdout


def test_cli_import_spill_from_a_missing_folder_is_a_usage_error(tmp_path) -> None:
    result = tierwise("ledger", "import-spill", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr


def test_the_gateway_imports_spill_files_when_it_starts(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(3)
    spilled = spill.write_spill(spill_dir, records, ledger_store.mask_password(url))
    settings = gateway_settings(url, ledger_spill_dir=spill_dir)
    with running_gateway(settings) as served:
        assert not spilled.exists()
        served.flush_ledger()
        with Ledger.open(url) as ledger:
            assert _stored(ledger, records[0].id) == records


# --- spill: a record the database refuses is set aside, an outage keeps the file ------------


def _refused() -> CallRecord:
    """A valid record no database stores: a token count past any integer column."""
    return CallRecord(task_id="t", provider="p", model="p:huge", input_tokens=2**64)


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_imported(
    any_url, tmp_path
) -> None:
    spill_dir = tmp_path / "spill"
    records, refused = _task_with_calls(3), _refused()
    with Ledger.open(any_url) as ledger:
        path = spill.write_spill(spill_dir, [*records[:2], refused, *records[2:]], ledger.url)
        found = ledger.import_spills(spill_dir)
        side = path.with_name(path.name + ".rejected")
        assert (found.imported, found.kept, found.records) == ([(path, 5)], [], 5)
        (rejected,) = found.rejected
        assert (rejected.path, rejected.side, rejected.count) == (path, side, 1)
        assert "could not write to the ledger" in rejected.reason
        assert _stored(ledger, records[0].id) == records
        assert [c.model for c in ledger.calls()] == ["p:m"] * 3
        again = ledger.import_spills(spill_dir)  # nothing re-tried, nothing re-reported
        assert (again.imported, again.rejected, again.kept) == ([], [], [])
    assert not path.exists() and spill.spill_files(spill_dir) == []
    lines = [json.loads(line) for line in side.read_text().splitlines()]
    assert lines[1]["reason"] == rejected.reason
    assert spill.read_spill(side).records == [refused]  # the spill format: importable again


def test_an_outage_during_import_keeps_the_file_for_the_next_try(
    sqlite_url, monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr(ledger_store, "SQLITE_BUSY_TIMEOUT_MS", 20)
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(3)
    with Ledger.open(sqlite_url) as ledger:
        path = spill.write_spill(spill_dir, [*records, _refused()], ledger.url)
        blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            found = ledger.import_spills(spill_dir)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert (found.imported, found.rejected) == ([], [])
        ((kept, reason),) = found.kept
        assert kept == path and "database is locked" in reason
        assert list(spill_dir.iterdir()) == [path]  # no side file: nothing was refused
        found = ledger.import_spills(spill_dir)
        assert (found.imported, found.rejected[0].count) == ([(path, 5)], 1)


def test_cli_import_spill_sets_aside_a_refused_record_and_reports_it(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(2)
    path = spill.write_spill(spill_dir, [*records, _refused()], ledger_store.mask_password(url))
    side = path.with_name(path.name + ".rejected")

    result = tierwise("--ledger", url, "ledger", "import-spill", str(spill_dir))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"imported 4 records from {path}" in result.stdout
    assert "4 records from 1 spill file into" in result.stdout
    assert "; 1 rejected; 0 kept" in result.stdout
    stderr = " ".join(result.stderr.split())  # rich may wrap long lines
    assert f"rejected: 1 records of {path} refused by the database, set aside in {side}" in stderr
    assert not path.exists() and side.exists()
    with Ledger.open(url) as ledger:
        assert _stored(ledger, records[0].id) == records

    again = tierwise("--ledger", url, "ledger", "import-spill", str(spill_dir))
    assert again.returncode == 0, again.stderr
    assert "0 records from 0 spill files" in again.stdout and "0 rejected" in again.stdout


def test_the_gateway_start_sets_aside_a_refused_record_once(tmp_path, caplog) -> None:
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    spill_dir = tmp_path / "spill"
    records = _task_with_calls(2)
    path = spill.write_spill(spill_dir, [*records, _refused()], ledger_store.mask_password(url))
    settings = gateway_settings(url, ledger_spill_dir=spill_dir)
    caplog.set_level(logging.WARNING, logger="tierwise.ledger")
    with running_gateway(settings) as served:
        served.flush_ledger()
        with Ledger.open(url) as ledger:
            assert _stored(ledger, records[0].id) == records
    refusals = [m for m in _messages(caplog) if "refused by the database" in m]
    assert len(refusals) == 1 and f"1 spilled records of {path}" in refusals[0]
    assert spill.spill_files(spill_dir) == []
    caplog.clear()
    with running_gateway(settings):
        pass
    assert not any("spill" in m for m in _messages(caplog))  # nothing re-tried or re-reported


# --- [gateway] ledger_close_timeout_s: one bound on the whole close -----------------------------


def test_close_waits_close_timeout_s_once_for_a_writer_stuck_in_a_write(tmp_path) -> None:
    """A write that hangs (a dead connection) held close for its flush and then as long again
    joining the writer; now the join gets what the flush left."""
    release, spilled = threading.Event(), list[list[str]]()

    def stuck(_records) -> None:
        release.wait(10)

    def keep(groups) -> str:
        spilled.append([r.id for g in groups for r in g])
        return "memory"

    behind = WriteBehind(
        stuck, lambda _e: True, WriteBehindOptions(close_timeout_s=0.5), spill=keep
    )
    records = _calls(3)
    behind.submit(records)
    _until(lambda: behind.pending == 3, "the writer took the batch")
    start = time.monotonic()
    try:
        behind.close()
        elapsed = time.monotonic() - start
    finally:
        release.set()
    assert spilled == [[r.id for r in records]]
    assert 0.5 <= elapsed < 0.9, elapsed  # was 1.0 s (twice the bound)


@pytest.mark.parametrize("value", ["0", "-1", "true", "nan", "inf", '"soon"', "[]"])
def test_ledger_close_timeout_s_must_be_a_positive_number(tmp_path, value: str) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text(f"[gateway]\nledger_close_timeout_s = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert "gateway.ledger_close_timeout_s" in message and "\n" not in message


def test_the_gateway_closes_its_ledger_within_ledger_close_timeout_s(tmp_path) -> None:
    config = tmp_path / "tierwise.toml"
    config.write_text("[gateway]\nledger_close_timeout_s = 2.5\n")
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    settings = load_settings(config, ledger_url=url, admin_key="tw-admin-test-0123456789")
    with running_gateway(settings) as served:
        assert served.engine is not None
        behind = served.engine.ledger.write_behind
        assert behind is not None and behind.options.close_timeout_s == 2.5
