"""Export the ledger as traces: JSON Lines, one line per task, for calibrating routers.

Format, ``schema`` 1
--------------------

Each line is one JSON object describing one task (sub-tasks — plan steps, consults — are lines
of their own, linked by ``parent_id``). Lines come oldest task first. Keys:

``schema``
    ``1``. Bumped when a field changes meaning or disappears; adding a field does not bump it,
    so readers must ignore keys they do not know.
``id``, ``created_at``, ``parent_id``, ``policy``, ``source``, ``prompt_text``, ``metadata``
    The task (:class:`~tierwise.ledger.records.TaskRecord`).
``calls``
    The task's model calls in the order they were made
    (:class:`~tierwise.ledger.records.CallRecord`): ``id``, ``created_at``, ``task_id``,
    ``parent_id``, ``role`` (executor | advisor | planner | router | judge | classifier),
    ``provider``, ``model``, ``request_id``, ``stream``, ``status`` (ok | error), tokens per
    axis (``input_tokens``, ``output_tokens``, ``cache_write_5m_tokens``,
    ``cache_write_1h_tokens``, ``cache_read_tokens``), ``iterations``, ``tokens_estimated``,
    ``cost_usd`` (a decimal *string* such as ``"0.000123456789"``, exact; ``null`` when the
    cost is unknown — never read it as 0), ``latency_ms``, ``ttft_ms``, ``stop_reason``,
    ``error_type``, ``error_message``, ``http_status``, ``prompt_text``, ``response_text``.
``decisions``
    Routing decisions: ``router``, ``chosen_model``, ``candidates`` (each ``{"model",
    "predicted_quality", "predicted_cost"}``), ``threshold``, ``reason``.
``escalations``
    ``from_model``, ``to_model``, ``trigger``.
``gate_results``
    ``call_id`` (the call judged, or null), ``gate``, ``passed``, ``score``, ``reason``.
``outcomes``
    ``outcome`` (success | failure | error), ``correct`` (true | false | null = not known),
    ``source`` (engine | gate | judge | user | dataset), ``detail``.

Every nested record also carries its ``id``, ``created_at`` and ``task_id``, so
``CallRecord.model_validate(line["calls"][0])`` rebuilds the record exactly. Timestamps are
ISO 8601 in UTC. Records whose task was never recorded are not exported.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from pydantic import BaseModel

from tierwise.errors import LedgerError
from tierwise.ledger.records import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.store import Ledger

SCHEMA_VERSION = 1
CHUNK_SIZE = 500
"""Tasks fetched per round trip (keeps ``IN (...)`` lists well under SQLite's limits)."""

_PARTS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("calls", CallRecord),
    ("decisions", DecisionRecord),
    ("escalations", EscalationRecord),
    ("gate_results", GateRecord),
    ("outcomes", OutcomeRecord),
)


def export_traces(
    ledger: Ledger,
    out: TextIO,
    since: datetime | None = None,
    redact: Callable[[str], str] | None = None,
) -> int:
    """Write one JSON line per task created at or after ``since``; return the line count.
    ``redact`` (:meth:`tierwise.config.Settings.redactor`) takes configured secrets out of
    every text of a line, whatever field holds it."""
    count = 0
    tasks = ledger.tasks(since=since)
    for start in range(0, len(tasks), CHUNK_SIZE):
        for trace in _traces(ledger, tasks[start : start + CHUNK_SIZE]):
            out.write(json.dumps(_redacted(trace, redact) if redact else trace) + "\n")
            count += 1
    return count


def _redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` (a trace) with ``redact`` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item, redact) for item in value]
    return value


def read_traces(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The traces in JSON ``lines`` (blank lines skipped); a bad line is a LedgerError."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield _parse(line, number)


def _traces(ledger: Ledger, tasks: Sequence[TaskRecord]) -> Iterator[dict[str, Any]]:
    ids = [task.id for task in tasks]
    parts = {name: _by_task(ledger.read(kind, task_ids=ids)) for name, kind in _PARTS}
    for task in tasks:
        trace: dict[str, Any] = {"schema": SCHEMA_VERSION, **task.model_dump(mode="json")}
        for name, grouped in parts.items():
            trace[name] = grouped.get(task.id, [])
        yield trace


def _by_task(records: Iterable[BaseModel]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        dumped = record.model_dump(mode="json")
        grouped[dumped["task_id"]].append(dumped)
    return grouped


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        trace = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"trace line {number}: not valid JSON ({exc.msg})") from None
    if not isinstance(trace, dict):
        raise LedgerError(f"trace line {number}: expected a JSON object")
    if trace.get("schema") != SCHEMA_VERSION:
        found = trace.get("schema")
        raise LedgerError(
            f"trace line {number}: unsupported trace schema {found!r} (expected {SCHEMA_VERSION})"
        )
    return trace
