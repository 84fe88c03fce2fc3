"""An answer's last bytes go out only once its records are fsynced in the journal.

The journal's fsync is held (``os.fsync`` in :mod:`tierwise.ledger.journal` waits on an
event) while a request runs through the gateway: a non-streaming answer does not arrive, a
stream's content does but not its end (``message_delta`` / ``message_stop``), until the
fsync is let go. Then the journal holds the task with its call, in one line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import anthropic_upstream as fx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tests.test_ledger_journal import _HeldFsync
from tierwise.config import Settings
from tierwise.ledger.journal import journal_files, read_journal
from tierwise.ledger.records import CallRecord, TaskRecord

HELLO = [{"role": "user", "content": "Hello"}]
HEADERS = {"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"}


@pytest.fixture
def gw(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    flags = {"gateway": {"journal_dir": str(tmp_path / "journal")}}
    with running_gateway(gateway_settings(settings.resolved_ledger_url(), **flags)) as served:
        yield served


def _journaled(directory: Path) -> list[list[str]]:
    """Each group in the journal as its record types."""
    return [
        [type(r).__name__ for r in group]
        for path in journal_files(directory)
        for group in read_journal(path)[1]
    ]


def test_a_response_waits_for_the_fsync_of_its_records(
    gw: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw.anthropic_fake.reply_message(fx.text_message("Hi!"))
    held = _HeldFsync(monkeypatch)
    answer: list[dict[str, object]] = []

    def ask() -> None:
        body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HELLO}
        with gw.http() as http:
            answer.append(http.post("/v1/messages", json=body, headers=HEADERS).json())

    asking = threading.Thread(target=ask)
    try:
        asking.start()
        _until(lambda: held.calls >= 1)
        time.sleep(0.2)
        assert answer == []  # the model answered, the records are written, not yet fsynced
    finally:
        held.release.set()
        asking.join(10)
    assert answer[0]["content"] == [{"type": "text", "text": "Hi!"}]
    groups = _journaled(tmp_path / "journal")
    assert groups[-1] == ["TaskRecord", "DecisionRecord", "CallRecord", "OutcomeRecord"]


def test_a_streams_end_waits_for_the_fsync_of_its_records(
    gw: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw.anthropic_fake.reply_message(fx.text_message("A streamed answer."))
    held = _HeldFsync(monkeypatch)
    received: list[str] = []

    def stream() -> None:
        body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": HELLO, "stream": True}
        with (
            gw.http() as http,
            http.stream("POST", "/v1/messages", json=body, headers=HEADERS) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:])["type"])

    streaming = threading.Thread(target=stream)
    try:
        streaming.start()
        _until(lambda: held.calls >= 1 and "content_block_stop" in received)
        time.sleep(0.2)
        assert received[0] == "message_start"
        assert "message_delta" not in received and "message_stop" not in received
    finally:
        held.release.set()
        streaming.join(10)
    assert received[-2:] == ["message_delta", "message_stop"]
    (path,) = journal_files(tmp_path / "journal")
    _, groups = read_journal(path)
    (task,) = [r for r in groups[-1] if isinstance(r, TaskRecord)]
    (call,) = [r for r in groups[-1] if isinstance(r, CallRecord)]
    assert call.task_id == task.id and call.stream  # one group: the task with its call


def _until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)
