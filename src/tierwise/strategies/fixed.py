"""``fixed:<model>``: the baseline strategy — one call to one pinned model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from tierwise.catalog import ModelSpec
from tierwise.ledger.records import DecisionRecord
from tierwise.messages import Request, Response, StreamEvent
from tierwise.strategies.base import TaskContext


class FixedStrategy:
    """Always the same model; still logs a decision so every trace says who chose what."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.name = f"fixed:{spec.id}"

    def may_call(self) -> list[ModelSpec]:
        return [self.spec]

    async def _decide(self, task: TaskContext) -> None:
        await task.record(
            DecisionRecord(
                task_id=task.task_id,
                router="fixed",
                chosen_model=self.spec.id,
                candidates=[{"model": self.spec.id}],
                reason=f"policy {self.name} pins the model",
            )
        )

    async def run(self, request: Request, task: TaskContext) -> Response:
        await self._decide(task)
        return await task.call(request, self.spec)

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        await self._decide(task)
        async with aclosing(task.stream(request, self.spec)) as events:
            async for event in events:
                yield event
