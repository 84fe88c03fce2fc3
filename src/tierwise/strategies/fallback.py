"""``?fallback=a,b`` on any policy: the models its calls fail over to, in order.

The wrapped strategy still chooses the model; this only tells the task context which models
to move to when that one fails before answering (see :mod:`tierwise.failover`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from tierwise.catalog import ModelSpec
from tierwise.messages import Request, Response, StreamEvent
from tierwise.strategies.base import Strategy, TaskContext, closing_stream
from tierwise.strategies.reach import reachable_models


class WithFallbacks:
    """``inner`` whose tasks fail over to ``fallbacks`` instead of the configured chains."""

    def __init__(self, inner: Strategy, fallbacks: Sequence[ModelSpec]) -> None:
        self.inner = inner
        self.fallback_specs = list(fallbacks)
        self.fallbacks = [spec.id for spec in fallbacks]
        joiner = "&" if "?" in inner.name else "?"
        self.name = f"{inner.name}{joiner}fallback={','.join(self.fallbacks)}"

    def may_call(self) -> list[ModelSpec] | None:
        inner = reachable_models(self.inner)
        return None if inner is None else [*inner, *self.fallback_specs]

    async def run(self, request: Request, task: TaskContext) -> Response:
        task.fallbacks = self.fallbacks
        return await self.inner.run(request, task)

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        task.fallbacks = self.fallbacks
        async with closing_stream(self.inner.stream(request, task)) as events:
            async for event in events:
                yield event
