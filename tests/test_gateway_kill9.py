"""``kill -9`` of a real ``tierwise serve`` loses nothing answered and stores no task half.

bench/kill9.py drives the gateway (``--workers 1`` and ``2``, a fake upstream on loopback)
with requests, every other one a stream, SIGKILLs its whole process group with requests still
running, starts it again on the same ledger and stops it: every request whose whole answer
the client got (a 200 body, a stream through ``[DONE]``) must then be in the ledger with its
calls, matched by its ``x-tierwise-task-id``, and no task may be stored without its calls.

To make it deterministic, the ledger is locked (another connection holds SQLite's write lock)
while the load runs, so every record is still queued in memory when the kill lands: before
the journal, all of them were lost. Streams paced slowly are still running at the kill: before
the engine kept a task's records together, their tasks were stored without their calls.
"""

from __future__ import annotations

import pytest

from tests.bench_modules import load_bench_module

kill9 = load_bench_module("kill9")


@pytest.mark.parametrize("workers", [1, 2])
def test_what_was_answered_before_the_kill_is_in_the_ledger_after_the_restart(
    workers: int,
) -> None:
    result = kill9.kill9_run(20, 1.5, workers=workers, hold_ledger=True)
    assert result.answered >= 20  # most of the 30 sent
    assert (result.lost, result.orphans) == (0, 0), result


def test_a_task_killed_mid_stream_is_not_stored_without_its_calls() -> None:
    """Streams take 2 s (5 chunks 400 ms apart); the kill lands after 1 s: their tasks are
    unanswered and must not be in the ledger without their calls."""
    result = kill9.kill9_run(6, 1.0, workers=1, chunk_ms=400)
    assert result.sent == 6 and result.answered == 3  # the three plain requests
    assert (result.lost, result.orphans) == (0, 0), result


def test_without_the_journal_the_kill_loses_what_was_answered() -> None:
    """The same run with ``journal = false``: the test sees the loss it guards against."""
    result = kill9.kill9_run(20, 1.0, workers=1, journal=False, hold_ledger=True)
    assert result.answered > 0
    assert result.lost == result.answered


def test_workers_killed_under_their_supervisor_are_replayed_by_the_ones_it_restarts() -> None:
    """``kill -9`` of both workers, not the supervisor: it starts two more, which replay the
    dead ones' journals at their start (each worker writes its own file; a live one's is
    locked and left alone); then SIGTERM, and the usual restart."""
    result = kill9.kill9_run(20, 1.5, workers=2, hold_ledger=True, workers_only=True)
    assert result.answered >= 20
    assert (result.lost, result.orphans) == (0, 0), result
