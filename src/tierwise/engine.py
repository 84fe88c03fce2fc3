"""The engine: the one door to models for the library, the CLI and the gateway.

``await engine.complete(request, policy="fixed:anthropic:claude-haiku-4-5")`` resolves the
policy to a strategy, runs it through a task context that calls providers, and returns the
response with its trace and exact cost. A task's records (its calls, decisions, sub-tasks,
outcome) are kept as they happen and appended to the ledger together when it ends, failed or
not, in one transaction, before the answer is handed back (:meth:`Ledger.append_durably`): a
task is never stored without its calls, and an answer given is on record. A stream holds
back its end (the message's last delta and stop) until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from functools import cached_property
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.advisor.runner import AdvisorHook
from tierwise.budget import TaskBudget
from tierwise.catalog import Catalog, ModelSpec, load_catalog
from tierwise.config import Settings, load_settings
from tierwise.errors import BudgetExceededError, InvalidRequestError, TierwiseError
from tierwise.failover import Failover
from tierwise.ledger.records import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    LedgerRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.store import Ledger
from tierwise.messages import MessageDelta, MessageStop, Request, Response, StreamEvent
from tierwise.policies import resolve_policy
from tierwise.providers.base import Provider
from tierwise.providers.factory import build_provider
from tierwise.redaction import Redactor
from tierwise.routing.registry import RouterEnv
from tierwise.scope import ModelScope
from tierwise.strategies.base import Recorder, Strategy, TaskContext, closing_stream
from tierwise.strategies.budgeted import budget_of

STRATEGIES_KEPT = 1024
"""Built strategies the engine keeps (oldest dropped past it): a gateway whose keys may send
inline policies sees unboundedly many distinct ones."""

Observer = Callable[[LedgerRecord], None]
"""Sees each record of a task as soon as it is stored (e.g. the gateway's decision header)."""


class _TaskRecords:
    """A task's records, kept until it ends (then appended as one group), each cleaned of
    secrets (``redact``) and shown to the observer as it comes."""

    def __init__(self, observer: Observer | None, redact: Callable[[LedgerRecord], None]) -> None:
        self.records: list[LedgerRecord] = []
        self._observer = observer
        self._redact = redact

    async def keep(self, record: LedgerRecord) -> None:
        self._redact(record)
        self.records.append(record)
        if self._observer is not None:
            self._observer(record)


class Result(BaseModel):
    """A finished task: the response, what it cost and how it got there."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    task_id: str
    policy: str
    response: Response
    cost_usd: Decimal | None
    """Exact total over every call of the task; ``None`` when any price is unknown."""
    calls: list[CallRecord]
    decisions: list[DecisionRecord]
    gates: list[GateRecord] = Field(default_factory=list)
    escalations: list[EscalationRecord] = Field(default_factory=list)

    def explain(self) -> str:
        """One line per decision (who was chosen and why), then per escalation."""
        lines = [f"{d.router}: {d.chosen_model} — {d.reason}" for d in self.decisions]
        lines += [f"{e.from_model} -> {e.to_model}: {e.trigger}" for e in self.escalations]
        return "\n".join(lines)


def _served(catalog: Catalog, settings: Settings, given: Mapping[str, Provider]) -> Catalog:
    """``catalog`` without the models of inactive local hosts (unless a provider is given)."""
    inactive = {p: hint for p, hint in settings.inactive_providers().items() if p not in given}
    return catalog.without_providers(inactive) if inactive else catalog


def _as_request(request: Request | Mapping[str, Any] | str) -> Request:
    if isinstance(request, Request):
        return request
    if isinstance(request, str):
        return Request.from_prompt(request)
    try:
        return Request.model_validate(request)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(f"invalid request: {where}: {first['msg']}") from None


class Engine:
    """Routes, calls, verifies and accounts; async. See :class:`SyncEngine` for sync code."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        catalog: Catalog | None = None,
        ledger: Ledger | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._ledger = ledger
        self._providers: dict[str, Provider] = dict(providers or {})
        self.catalog = _served(
            catalog or load_catalog(extra_models=self.settings.models),
            self.settings,
            self._providers,
        )
        """Models of shipped local hosts the config does not name are not in it."""
        self._strategies: dict[str, Strategy] = {}
        self.failover = Failover(self.settings.failover)
        """Fallback chains and per-upstream circuit breakers, shared by every task."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and migrated) on first use."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.settings.resolved_ledger_url())
        return self._ledger

    @cached_property
    def advisor(self) -> AdvisorHook:
        """Runs executor calls that carry the advisor tool, under any policy."""
        return AdvisorHook(self.settings.advisor, self.catalog, self.settings.providers)

    def provider_for(self, spec: ModelSpec) -> Provider:
        if spec.provider not in self._providers:
            self._providers[spec.provider] = build_provider(spec.provider, self.settings)
        return self._providers[spec.provider]

    def strategy(self, policy: str | None = None) -> Strategy:
        """The strategy for ``policy``, built once per engine (routers load their artifacts
        and rules when built; a route strategy remembers each conversation's model)."""
        name = policy or self.settings.default_policy
        found = self._strategies.get(name)
        if found is None:
            env = RouterEnv.for_settings(self.settings, self.catalog)
            found = self._strategies[name] = resolve_policy(name, env)
            if len(self._strategies) > STRATEGIES_KEPT:
                del self._strategies[next(iter(self._strategies))]
        return found

    @cached_property
    def redactor(self) -> Redactor:
        """Every configured secret (:meth:`Settings.redactor`)."""
        return self.settings.redactor()

    async def record(self, record: LedgerRecord) -> None:
        """Append ``record`` to the ledger (off the event loop), e.g. user feedback. What an
        error wrote in it is stored without secrets, whichever provider raised the error."""
        self._redact(record)
        ledger = self.ledger
        if ledger.write_behind is not None:
            ledger.append(record)  # only queued: the ledger's writer thread stores it
        else:
            await asyncio.to_thread(ledger.append, record)

    def _redact(self, record: LedgerRecord) -> None:
        """Redact, in place, the texts of ``record`` that carry an error's message (only
        failures have one: nothing to do for an answered call)."""
        # type() is, not isinstance: a pydantic model's isinstance costs ~150 ns
        if type(record) is CallRecord:
            if record.error_message:
                record.error_message = self.redactor(record.error_message)
        elif type(record) is EscalationRecord and record.trigger.startswith("failover"):
            record.trigger = self.redactor(record.trigger)
        elif type(record) is OutcomeRecord and record.outcome == "error" and record.detail:
            record.detail = self.redactor(record.detail)

    async def feedback(self, task_id: str, correct: bool, note: str = "") -> OutcomeRecord:
        """Record a user's verdict on task ``task_id``'s answer (``tierwise learn`` reads it);
        an unknown task is an :class:`InvalidRequestError`."""
        ledger = self.ledger
        if not await asyncio.to_thread(ledger.tasks, task_id):
            raise InvalidRequestError(f"no task {task_id!r} in the ledger at {ledger.url}")
        outcome = "success" if correct else "failure"
        record = OutcomeRecord(
            task_id=task_id, outcome=outcome, correct=correct, source="user", detail=note
        )
        await self.record(record)
        return record

    async def _open_task(
        self,
        request: Request,
        strategy: Strategy,
        source: str,
        parent_id: str | None,
        observer: Observer | None = None,
        *,
        budget: TaskBudget | None = None,
        metadata: Mapping[str, Any] | None = None,
        scope: ModelScope | None = None,
    ) -> tuple[TaskContext, _TaskRecords]:
        self.ledger  # noqa: B018 (opened now: a ledger that cannot open fails before any call)
        task = TaskRecord(
            parent_id=parent_id,
            policy=strategy.name,
            source=source,
            metadata=dict(metadata or {}),
            prompt_text=request.prompt_text() if self.settings.log_content else None,
        )
        kept = _TaskRecords(observer, self._redact)
        await kept.keep(task)
        context = self.task_context(task.id, parent_id=parent_id, record=kept.keep, budget=budget)
        context.scope = scope
        return context, kept

    def task_context(
        self,
        task_id: str,
        *,
        parent_id: str | None = None,
        record: Recorder | None = None,
        budget: TaskBudget | None = None,
    ) -> TaskContext:
        """A context for task ``task_id`` (already in the ledger) that calls models through
        this engine: its providers, failover, advisor hook and ledger (or ``record``)."""
        context = TaskContext(
            task_id,
            catalog=self.catalog,
            provider_for=self.provider_for,
            record=record or self.record,
            log_content=self.settings.log_content,
            parent_id=parent_id,
            failover=self.failover,
            budget=budget,
        )
        context.advisor = self.advisor
        return context

    async def _close_task(
        self, task: TaskContext, kept: _TaskRecords, error: TierwiseError | None
    ) -> None:
        """Record the task's outcome and append all its records, durably (see the module)."""
        stopped = isinstance(error, BudgetExceededError)  # ended early, not broken
        outcome = "failure" if stopped else "error" if error else "success"
        detail = str(error) if error else ""
        await task.record(OutcomeRecord(task_id=task.task_id, outcome=outcome, detail=detail))
        await self.ledger.append_durably(kept.records)

    async def complete(
        self,
        request: Request | Mapping[str, Any] | str,
        policy: str | None = None,
        *,
        source: str = "library",
        parent_id: str | None = None,
        observer: Observer | None = None,
        budget: TaskBudget | None = None,
        metadata: Mapping[str, Any] | None = None,
        scope: ModelScope | None = None,
    ) -> Result:
        """Run one task under ``policy`` (default: the config's ``default_policy``) within
        ``budget`` (default: the policy's ``budget_usd`` / ``budget_tokens``); a task that
        runs out raises :class:`BudgetExceededError` carrying its partial result. ``metadata`` is
        stored on the task's record (the gateway: the key that made it); ``scope``: the models
        the caller may run (every call is checked against it)."""
        canonical = _as_request(request)
        strategy = self.strategy(policy)
        own = budget or budget_of(strategy)
        task, kept = await self._open_task(
            canonical,
            strategy,
            source,
            parent_id,
            observer,
            budget=own,
            metadata=metadata,
            scope=scope,
        )
        try:
            response = await strategy.run(canonical, task)
        except TierwiseError as exc:
            await self._close_task(task, kept, exc)
            self._attach_partial(exc, task, strategy)
            raise
        except asyncio.CancelledError:  # the caller stopped waiting: say so, as a stream does
            abandoned = InvalidRequestError("request abandoned by the caller")
            await self._close_task(task, kept, abandoned)
            raise
        await self._close_task(task, kept, None)
        return self._result(task, strategy, response)

    @staticmethod
    def _result(task: TaskContext, strategy: Strategy, response: Response) -> Result:
        return Result(
            task_id=task.task_id,
            policy=strategy.name,
            response=response,
            cost_usd=task.total_cost(),
            calls=task.calls,
            decisions=[r for r in task.records if isinstance(r, DecisionRecord)],
            gates=[r for r in task.records if isinstance(r, GateRecord)],
            escalations=[r for r in task.records if isinstance(r, EscalationRecord)],
        )

    def _attach_partial(self, exc: TierwiseError, task: TaskContext, strategy: Strategy) -> None:
        """A task stopped by its budget hands back its best answer so far as a result."""
        if isinstance(exc, BudgetExceededError) and exc.partial is not None:
            exc.result = self._result(task, strategy, exc.partial)

    async def stream(
        self,
        request: Request | Mapping[str, Any] | str,
        policy: str | None = None,
        *,
        source: str = "library",
        parent_id: str | None = None,
        observer: Observer | None = None,
        budget: TaskBudget | None = None,
        metadata: Mapping[str, Any] | None = None,
        scope: ModelScope | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Like :meth:`complete`, as canonical stream events; recorded when it ends, before
        its end (the last delta and the stop) is handed on."""
        canonical = _as_request(request)
        strategy = self.strategy(policy)
        own = budget or budget_of(strategy)
        task, kept = await self._open_task(
            canonical,
            strategy,
            source,
            parent_id,
            observer,
            budget=own,
            metadata=metadata,
            scope=scope,
        )
        end: list[StreamEvent] = []
        try:
            async with closing_stream(strategy.stream(canonical, task)) as events:
                async for event in events:
                    if end or isinstance(event, MessageDelta | MessageStop):
                        end.append(event)  # the answer's last bytes wait for its record
                    else:
                        yield event
        except TierwiseError as exc:
            await self._close_task(task, kept, exc)
            self._attach_partial(exc, task, strategy)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            # the consumer stopped reading (e.g. a client disconnected): say so in the ledger
            abandoned = InvalidRequestError("stream abandoned by the caller")
            await self._close_task(task, kept, abandoned)
            raise
        await self._close_task(task, kept, None)
        for event in end:
            yield event

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


class SyncEngine:
    """A blocking wrapper around :class:`Engine` for scripts and notebooks."""

    def __init__(self, settings: Settings | None = None, **engine_args: Any) -> None:
        self._runner = asyncio.Runner()
        self.engine = Engine(settings, **engine_args)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def complete(
        self, request: Request | Mapping[str, Any] | str, policy: str | None = None, **kw: Any
    ) -> Result:
        return self._runner.run(self.engine.complete(request, policy, **kw))

    def feedback(self, task_id: str, correct: bool, note: str = "") -> OutcomeRecord:
        """See :meth:`Engine.feedback`."""
        return self._runner.run(self.engine.feedback(task_id, correct, note))

    def close(self) -> None:
        self._runner.run(self.engine.aclose())
        self._runner.close()
