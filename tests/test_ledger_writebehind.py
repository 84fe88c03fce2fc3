"""Write-behind ledger on real databases: batching, flush on read and close, outages, poison.

Outages are real: SQLite is locked by another connection; PostgreSQL is reached through a
loopback relay (tests/fakes/tcp_proxy.py) that is cut and restored.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.tcp_proxy import TcpProxy
from tests.test_ledger import _admin, postgres_url
from tierwise.errors import LedgerError
from tierwise.ledger import CallRecord, Ledger, OutcomeRecord, TaskRecord
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
        behind.submit(_calls(250))
        behind.flush(10)
        behind.close()
        assert batches == [100, 100, 50]
        assert [c.input_tokens for c in ledger.calls()] == list(range(250))


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
