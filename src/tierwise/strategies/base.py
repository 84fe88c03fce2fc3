"""The strategy seam and the task context every strategy calls models through."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from decimal import Decimal
from typing import Any, Protocol

from tierwise.budget import BudgetGuard, TaskBudget
from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import billed_tokens, price_usage
from tierwise.errors import ProviderError
from tierwise.failover import Failover, failover_reason, fails_over
from tierwise.ledger.records import (
    CallRecord,
    EscalationRecord,
    LedgerRecord,
    Role,
    TaskRecord,
)
from tierwise.messages import Request, Response, StreamEvent
from tierwise.providers.base import Provider
from tierwise.providers.retry import noting_retries
from tierwise.scope import ModelScope
from tierwise.streaming import StreamAccumulator

Recorder = Callable[[LedgerRecord], Awaitable[None]]


class Strategy(Protocol):
    """Runs one task to a response, calling models only through ``task``."""

    name: str

    async def run(self, request: Request, task: TaskContext) -> Response: ...

    def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]: ...


@asynccontextmanager
async def closing_stream(
    events: AsyncIterator[StreamEvent],
) -> AsyncIterator[AsyncIterator[StreamEvent]]:
    """``events`` (a strategy's stream), closed on the way out: an abandoned stream is
    recorded at once, not whenever the garbage collector gets to it."""
    try:
        yield events
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()


class ExecutorHook(Protocol):
    """Takes over executor calls whose request it handles (the advisor tool: a consult loop)."""

    def handles(self, request: Request) -> bool: ...

    async def complete(self, request: Request, spec: ModelSpec, task: TaskContext) -> Response: ...

    def stream(
        self, request: Request, spec: ModelSpec, task: TaskContext
    ) -> AsyncGenerator[StreamEvent]: ...


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class TaskContext:
    """One task's view of the engine: call a model, record what happened."""

    def __init__(
        self,
        task_id: str,
        *,
        catalog: Catalog,
        provider_for: Callable[[ModelSpec], Provider],
        record: Recorder,
        log_content: bool = True,
        parent_id: str | None = None,
        failover: Failover | None = None,
        budget: TaskBudget | None = None,
    ) -> None:
        self.task_id = task_id
        self.parent_id = parent_id
        self.catalog = catalog
        self._provider_for = provider_for
        self._record = record
        self._log_content = log_content
        self.records: list[LedgerRecord] = []
        self.guard = BudgetGuard(budget)
        """The task's budget, spend and best answer so far (shared with its sub-tasks)."""
        self.failover = failover or Failover()
        self.fallbacks: list[str] | None = None
        """The policy's own fallback models (``?fallback=a,b``); ``None``: the config's."""
        self.advisor: ExecutorHook | None = None
        """Runs executor requests that carry the advisor tool (see :mod:`tierwise.advisor`)."""
        self.scope: ModelScope | None = None
        """The models the caller may run (a gateway key's allow-list); ``None``: any."""

    async def record(self, record: LedgerRecord) -> None:
        """Keep ``record`` in this task's trace and append it to the ledger."""
        self.records.append(record)
        if isinstance(record, CallRecord) and record.task_id == self.task_id:
            self.guard.charge(record)
        await self._record(record)

    async def subtask(
        self, policy: str, *, prompt_text: str | None = None, metadata: dict[str, Any] | None = None
    ) -> TaskContext:
        """A sub-task of this task (a plan step, a consult), linked by ``parent_id``. It shares
        this context's providers and settings; its records are this task's too, so its calls
        count in this task's cost."""
        task = TaskRecord(
            parent_id=self.task_id,
            policy=policy,
            source="subtask",
            prompt_text=prompt_text if self._log_content else None,
            metadata=metadata or {},
        )
        await self.record(task)
        child = copy.copy(self)
        child.task_id, child.parent_id, child.records = task.id, self.task_id, []
        child._record = self.record
        return child

    @property
    def calls(self) -> list[CallRecord]:
        return [r for r in self.records if isinstance(r, CallRecord)]

    def total_cost(self) -> Decimal | None:
        """The task's exact cost so far; ``None`` if any call's cost is unknown."""
        costs = [c.cost_usd for c in self.calls]
        if any(cost is None for cost in costs):
            return None
        return sum((c for c in costs if c is not None), Decimal(0))

    def check_scope(self, model_id: str) -> None:
        """ModelNotAllowedError when the caller's scope does not cover ``model_id``."""
        if self.scope is not None:
            self.scope.check([model_id])

    def _chain(self, spec: ModelSpec) -> list[ModelSpec]:
        """``spec`` and the models to fail over to, in order; a failover never leaves the
        caller's scope (a model outside it is skipped)."""
        self.check_scope(spec.id)
        ids = self.failover.chain(spec.id, self.fallbacks)
        scope = self.scope
        allowed = [i for i in ids[1:] if scope is None or scope.allows(i)]
        return [spec, *(self.catalog.get(model_id) for model_id in allowed)]

    async def _fail_over(self, failed: ModelSpec, to: ModelSpec, exc: ProviderError) -> None:
        """Record the move from ``failed`` to ``to`` as an explicit step."""
        trigger = failover_reason(exc)
        self.failover.moved(failed.id, to.id)
        await self.record(
            EscalationRecord(
                task_id=self.task_id, from_model=failed.id, to_model=to.id, trigger=trigger
            )
        )

    async def call(self, request: Request, spec: ModelSpec, role: Role = "executor") -> Response:
        """A model call; an executor request carrying the advisor tool (or advisor blocks) goes
        through :attr:`advisor`, which makes the calls it needs with :meth:`call_model`."""
        if role == "executor" and self.advisor is not None and self.advisor.handles(request):
            return await self.advisor.complete(request, spec, self)
        return await self.call_model(request, spec, role)

    async def stream(
        self, request: Request, spec: ModelSpec, role: Role = "executor"
    ) -> AsyncGenerator[StreamEvent]:
        """A streamed model call; see :meth:`call` and :meth:`stream_model`."""
        if role == "executor" and self.advisor is not None and self.advisor.handles(request):
            events = self.advisor.stream(request, spec, self)
        else:
            events = self.stream_model(request, spec, role)
        async with aclosing(events):  # an abandoned stream is recorded now, not when collected
            async for event in events:
                yield event

    async def call_model(
        self, request: Request, spec: ModelSpec, role: Role = "executor"
    ) -> Response:
        """A model call; before it answers, a retryable failure or an open circuit moves it to
        the next model of the fallback chain (a recorded step)."""
        chain = self._chain(spec)
        for index, candidate in enumerate(chain):
            try:
                return await self._guarded_call(request, candidate, role)
            except ProviderError as exc:
                if index + 1 == len(chain) or not fails_over(exc):
                    raise
                await self._fail_over(candidate, chain[index + 1], exc)
        raise AssertionError("unreachable: the chain is never empty")

    async def _guarded_call(self, request: Request, spec: ModelSpec, role: Role) -> Response:
        self.failover.admit(spec.provider, spec.id, spec.name)
        try:
            response = await self._call_once(request, spec, role)
        except ProviderError as exc:
            self.failover.settle(spec.id, exc)
            raise
        self.failover.settle(spec.id, None)
        return response

    async def stream_model(
        self, request: Request, spec: ModelSpec, role: Role = "executor"
    ) -> AsyncGenerator[StreamEvent]:
        """A streamed model call; it fails over like :meth:`call`, but only before its first
        event — after that a failure is the caller's to report."""
        chain = self._chain(spec)
        for index, candidate in enumerate(chain):
            events = self._guarded_stream(request, candidate, role)
            try:
                first = await anext(events)
            except StopAsyncIteration:
                return
            except ProviderError as exc:
                if index + 1 == len(chain) or not fails_over(exc):
                    raise
                await self._fail_over(candidate, chain[index + 1], exc)
                continue
            try:
                yield first
                async for event in events:
                    yield event
            finally:
                await events.aclose()
            return

    async def _guarded_stream(
        self, request: Request, spec: ModelSpec, role: Role
    ) -> AsyncGenerator[StreamEvent]:
        self.failover.admit(spec.provider, spec.id, spec.name)
        answered = False
        try:
            async with aclosing(self._stream_once(request, spec, role)) as events:
                async for event in events:
                    if not answered:
                        answered = True
                        self.failover.settle(spec.id, None)
                    yield event
        except ProviderError as exc:
            self.failover.settle(spec.id, exc)
            raise

    async def _call_once(self, request: Request, spec: ModelSpec, role: Role) -> Response:
        """One model call, timed, costed and recorded (failures too), within the budget."""
        self.guard.before(request, spec)
        start = time.perf_counter()
        retried: list[ProviderError] = []
        try:
            with noting_retries(retried):
                response = await self._provider_for(spec).complete(request, spec)
        except ProviderError as exc:
            await self._record_retried(request, spec, role, retried)
            failed = self._failed_call(request, spec, exc, role=role, latency_ms=_ms_since(start))
            await self.record(failed)
            raise
        except asyncio.CancelledError:  # the caller stopped waiting
            await self._record_retried(request, spec, role, retried)
            gone = ProviderError("request abandoned by the caller", provider=spec.provider)
            await self.record(self._cut_call(request, spec, gone, role=role, start=start))
            raise
        latency = _ms_since(start)
        await self._record_retried(request, spec, role, retried)
        record = self._call_record(
            request, response, spec, role=role, latency_ms=latency, ttft_ms=None
        )
        await self.record(record)
        self.guard.settle(response, role)
        return response

    async def _stream_once(
        self, request: Request, spec: ModelSpec, role: Role
    ) -> AsyncGenerator[StreamEvent]:
        """One streamed model call; recorded when the stream ends (or fails)."""
        self.guard.before(request, spec)
        start = time.perf_counter()
        ttft: float | None = None
        accumulator = StreamAccumulator()
        events = aiter(self._provider_for(spec).stream(request, spec))
        retried: list[ProviderError] = []
        try:
            event = await _first_event(events, retried)  # a stream is retried before it only
            await self._record_retried(request, spec, role, retried, stream=True)
            while event is not None:
                ttft = ttft if ttft is not None else _ms_since(start)
                accumulator.feed(event)
                yield event
                event = await anext(events, None)
        except ProviderError as exc:
            await self._record_retried(request, spec, role, retried, stream=True)
            latency = _ms_since(start)
            failed = self._failed_call(
                request, spec, exc, role=role, latency_ms=latency, ttft_ms=ttft
            )
            await self.record(failed.model_copy(update={"stream": True}))
            raise
        except (GeneratorExit, asyncio.CancelledError):  # closed, or cancelled mid-read
            # (before its first event too: the request was sent, as a cut call's was)
            abandoned = ProviderError(
                "stream abandoned by the caller", provider=spec.provider, model=spec.name
            )
            await self._record_retried(request, spec, role, retried, stream=True)
            cut = self._cut_call(request, spec, abandoned, role=role, start=start, ttft_ms=ttft)
            await self.record(cut.model_copy(update={"stream": True}))
            raise
        response = accumulator.response()
        latency = _ms_since(start)
        record = self._call_record(
            request, response, spec, role=role, latency_ms=latency, ttft_ms=ttft
        )
        await self.record(record.model_copy(update={"stream": True}))
        self.guard.settle(response, role, enforce=False)

    async def _record_retried(
        self,
        request: Request,
        spec: ModelSpec,
        role: Role,
        retried: list[ProviderError],
        *,
        stream: bool = False,
    ) -> None:
        """Record the attempts the retry layer retried that the upstream may bill (cost
        unknown), once: they come before the call's own record."""
        for exc in retried:
            failed = self._failed_call(request, spec, exc, role=role, latency_ms=None)
            await self.record(failed.model_copy(update={"stream": stream}))
        retried.clear()

    def _call_record(
        self,
        request: Request,
        response: Response,
        spec: ModelSpec,
        *,
        role: Role,
        latency_ms: float,
        ttft_ms: float | None,
    ) -> CallRecord:
        usage = response.usage
        cost = price_usage(
            usage, spec, lambda name: self.catalog.find_upstream(spec.provider, name)
        )
        billed = billed_tokens(usage)  # the ledger stores totals over every iteration
        return CallRecord(
            **self._who(request, spec, role),
            request_id=response.id,
            input_tokens=billed.input_tokens,
            output_tokens=billed.output_tokens,
            cache_write_5m_tokens=billed.cache_write_5m_tokens,
            cache_write_1h_tokens=billed.cache_write_1h_tokens,
            cache_read_tokens=billed.cache_read_tokens,
            iterations=[it.model_dump() for it in usage.iterations],
            tokens_estimated=usage.estimated,
            cost_usd=None if cost is None else cost.total,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            stop_reason=response.stop_reason,
            response_text=response.text() if self._log_content else None,
        )

    def _failed_call(
        self,
        request: Request,
        spec: ModelSpec,
        exc: ProviderError,
        *,
        role: Role,
        latency_ms: float | None,
        ttft_ms: float | None = None,
    ) -> CallRecord:
        # Upstreams do not bill a request they refused; a stream that failed midway, or a
        # request that timed out once sent, may be billed for work we cannot see.
        unseen = ttft_ms is not None or exc.may_be_billed
        return CallRecord(
            **self._who(request, spec, role),
            request_id=exc.request_id,
            status="error",
            cost_usd=None if unseen else Decimal(0),
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            error_type=type(exc).__name__,
            error_message=exc.message,
            http_status=exc.status,
        )

    def _cut_call(
        self,
        request: Request,
        spec: ModelSpec,
        exc: ProviderError,
        *,
        role: Role,
        start: float,
        ttft_ms: float | None = None,
    ) -> CallRecord:
        """A call its caller abandoned once the request was sent (answered or not, streamed
        or not): the upstream may bill it, unseen, so its cost is unknown (a gateway budget
        hold is charged its worst case)."""
        failed = self._failed_call(
            request, spec, exc, role=role, latency_ms=_ms_since(start), ttft_ms=ttft_ms
        )
        return failed.model_copy(update={"cost_usd": None})

    def _who(self, request: Request, spec: ModelSpec, role: Role) -> dict[str, Any]:
        """The fields every call record shares: which task, which model, what was asked."""
        return {
            "task_id": self.task_id,
            "parent_id": self.parent_id,
            "role": role,
            "provider": spec.provider,
            "model": spec.id,
            "prompt_text": request.prompt_text() if self._log_content else None,
        }


async def _first_event(
    events: AsyncIterator[StreamEvent], retried: list[ProviderError]
) -> StreamEvent | None:
    """A stream's first event (None: it ended without one), attempts retried before it that
    the upstream may bill noted in ``retried`` (in a coroutine of its own: the note's context
    must not span the generator's yields)."""
    with noting_retries(retried):
        return await anext(events, None)
