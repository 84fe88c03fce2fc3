"""The gate seam: a check on a model's answer that decides whether the task climbs a tier.

A gate reads the request and the answer (and may call a model through the task context,
as a judge does) and returns a :class:`GateResult`. Gates never raise for a bad answer —
a failed check is a result; an error raised means the gate itself could not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tierwise.ledger.records import GateRecord

if TYPE_CHECKING:
    from tierwise.messages import Request, Response
    from tierwise.strategies.base import TaskContext


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict on one answer."""

    passed: bool
    score: float | None = None
    """How sure, in [0, 1], when the gate can say (confidence, judge score, agreement)."""
    reason: str = ""


class Gate(Protocol):
    """Checks one answer; ``name`` identifies it in the ledger's gate records."""

    name: str

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult: ...


async def check_recorded(
    gate: Gate,
    request: Request,
    answer: Response,
    task: TaskContext,
    *,
    call_id: str | None = None,
    name: str | None = None,
) -> GateResult:
    """``gate``'s verdict on ``answer``, recorded in the task's ledger as a gate result (of
    call ``call_id``, under ``name``, default the gate's own)."""
    verdict = await gate.check(request, answer, task)
    await task.record(
        GateRecord(
            task_id=task.task_id,
            call_id=call_id,
            gate=name or gate.name,
            passed=verdict.passed,
            score=verdict.score,
            reason=verdict.reason,
        )
    )
    return verdict
