"""Ledger outcomes -> labels: was this model's answer to this prompt right?

A label belongs to one successful executor call. Where it comes from, strongest first:

1. ``user`` — feedback recorded with :meth:`tierwise.Engine.feedback` (or the gateway's
   ``POST /v1/tierwise/feedback``): an :class:`OutcomeRecord` with ``source="user"``;
2. ``dataset`` — a recorded ground truth (the demo's replayed outcomes);
3. ``judge`` — a judge model's verdict (a gate named ``judge…`` or an outcome from one);
4. ``gate`` — the task's gates: a call passes when every gate run on it passed;
5. ``escalation`` — the task climbed away from the call's model, so its answer failed.

An outcome with a ``correct`` verdict labels the task's final answer (its last executor
call); a gate result labels the call it names (or, naming none, the last call before it); an
escalation labels the last call on the model it left. The strongest source wins per call,
the latest among equals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tierwise.ledger.records import (
    CallRecord,
    EscalationRecord,
    GateRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.store import Ledger

CHUNK_SIZE = 500
"""Tasks read per round trip (keeps ``IN (...)`` lists short)."""

PRIORITY = {"user": 5, "dataset": 4, "judge": 3, "gate": 2, "escalation": 1}
"""How much a label source is trusted; an unknown source counts as a gate."""

SHADOW_SOURCES = frozenset({"shadow", "shadow-judge"})
"""Task sources written by ``tierwise shadow`` (re-runs, not live traffic)."""


@dataclass(frozen=True)
class Label:
    """One executor call's answer judged right or wrong, and by whom."""

    task_id: str
    prompt: str
    call: CallRecord
    correct: bool
    source: str

    @property
    def model(self) -> str:
        return self.call.model


@dataclass
class TaskBundle:
    """A task and everything recorded for it."""

    task: TaskRecord
    calls: list[CallRecord] = field(default_factory=list)
    gates: list[GateRecord] = field(default_factory=list)
    escalations: list[EscalationRecord] = field(default_factory=list)
    outcomes: list[OutcomeRecord] = field(default_factory=list)

    @property
    def executors(self) -> list[CallRecord]:
        """The task's successful executor calls, in order."""
        return [c for c in self.calls if c.role == "executor" and c.status == "ok"]

    @property
    def prompt(self) -> str | None:
        calls = self.executors
        return self.task.prompt_text or (calls[0].prompt_text if calls else None)

    @property
    def climbed(self) -> bool:
        """Whether the task escalated to another model (a retry on the same one is not)."""
        return any(e.to_model != e.from_model for e in self.escalations)

    @property
    def live(self) -> bool:
        """A top-level task of real traffic (not a sub-task, not a shadow re-run)."""
        return self.task.parent_id is None and self.task.source not in SHADOW_SOURCES


def load_bundles(ledger: Ledger, since: datetime | None = None) -> list[TaskBundle]:
    """Every task created at or after ``since`` with its calls, gates, escalations and
    outcomes, oldest first."""
    tasks = ledger.tasks(since=since)
    bundles: list[TaskBundle] = []
    for start in range(0, len(tasks), CHUNK_SIZE):
        bundles += _bundles(ledger, tasks[start : start + CHUNK_SIZE])
    return bundles


def _bundles(ledger: Ledger, tasks: Sequence[TaskRecord]) -> list[TaskBundle]:
    by_id = {task.id: TaskBundle(task) for task in tasks}
    ids = list(by_id)
    for call in ledger.read(CallRecord, task_ids=ids):
        by_id[call.task_id].calls.append(call)
    for gate in ledger.read(GateRecord, task_ids=ids):
        by_id[gate.task_id].gates.append(gate)
    for escalation in ledger.read(EscalationRecord, task_ids=ids):
        by_id[escalation.task_id].escalations.append(escalation)
    for outcome in ledger.read(OutcomeRecord, task_ids=ids):
        by_id[outcome.task_id].outcomes.append(outcome)
    return list(by_id.values())


def _last_before(calls: Iterable[CallRecord], moment: datetime, model: str | None = None) -> str:
    """The id of the last call made at or before ``moment`` (on ``model``, if given)."""
    found = [c for c in calls if c.created_at <= moment and (model is None or c.model == model)]
    return found[-1].id if found else ""


class _Verdicts:
    """The best label per call: (priority, when, correct, source)."""

    def __init__(self) -> None:
        self.best: dict[str, tuple[int, datetime, bool, str]] = {}

    def put(self, call_id: str, when: datetime, correct: bool, source: str) -> None:
        if not call_id:
            return
        candidate = (PRIORITY.get(source, PRIORITY["gate"]), when, correct, source)
        current = self.best.get(call_id)
        if current is None or candidate[:2] >= current[:2]:
            self.best[call_id] = candidate


def _gate_source(gate: str) -> str:
    return "judge" if gate.startswith("judge") else "gate"


def _put_gates(verdicts: _Verdicts, bundle: TaskBundle, executors: list[CallRecord]) -> None:
    ids = {call.id for call in executors}
    grouped: dict[str, list[GateRecord]] = defaultdict(list)
    for gate in bundle.gates:
        call_id = gate.call_id if gate.call_id in ids else None
        grouped[call_id or _last_before(executors, gate.created_at)].append(gate)
    for call_id, gates in grouped.items():
        source = "judge" if all(_gate_source(g.gate) == "judge" for g in gates) else "gate"
        when = max(g.created_at for g in gates)
        verdicts.put(call_id, when, all(g.passed for g in gates), source)


def task_labels(bundle: TaskBundle) -> list[Label]:
    """The labels a task's records give its executor calls."""
    executors, prompt = bundle.executors, bundle.prompt
    if not executors or not prompt:
        return []
    verdicts = _Verdicts()
    _put_gates(verdicts, bundle, executors)
    for escalation in bundle.escalations:
        call_id = _last_before(executors, escalation.created_at, escalation.from_model)
        verdicts.put(call_id, escalation.created_at, False, "escalation")
    for outcome in bundle.outcomes:
        if outcome.correct is not None:
            verdicts.put(executors[-1].id, outcome.created_at, outcome.correct, outcome.source)
    calls = {call.id: call for call in executors}
    return [
        Label(bundle.task.id, prompt, calls[call_id], correct, source)
        for call_id, (_, _, correct, source) in verdicts.best.items()
    ]


def final_label(bundle: TaskBundle) -> bool | None:
    """Whether the task's final answer (its last executor call) was right, when known."""
    calls = bundle.executors
    if not calls:
        return None
    found = {label.call.id: label.correct for label in task_labels(bundle)}
    return found.get(calls[-1].id)


def all_labels(bundles: Iterable[TaskBundle]) -> Iterator[Label]:
    for bundle in bundles:
        yield from task_labels(bundle)
