"""The gate seam: a check on a model's answer that decides whether the task climbs a tier.

A gate reads the request and the answer (and may call a model through the task context,
as a judge does) and returns a :class:`GateResult`. Gates never raise for a bad answer —
a failed check is a result; an error raised means the gate itself could not run.

When a gate's own model call fails (upstream down, 5xx, timeout, open circuit),
:func:`check_recorded` turns the error into a "could not check" result (``error`` set,
``passed`` false), recorded like any verdict; the caller's ``on_gate_error`` policy says
what it means: ``escalate`` (a failed check), ``accept`` (keep the answer, unverified) or
``fail`` (raise, as the gate did). A task's own budget running out is never a gate error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from tierwise.errors import PolicyError, ProviderError
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
    error: str | None = None
    """Set when the gate could not check (its own model call failed): that error."""

    @property
    def checked(self) -> bool:
        return self.error is None


GateErrorPolicy = Literal["escalate", "accept", "fail"]
GATE_ERROR_POLICIES: tuple[GateErrorPolicy, ...] = get_args(GateErrorPolicy)
_MEANING: dict[GateErrorPolicy, str] = {
    "escalate": "counted as a failed check",
    "accept": "answer accepted unverified",
    "fail": "the task fails",
}


def gate_error_policy(text: str) -> GateErrorPolicy:
    """``text`` as an ``on_gate_error`` policy, or one clear error."""
    for policy in GATE_ERROR_POLICIES:
        if text == policy:
            return policy
    known = "|".join(GATE_ERROR_POLICIES)
    raise PolicyError(f"on_gate_error must be {known}, not {text!r}")


def accepted(verdict: GateResult, on_error: GateErrorPolicy) -> bool:
    """Whether the answer stands: it passed, or the gate could not check and ``on_error``
    accepts an unverified answer."""
    return verdict.passed or (not verdict.checked and on_error == "accept")


def could_not_check(exc: ProviderError, on_error: GateErrorPolicy) -> GateResult:
    """The result of a gate whose own model call failed with ``exc``."""
    error = f"{type(exc).__name__}: {exc}"
    return GateResult(False, None, f"could not check ({_MEANING[on_error]}): {error}", error)


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
    on_error: GateErrorPolicy = "fail",
) -> GateResult:
    """``gate``'s verdict on ``answer``, recorded in the task's ledger as a gate result (of
    call ``call_id``, under ``name``, default the gate's own). When the gate's own model call
    fails, the verdict is :func:`could_not_check` (recorded too), then re-raised if
    ``on_error`` is ``fail``."""
    try:
        verdict = await gate.check(request, answer, task)
    except ProviderError as exc:
        verdict = could_not_check(exc, on_error)
        await _record(verdict, gate, task, call_id, name)
        if on_error == "fail":
            raise
        return verdict
    await _record(verdict, gate, task, call_id, name)
    return verdict


async def _record(
    verdict: GateResult, gate: Gate, task: TaskContext, call_id: str | None, name: str | None
) -> None:
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
