"""The advisor hook: every executor call whose request carries the advisor tool comes here.

It decides per call: **native** when the executor is an Anthropic model that takes the
``advisor_20260301`` tool, the advisor is an Anthropic model too, and the provider row says
the account has the beta (``advisor_beta``, on by default); **emulated** otherwise. A request
without the tool whose history still holds advisor blocks has them stripped. Each consult
leaves a :class:`~tierwise.ledger.records.ConsultRecord`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from decimal import Decimal

from tierwise.advisor.emulate import Emulation, Limits
from tierwise.advisor.native import complete_native, stream_native
from tierwise.advisor.prompt import escalation_section, with_escalation, with_nudge
from tierwise.advisor.settings import AdvisorSettings
from tierwise.advisor.telemetry import (
    ConsultFacts,
    Mode,
    consult_records,
    native_facts,
    prior_consults,
)
from tierwise.advisor.tool import (
    AdvisorTool,
    find_advisor_tool,
    has_advisor_blocks,
    strip_advisor,
    with_beta,
)
from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import InvalidRequestError
from tierwise.messages import Request, Response, StreamEvent, Tool, UsageIteration
from tierwise.providers.base import ProviderConfig
from tierwise.strategies.base import TaskContext
from tierwise.strategies.route import conversation_key
from tierwise.streaming import StreamAccumulator

CONVERSATIONS_REMEMBERED = 4096


class ConversationSpend:
    """Advisor dollars per conversation (in memory, most recent conversations only)."""

    def __init__(self) -> None:
        self._spent: OrderedDict[str, Decimal] = OrderedDict()

    def spent(self, key: str) -> Decimal:
        return self._spent.get(key, Decimal(0))

    def add(self, key: str, amount: Decimal) -> None:
        self._spent[key] = self.spent(key) + amount
        self._spent.move_to_end(key)
        if len(self._spent) > CONVERSATIONS_REMEMBERED:
            self._spent.popitem(last=False)


def _anthropic_beta(providers: Mapping[str, ProviderConfig], executor: ModelSpec) -> bool:
    """The executor takes Anthropic's advisor tool on this account."""
    row = providers.get(executor.provider)
    return (
        row is not None
        and row.kind == "anthropic"
        and row.advisor_beta
        and executor.capabilities.native_advisor_tool
    )


def native_supported(
    providers: Mapping[str, ProviderConfig], executor: ModelSpec, advisor: ModelSpec
) -> bool:
    """Anthropic runs this pair's consults itself (else tierwise emulates them); Anthropic
    refuses a pair whose advisor is less capable than its executor."""
    return (
        _anthropic_beta(providers, executor)
        and advisor.provider == executor.provider
        and advisor.capabilities.advisor
        and advisor.profile.tier >= executor.profile.tier
    )


@dataclass(frozen=True)
class Plan:
    """How one request's consults run."""

    tool: AdvisorTool
    native: bool
    advisor: ModelSpec | None
    """``None``: a model the catalog does not know, passed to Anthropic as it is."""
    advisor_id: str


class AdvisorHook:
    """Runs executor requests that carry the advisor tool (an :class:`ExecutorHook`)."""

    def __init__(
        self,
        settings: AdvisorSettings,
        catalog: Catalog,
        providers: Mapping[str, ProviderConfig],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.providers = providers
        self.spend = ConversationSpend()

    def handles(self, request: Request) -> bool:
        return find_advisor_tool(request) is not None or has_advisor_blocks(request)

    # --- deciding ----------------------------------------------------------------------------

    def plan(self, tool: AdvisorTool, executor: ModelSpec) -> Plan:
        """Native or emulated, and who advises. An advisor the catalog does not know can
        only run natively (its cost is then unknown); otherwise it is a clear error."""
        found = (
            self.catalog.find(tool.model)
            or self.catalog.find_upstream(executor.provider, tool.model)
            or self.catalog.find_upstream("anthropic", tool.model)
        )
        if found is not None:
            native = native_supported(self.providers, executor, found)
            return Plan(tool, native, found, found.id)
        if _anthropic_beta(self.providers, executor):
            return Plan(tool, True, None, f"{executor.provider}:{tool.model}")
        hint = ", ".join(self.catalog.suggest(tool.model)) or "see `tierwise models`"
        raise InvalidRequestError(
            f"advisor model {tool.model!r} is not in the catalog (did you mean: {hint})"
        )

    def _scoped_plan(self, tool: AdvisorTool, executor: ModelSpec, task: TaskContext) -> Plan:
        """:meth:`plan`, refused when the caller's scope does not cover the advisor (a
        native consult is billed to the executor's call, so the call check never sees it)."""
        plan = self.plan(tool, executor)
        task.check_scope(plan.advisor_id)
        return plan

    def _without_advisor(self, plan: Plan, request: Request, spec: ModelSpec) -> bool:
        """The call goes out with the tool and advisor blocks stripped: a native conversation
        is over its caps, or the executor cannot call tools at all."""
        if plan.native:
            return self._capped(request)
        return not spec.capabilities.tools

    def _capped(self, request: Request) -> bool:
        """The conversation has used up its consults or advisor dollars."""
        cap = self.settings.max_consults_per_conversation
        if cap is not None and prior_consults(request) >= cap:
            return True
        return not self._may_spend(conversation_key(request))

    def _may_spend(self, key: str, pending: Decimal = Decimal(0)) -> bool:
        """The conversation ``key`` is under its advisor dollar cap (counting ``pending``,
        spent in the request under way)."""
        cap = self.settings.max_usd_per_conversation
        return cap is None or self.spend.spent(key) + pending < cap

    def _prepared(self, request: Request, native: bool, tool: AdvisorTool) -> Request:
        """The escalation section and the early nudge, as configured."""
        mode = self.settings.escalation_prompt
        if mode == "always" or (mode == "emulated" and not native):
            max_uses = tool.max_uses if tool.max_uses is not None else self.settings.max_uses
            section = escalation_section(self.settings, tool.name, max_uses)
            request = with_escalation(request, section)
        if self.settings.early_nudge:
            request = with_nudge(request, self.settings.nudge_text)
        return request

    # --- running -----------------------------------------------------------------------------

    async def complete(self, request: Request, spec: ModelSpec, task: TaskContext) -> Response:
        tool = find_advisor_tool(request)
        plan = None if tool is None else self._scoped_plan(tool, spec, task)
        if plan is None or self._without_advisor(plan, request, spec):
            return await task.call_model(strip_advisor(request), spec)
        if plan.native:
            return await self._complete_native(request, spec, plan, task)
        return await self._complete_emulated(request, spec, plan, task)

    async def _complete_native(
        self, request: Request, spec: ModelSpec, plan: Plan, task: TaskContext
    ) -> Response:
        upstream = self._native_request(request, plan)
        first_call = len(task.calls)
        response = await complete_native(upstream, spec, task, self.settings.max_pause_turns)
        await self._record_native(request, response, spec, plan, task, first_call=first_call)
        return response

    def _native_request(self, request: Request, plan: Plan) -> Request:
        """The request for Anthropic: the beta on, the tool naming the advisor upstream."""
        tool = plan.tool
        if plan.advisor is not None and tool.model != plan.advisor.name:  # a catalog id
            tool = tool.model_copy(update={"model": plan.advisor.name})
            tools = [tool.as_tool() if t.type == tool.type else t for t in request.tools]
            request = request.model_copy(update={"tools": tools})
        return with_beta(self._prepared(request, True, tool))

    async def _record_native(
        self,
        request: Request,
        response: Response,
        spec: ModelSpec,
        plan: Plan,
        task: TaskContext,
        *,
        first_call: int,
    ) -> None:
        """Consult records for the calls from ``task.calls[first_call]`` on."""
        billed = [
            (UsageIteration.model_validate(iteration), call.id)
            for call in task.calls[first_call:]
            for iteration in call.iterations
        ]
        facts = native_facts(response.content, billed, spec, self.catalog)
        await self._record(
            task, request, response, mode="native", spec=spec, plan=plan, facts=facts
        )

    async def _complete_emulated(
        self, request: Request, spec: ModelSpec, plan: Plan, task: TaskContext
    ) -> Response:
        emulation, executor_request = self._emulation(request, spec, plan)
        response, facts = await emulation.run(executor_request, request, task)
        await self._record(
            task, request, response, mode="emulated", spec=spec, plan=plan, facts=facts
        )
        return response

    def _stream_emulated(
        self, request: Request, spec: ModelSpec, plan: Plan, task: TaskContext
    ) -> AsyncGenerator[StreamEvent]:
        emulation, executor_request = self._emulation(request, spec, plan)

        async def finish(response: Response, facts: dict[str, ConsultFacts]) -> None:
            await self._record(
                task, request, response, mode="emulated", spec=spec, plan=plan, facts=facts
            )

        return emulation.stream(executor_request, request, task, finish)

    def _emulation(
        self, request: Request, spec: ModelSpec, plan: Plan
    ) -> tuple[Emulation, Request]:
        """The emulation for ``request`` and the executor's request it starts from."""
        if plan.advisor is None:  # plan() never emulates an unknown advisor
            raise InvalidRequestError(f"advisor model {plan.tool.model!r} is not in the catalog")
        limits = self._limits(request, plan.tool)
        instructions = self.settings.advisor_instructions
        emulation = Emulation(plan.tool, spec, plan.advisor, limits, instructions)
        executor_request = self._prepared(emulation.executor_request(request), False, plan.tool)
        return emulation, executor_request

    def _limits(self, request: Request, tool: AdvisorTool) -> Limits:
        cap = self.settings.max_consults_per_conversation
        left = None if cap is None else max(cap - prior_consults(request), 0)
        key = conversation_key(request)
        return Limits(
            max_uses=tool.max_uses if tool.max_uses is not None else self.settings.max_uses,
            max_tokens=tool.max_tokens or self.settings.max_tokens,
            conversation_left=left,
            may_spend=lambda pending: self._may_spend(key, pending),
        )

    async def _record(
        self,
        task: TaskContext,
        request: Request,
        response: Response,
        *,
        mode: Mode,
        spec: ModelSpec,
        plan: Plan,
        facts: Mapping[str, ConsultFacts],
    ) -> None:
        records = consult_records(
            task.task_id,
            request,
            response,
            mode=mode,
            executor=spec,
            advisor_id=plan.advisor_id,
            facts=facts,
        )
        key = conversation_key(request)
        for record in records:
            self.spend.add(key, record.advisor_cost_usd or Decimal(0))
            await task.record(record)

    # --- streaming ---------------------------------------------------------------------------

    async def stream(
        self, request: Request, spec: ModelSpec, task: TaskContext
    ) -> AsyncGenerator[StreamEvent]:
        """Native: the upstream's own events (pauses resumed); emulated: each executor step
        live, each consult's blocks once it is done, as one message."""
        tool = find_advisor_tool(request)
        plan = None if tool is None else self._scoped_plan(tool, spec, task)
        if plan is None or self._without_advisor(plan, request, spec):
            async with aclosing(task.stream_model(strip_advisor(request), spec)) as events:
                async for event in events:
                    yield event
            return
        if not plan.native:
            async with aclosing(self._stream_emulated(request, spec, plan, task)) as emulated:
                async for event in emulated:
                    yield event
            return
        upstream = self._native_request(request, plan)
        first_call = len(task.calls)
        accumulator = StreamAccumulator()
        native_events = stream_native(upstream, spec, task, self.settings.max_pause_turns)
        async with aclosing(native_events):
            async for event in native_events:
                accumulator.feed(event)
                yield event
        response = accumulator.response()
        await self._record_native(request, response, spec, plan, task, first_call=first_call)


def advisor_tool(
    advisor: ModelSpec, *, max_uses: int | None, max_tokens: int | None, caching: str | None
) -> Tool:
    """The ``advisor_20260301`` tool a policy adds: the advisor by catalog id (resolved to
    the upstream name when the tool goes to Anthropic natively)."""
    fields: dict[str, object] = {
        "model": advisor.id,
        "max_uses": max_uses,
        "max_tokens": max_tokens,
    }
    if caching:
        fields["caching"] = {"type": "ephemeral", "ttl": caching}
    return AdvisorTool.model_validate(fields).as_tool()
