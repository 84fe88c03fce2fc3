"""A policy's own task budget (``?budget_usd=0.05&budget_tokens=20000``), carried with its
strategy so the engine can hand it to the task context; see :mod:`tierwise.budget`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tierwise.budget import TaskBudget
from tierwise.catalog import ModelSpec
from tierwise.messages import Request, Response, StreamEvent
from tierwise.strategies.base import Strategy, TaskContext
from tierwise.strategies.reach import reachable_models


class Budgeted:
    """``strategy`` under a per-task budget (enforced by the task context, not here)."""

    def __init__(self, strategy: Strategy, budget: TaskBudget, name: str) -> None:
        self.strategy = strategy
        self.budget = budget
        self.name = name

    def may_call(self) -> list[ModelSpec] | None:
        return reachable_models(self.strategy)

    async def run(self, request: Request, task: TaskContext) -> Response:
        return await self.strategy.run(request, task)

    def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        return self.strategy.stream(request, task)


def budget_of(strategy: Strategy) -> TaskBudget | None:
    """The budget a policy set, or ``None``."""
    return strategy.budget if isinstance(strategy, Budgeted) else None
