"""One budget per task: dollars and tokens over every call the task makes.

Executor, advisor, judge, planner and classifier calls all count. :class:`TaskContext`
checks the budget before each call — what the task has spent plus the call's projection
(an estimate of its input tokens plus its ``max_tokens``, at the model's catalog prices) —
and after it, against what was actually billed. A dollar budget cannot be kept when a
price is unknown, so such a call is refused rather than assumed free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tierwise.catalog import ModelSpec
from tierwise.cost import price_tokens
from tierwise.errors import BudgetExceededError, PolicyError
from tierwise.ledger.records import CallRecord
from tierwise.messages import Request, Response, TextBlock, TokenCounts
from tierwise.tokens import estimate_tokens

BUDGET_PARAMS = ("budget_usd", "budget_tokens")
"""Policy parameters that set a task budget (``fixed:...?budget_usd=0.05``)."""

DEFAULT_OUTPUT_RESERVE = 4096
"""Output tokens projected for a request that sets no ``max_tokens`` (nor its model)."""


@dataclass(frozen=True)
class TaskBudget:
    """The most one task may spend: ``usd`` dollars and/or ``tokens`` (all four axes)."""

    usd: Decimal | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.usd is not None and self.usd <= 0:
            raise PolicyError(f"a task budget must be positive, not {usd(self.usd)}")
        if self.tokens is not None and self.tokens <= 0:
            raise PolicyError(f"a task token budget must be positive, not {self.tokens}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> TaskBudget | None:
        """The budget set by ``budget_usd`` / ``budget_tokens``; ``None`` when neither is."""
        usd, tokens = params.get("budget_usd"), params.get("budget_tokens")
        if usd is None and tokens is None:
            return None
        return cls(usd=_decimal(usd), tokens=_integer(tokens))

    def describe(self) -> str:
        parts = [usd(self.usd) if self.usd is not None else "", _tokens(self.tokens)]
        return " and ".join(p for p in parts if p)


def _decimal(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        raise PolicyError(f"budget_usd must be a number of dollars, not {text!r}")
    return value


def _integer(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise PolicyError(f"budget_tokens must be a whole number, not {text!r}") from None


def usd(value: Decimal) -> str:
    """Dollars as plainly as they are exact: ``0.11192``, not ``0.111920`` or ``1.2E-5``."""
    return f"${value.normalize():f}"


def _tokens(count: int | None) -> str:
    return "" if count is None else f"{count:,} tokens"


@dataclass(frozen=True)
class Spend:
    """Dollars (``None`` = unknown) and tokens, spent or projected."""

    usd: Decimal | None
    tokens: int

    def __add__(self, other: Spend) -> Spend:
        usd = None if self.usd is None or other.usd is None else self.usd + other.usd
        return Spend(usd, self.tokens + other.tokens)


def spent(calls: Iterable[CallRecord]) -> Spend:
    """What ``calls`` cost: exact dollars (unknown if any call's is) and billed tokens."""
    total = Spend(Decimal(0), 0)
    for call in calls:
        tokens = (
            call.input_tokens
            + call.output_tokens
            + call.cache_write_5m_tokens
            + call.cache_write_1h_tokens
            + call.cache_read_tokens
        )
        total = total + Spend(call.cost_usd, tokens)
    return total


def _request_text(request: Request) -> str:
    parts = [block.text for block in request.system]
    for message in request.messages:
        for block in message.content:
            parts.append(block.text if isinstance(block, TextBlock) else block.model_dump_json())
    parts += [tool.model_dump_json(exclude_none=True) for tool in request.tools]
    return "\n".join(parts)


def projected(request: Request, spec: ModelSpec) -> Spend:
    """A call's projection: estimated input plus its output cap, at catalog prices."""
    output = request.max_tokens or spec.max_output_tokens or DEFAULT_OUTPUT_RESERVE
    tokens = TokenCounts(input_tokens=estimate_tokens(_request_text(request)), output_tokens=output)
    cost = price_tokens(tokens, spec.prices)
    return Spend(None if cost is None else cost.total, tokens.total_tokens)


def refusal(budget: TaskBudget, so_far: Spend, next_call: Spend, model: str) -> str | None:
    """Why the next call to ``model`` may not be made, or ``None`` when it fits."""
    if budget.tokens is not None and so_far.tokens + next_call.tokens > budget.tokens:
        return (
            f"a call to {model} (~{next_call.tokens:,} tokens projected) would take the task "
            f"from {so_far.tokens:,} to over its budget of {_tokens(budget.tokens)}"
        )
    if budget.usd is None:
        return None
    if so_far.usd is None:
        return "the task's spend so far is unknown (a price is missing): its $ budget cannot hold"
    if next_call.usd is None:
        return f"the price of {model} is unknown: a call to it may not fit {usd(budget.usd)}"
    if so_far.usd + next_call.usd > budget.usd:
        return (
            f"a call to {model} (up to {usd(next_call.usd)} projected) would take the task "
            f"from {usd(so_far.usd)} to over its budget of {usd(budget.usd)}"
        )
    return None


def overrun(budget: TaskBudget, so_far: Spend) -> str | None:
    """Why the task is already over ``budget`` (after a call billed more than projected)."""
    if budget.tokens is not None and so_far.tokens > budget.tokens:
        return (
            f"the task used {_tokens(so_far.tokens)}, over its budget of {_tokens(budget.tokens)}"
        )
    if budget.usd is not None and so_far.usd is not None and so_far.usd > budget.usd:
        return f"the task spent {usd(so_far.usd)}, over its budget of {usd(budget.usd)}"
    return None


class BudgetGuard:
    """One task's budget, what it has spent, and its best answer so far.

    A task and its sub-tasks share one guard. ``before`` refuses a call whose projection
    does not fit; ``settle`` keeps an executor's answer as the best so far (unless a strategy
    offered a better-scored one) and stops the task when a call billed more than projected.
    """

    def __init__(self, budget: TaskBudget | None = None) -> None:
        self.budget = budget
        self.spent = Spend(Decimal(0), 0)
        self.best: Response | None = None
        self._best_score = float("-inf")

    def charge(self, call: CallRecord) -> None:
        self.spent = self.spent + spent([call])

    def offer(self, response: Response, score: float = 0.0) -> None:
        """Keep ``response`` as the best so far if it scores at least as well (later wins)."""
        if score >= self._best_score:
            self.best, self._best_score = response, score

    def _stop(self, reason: str) -> BudgetExceededError:
        assert self.budget is not None
        return BudgetExceededError(
            f"task budget of {self.budget.describe()} exceeded: {reason}", partial=self.best
        )

    def before(self, request: Request, spec: ModelSpec) -> None:
        """Raise :class:`BudgetExceededError` if a call to ``spec`` may not fit the budget."""
        if self.budget is None:
            return
        reason = refusal(self.budget, self.spent, projected(request, spec), spec.id)
        if reason is not None:
            raise self._stop(reason)

    def settle(self, response: Response, role: str, *, enforce: bool = True) -> None:
        """After a call: offer an executor's answer; raise if the task is now over budget
        (``enforce=False`` for a stream already delivered: the next call is refused)."""
        if role == "executor":
            self.offer(response)
        if self.budget is None or not enforce:
            return
        reason = overrun(self.budget, self.spent)
        if reason is not None:
            raise self._stop(reason)
