"""What the consult records say: when conversations first consult, and how those end.

Each conversation's first consult (``consult_index == 1``) is bucketed by the turn it came
at; the task it came in is judged by its outcomes (a ``correct`` label from a gate, a judge
or user feedback when there is one). So "a first consult at turn 7 or later hurts" shows as
a lower correct share in the ``7+`` row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal

from pydantic import BaseModel

from tierwise.ledger.records import ConsultRecord, OutcomeRecord

TURN_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (0, 0, "0"),
    (1, 2, "1-2"),
    (3, 6, "3-6"),
    (7, None, "7+"),
)


class TurnRow(BaseModel):
    """Conversations whose first consult came at these turns."""

    turns: str
    conversations: int = 0
    labelled: int = 0
    correct: int = 0
    succeeded: int = 0

    @property
    def correct_share(self) -> float | None:
        return None if self.labelled == 0 else self.correct / self.labelled


class ConsultReport(BaseModel):
    consults: int
    advisor_usd: Decimal | None
    """Advisor dollars over every consult; ``None`` when any consult's cost is unknown."""
    executor_usd: Decimal | None
    by_first_turn: list[TurnRow]
    results: dict[str, int]
    followed_by: dict[str, int]


def _bucket(turn: int) -> str:
    for low, high, label in TURN_BUCKETS:
        if turn >= low and (high is None or turn <= high):
            return label
    return TURN_BUCKETS[-1][2]


def _total(costs: Iterable[Decimal | None]) -> Decimal | None:
    values = list(costs)
    if any(cost is None for cost in values):
        return None
    return sum((cost for cost in values if cost is not None), Decimal(0))


def _judged(outcomes: Sequence[OutcomeRecord]) -> dict[str, tuple[bool | None, bool]]:
    """Per task: the last ``correct`` label given (if any) and whether it succeeded."""
    judged: dict[str, tuple[bool | None, bool]] = {}
    for outcome in outcomes:
        label, succeeded = judged.get(outcome.task_id, (None, False))
        if outcome.correct is not None:
            label = outcome.correct
        judged[outcome.task_id] = (label, succeeded or outcome.outcome == "success")
    return judged


def consult_report(
    consults: Sequence[ConsultRecord], outcomes: Sequence[OutcomeRecord]
) -> ConsultReport:
    """The report over ``consults`` and the outcomes of their tasks."""
    rows = {label: TurnRow(turns=label) for _, _, label in TURN_BUCKETS}
    judged = _judged(outcomes)
    for consult in consults:
        if consult.consult_index != 1 or consult.result == "max_uses_exceeded":
            continue
        row = rows[_bucket(consult.turn_index)]
        row.conversations += 1
        label, succeeded = judged.get(consult.task_id, (None, False))
        row.labelled += label is not None
        row.correct += label is True
        row.succeeded += succeeded
    return ConsultReport(
        consults=len(consults),
        advisor_usd=_total(c.advisor_cost_usd for c in consults),
        executor_usd=_total(c.executor_cost_usd for c in consults),
        by_first_turn=list(rows.values()),
        results=dict(Counter(c.result for c in consults).most_common()),
        followed_by=dict(Counter(c.followed_by for c in consults).most_common()),
    )
