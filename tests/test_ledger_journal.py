"""The ledger journal: append, group commit, replay (idempotent, torn lines), files, failures.

A crashed process is a real one: a child Python appends groups and SIGKILLs itself, so its
journal is left as a crash leaves it (unlocked, not closed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.gateway_harness import gateway_settings
from tests.test_cli import tierwise
from tierwise.errors import LedgerError
from tierwise.gateway.service import Gateway
from tierwise.ledger import CallRecord, Ledger, OutcomeRecord, TaskRecord, spill
from tierwise.ledger import journal as journal_module
from tierwise.ledger.journal import Journal, journal_files, read_journal
from tierwise.ledger.store import is_outage
from tierwise.ledger.writebehind import WriteBehind, WriteBehindOptions


def _task(calls: int = 2, prompt: str = "hi") -> list[TaskRecord | CallRecord | OutcomeRecord]:
    task = TaskRecord(source="gateway", prompt_text=prompt)
    made = [
        CallRecord(task_id=task.id, provider="p", model="p:m", cost_usd=Decimal(f"0.00{i}"))
        for i in range(1, calls + 1)
    ]
    return [task, *made, OutcomeRecord(task_id=task.id, outcome="success")]


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


_CRASHING_CHILD = """
import os, signal, sys
from decimal import Decimal
from pathlib import Path
from tierwise.ledger.journal import Journal
from tierwise.ledger.records import CallRecord, TaskRecord
journal = Journal(Path(sys.argv[1]), sys.argv[2])
for _ in range(int(sys.argv[3])):
    task = TaskRecord(source="gateway")
    call = CallRecord(task_id=task.id, provider="p", model="p:m", cost_usd=Decimal("0.5"))
    journal.wait_durable(journal.append([task, call]), 10)
print(journal.path, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crashed_journal(directory: Path, ledger_url: str, groups: int) -> Path:
    """A journal of ``groups`` task+call groups whose process was SIGKILLed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _CRASHING_CHILD, str(directory), ledger_url, str(groups)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == -9, done.stderr
    return Path(done.stdout.strip())


# --- append and replay ---------------------------------------------------------------------


def test_a_crashed_processs_journal_is_replayed_whole_tasks_once_each(ledger, tmp_path) -> None:
    path = _crashed_journal(tmp_path / "j", ledger.url, 25)
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"  # prompts inside
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    found = ledger.import_spills(tmp_path / "j")
    assert (found.records, found.kept, found.rejected) == (50, [], [])
    tasks, calls = ledger.tasks(), ledger.calls()
    assert len(tasks) == 25 and {c.task_id for c in calls} == {t.id for t in tasks}
    assert all(c.cost_usd == Decimal("0.5") for c in calls)
    assert journal_files(tmp_path / "j") == []  # removed once imported


def test_replaying_a_journal_already_partly_imported_stores_each_record_once(
    ledger, tmp_path
) -> None:
    path = _crashed_journal(tmp_path / "j", ledger.url, 10)
    _, groups = read_journal(path)
    ledger.append(*groups[0], *groups[3])  # these reached the database before the crash
    found = ledger.import_spills(tmp_path / "j")
    assert found.records == 20 and not found.kept
    assert len(ledger.tasks()) == 10 and len(ledger.calls()) == 10


def test_a_torn_last_line_is_ignored_with_a_log_line(ledger, tmp_path, caplog) -> None:
    path = _crashed_journal(tmp_path / "j", ledger.url, 3)
    with path.open("ab") as out:  # the process died in the middle of its fourth write
        out.write(b'{"group": [{"type": "TaskRecord", "record": {"id": "abc')
    with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
        found = ledger.import_spills(tmp_path / "j")
    assert found.records == 6 and not found.kept
    assert len(ledger.tasks()) == 3
    assert any(
        "ignored a torn last line" in r.getMessage() and str(path) in r.getMessage()
        for r in caplog.records
    )


def test_a_broken_line_before_the_last_keeps_the_file_and_says_where(ledger, tmp_path) -> None:
    path = _crashed_journal(tmp_path / "j", ledger.url, 2)
    lines = path.read_bytes().split(b"\n")
    lines.insert(2, b"not json")
    path.write_bytes(b"\n".join(lines))
    found = ledger.import_spills(tmp_path / "j")
    ((kept, reason),) = found.kept
    assert kept == path and path.exists()
    assert f"ledger journal {path}, line 3: not JSON" in reason
    assert ledger.tasks() == []


def test_a_live_processs_journal_is_not_replayed(ledger, tmp_path) -> None:
    live = Journal(tmp_path / "j", ledger.url)
    try:
        live.wait_durable(live.append(_task()), 10)
        found = ledger.import_spills(tmp_path / "j")
        assert (found.imported, found.kept) == ([], [])
        assert live.path.exists() and ledger.tasks() == []
    finally:
        live.close()


def test_a_journal_of_another_ledger_is_kept(ledger, tmp_path) -> None:
    path = _crashed_journal(tmp_path / "j", "postgresql://u:***@elsewhere/db", 1)
    ((kept, reason),) = ledger.import_spills(tmp_path / "j").kept
    assert kept == path and "is for the ledger at postgresql://u:***@elsewhere/db" in reason


# --- group commit --------------------------------------------------------------------------


class _HeldFsync:
    """``os.fsync`` in the journal module, held until released (counting calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.calls = 0
        real = os.fsync

        def fsync(fd: int) -> None:
            self.calls += 1
            self.release.wait(10)
            real(fd)

        monkeypatch.setattr(journal_module.os, "fsync", fsync)


async def test_durable_returns_only_after_the_fsync_covering_the_group(
    tmp_path, monkeypatch
) -> None:
    journal = Journal(tmp_path / "j", "sqlite:///x.db")  # its header is fsynced unheld
    held = _HeldFsync(monkeypatch)
    try:
        waiting = asyncio.create_task(journal.durable(journal.append(_task())))
        await asyncio.sleep(0.2)
        assert not waiting.done() and held.calls == 1  # the flusher is in the fsync
        held.release.set()
        await asyncio.wait_for(waiting, 5)
    finally:
        held.release.set()
        journal.close()


async def test_groups_appended_during_an_fsync_share_the_next(tmp_path, monkeypatch) -> None:
    journal = Journal(tmp_path / "j", "sqlite:///x.db")
    held = _HeldFsync(monkeypatch)
    try:
        first = asyncio.create_task(journal.durable(journal.append(_task())))
        await asyncio.sleep(0.1)  # the flusher now holds its fsync for the first group
        rest = [asyncio.create_task(journal.durable(journal.append(_task()))) for _ in range(50)]
        held.release.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), 5)
        assert held.calls == 2  # 51 groups, two fsyncs
    finally:
        held.release.set()
        journal.close()


async def test_sync_interval_gathers_groups_before_the_fsync(tmp_path) -> None:
    journal = Journal(tmp_path / "j", "sqlite:///x.db", sync_interval_s=0.05)
    try:
        before = journal.fsyncs
        tickets = []
        for _ in range(20):
            tickets.append(journal.append(_task()))
            await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*(journal.durable(t) for t in tickets)), 5)
        assert journal.fsyncs - before <= 2
    finally:
        journal.close()


# --- files ---------------------------------------------------------------------------------


def test_full_segments_are_deleted_once_written_and_close_leaves_none(tmp_path) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, "sqlite:///x.db", segment_bytes=64 * 1024)
    big = "x" * 8000
    tickets = []
    for _ in range(40):  # ~320 KB, one fsync each: a new file past each 64 KB
        tickets.append(journal.append(_task(prompt=big)))
        assert journal.wait_durable(tickets[-1], 10)
    assert len(journal_files(directory)) >= 4
    journal.written(tickets[20])
    left = journal_files(directory)
    assert 1 <= len(left) < 4  # the files whose groups are written are gone
    journal.written(tickets[-1])
    assert journal.close() == [] and journal_files(directory) == []


def test_close_keeps_the_file_holding_unwritten_groups(ledger, tmp_path) -> None:
    journal = Journal(tmp_path / "j", ledger.url)
    journal.append(_task())
    (kept,) = journal.close()
    assert kept.exists()
    assert ledger.import_spills(tmp_path / "j").records == 4  # the next start replays it


def test_write_behind_with_a_journal_leaves_it_at_close_when_the_database_is_down(
    ledger, tmp_path, caplog
) -> None:
    def down(_records) -> None:
        raise LedgerError("could not write to the ledger: connection refused")

    journal = Journal(tmp_path / "j", ledger.url)
    behind = WriteBehind(
        down,
        lambda _e: True,
        WriteBehindOptions(retry_initial_s=0.02, close_timeout_s=0.3),
        journal=journal,
    )
    behind.submit(_task(3))
    with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
        behind.close()
    assert any("5 records kept in the journal" in r.getMessage() for r in caplog.records)
    assert ledger.import_spills(tmp_path / "j").records == 5
    assert len(ledger.calls()) == 3


def test_write_behind_deletes_the_journal_once_everything_is_written(ledger, tmp_path) -> None:
    journal = Journal(tmp_path / "j", ledger.url, segment_bytes=64 * 1024)
    behind = WriteBehind(lambda rs: ledger.append(*rs), is_outage, journal=journal)
    for _ in range(60):
        behind.submit(_task(prompt="y" * 4000))
    behind.close()
    assert journal_files(tmp_path / "j") == []
    assert len(ledger.tasks()) == 60


# --- failures ------------------------------------------------------------------------------


def test_a_journal_that_cannot_be_written_fails_at_once(tmp_path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    with pytest.raises(LedgerError, match=r"^cannot write the ledger journal in .*a-file"):
        Journal(in_the_way, "sqlite:///x.db")


def test_a_write_failing_while_serving_is_undone_and_logged_once(
    tmp_path, monkeypatch, caplog
) -> None:
    journal = Journal(tmp_path / "j", "sqlite:///x.db")
    journal.wait_durable(journal.append(_task()), 10)
    real = os.write
    full = threading.Event()
    full.set()

    def write(fd: int, data: bytes) -> int:
        if full.is_set():
            real(fd, bytes(data)[:10])  # a part, then the disk is full
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(journal_module.os, "write", write)
    with caplog.at_level(logging.WARNING, logger="tierwise.ledger"):
        journal.append(_task())
        journal.append(_task())
        full.clear()
        journal.wait_durable(journal.append(_task()), 10)
    monkeypatch.undo()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unwritable" in m for m in messages) == 1
    assert any("writable again" in m for m in messages)
    path = journal.path
    journal.close()
    assert path.exists()
    _, groups = read_journal(path)
    assert len(groups) == 2  # the first and the last: no torn line between


async def test_the_gateway_does_not_start_with_an_unwritable_journal(tmp_path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    settings = gateway_settings(
        f"sqlite:///{tmp_path / 'ledger.db'}", gateway={"journal_dir": str(in_the_way)}
    )
    gateway = Gateway(settings)
    with pytest.raises(LedgerError, match=r"^cannot write the ledger journal in .*a-file"):
        await gateway.start()
    await gateway.stop()


def _until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


async def test_without_waiting_for_fsyncs_durable_returns_after_the_write(
    tmp_path, monkeypatch
) -> None:
    """``journal_fsync = false``: the write alone (a killed process keeps it) before the answer."""
    journal = Journal(tmp_path / "j", "sqlite:///x.db", wait_fsync=False)
    held = _HeldFsync(monkeypatch)
    try:
        ticket = journal.append(_task())
        await asyncio.wait_for(journal.durable(ticket), 1)
        assert len(read_journal(journal.path)[1]) == 1  # on disk (in the page cache) already
        assert not journal.wait_durable(ticket, 0.1)  # the fsync, still held
    finally:
        held.release.set()
        journal.close()


def test_tierwise_serve_refuses_an_unwritable_journal_dir_in_one_line(tmp_path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    config = tmp_path / "config.toml"
    config.write_text(
        f'ledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n'
        f'[gateway]\nauth = false\njournal_dir = "{in_the_way / "journal"}"\n',
        "utf-8",
    )
    result = tierwise("--config", str(config), "serve", "--port", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write the ledger journal in" in " ".join(result.stderr.split())


def _task_of(record) -> str:
    return record.id if isinstance(record, TaskRecord) else record.task_id


@pytest.mark.parametrize("kind", ["spill", "journal"])
def test_an_import_never_splits_a_task_across_transactions(
    tmp_path, monkeypatch, kind: str
) -> None:
    """Batches of whole groups: with 12 records a batch, tasks of 5 go two to a batch."""
    monkeypatch.setattr(spill, "IMPORT_BATCH", 12)
    groups = [_task(3) for _ in range(5)]
    if kind == "spill":
        records, sizes = spill.group_sizes(groups)
        spill.write_spill(tmp_path / "d", records, "L", sizes=sizes)
    else:
        journal = Journal(tmp_path / "d", "L")
        for group in groups:
            journal.append(group)
        journal.close()
    batches: list[list[str]] = []
    report = (spill.import_spills if kind == "spill" else journal_module.replay)(
        tmp_path / "d", "L", lambda b: batches.append([_task_of(r) for r in b]), lambda _e: False
    )
    assert report.records == 25
    assert [len(b) for b in batches] == [10, 10, 5]
    for group in groups:
        assert sum(group[0].id in batch for batch in batches) == 1
