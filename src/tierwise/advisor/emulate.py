"""The advisor emulated for any executor (OpenAI-compatible, local, Anthropic without the beta).

The executor gets an ``advisor`` function tool with no arguments. When it calls it, the
advisor model reads the whole transcript (no tools) and its advice, capped at the tool's
``max_tokens``, is the tool's result; the executor goes on. Over ``max_uses`` (or a
conversation's consult or dollar cap) the result is the ``max_uses_exceeded`` error and the
executor still goes on. The client gets what the native tool returns: ``server_tool_use`` +
``advisor_tool_result`` blocks in the content and a ``usage.iterations`` list. Streamed,
each executor step reaches the client as it comes (see :mod:`tierwise.advisor.live`) and the
turn is one message with the same content.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from decimal import Decimal

from tierwise.advisor.live import LiveStep
from tierwise.advisor.merge import iterations_of, merged_response
from tierwise.advisor.telemetry import ConsultFacts, Side
from tierwise.advisor.tool import (
    AdvisorTool,
    advice_result,
    advisor_function,
    as_client_tool_history,
    error_result,
    new_tool_use_id,
    without_beta,
)
from tierwise.advisor.transcript import advisor_request
from tierwise.catalog import ModelSpec
from tierwise.cost import billed_tokens
from tierwise.errors import (
    ContextLengthError,
    OverloadedError,
    ProviderError,
    RateLimitError,
    UpstreamTimeoutError,
)
from tierwise.ledger.records import CallRecord
from tierwise.messages import (
    AdvisorToolResultBlock,
    ContentBlock,
    JsonObject,
    Message,
    MessageDelta,
    MessageStop,
    Request,
    Response,
    ServerToolUseBlock,
    StreamEvent,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
    UsageIteration,
)
from tierwise.strategies.base import TaskContext

HARD_STEP_LIMIT = 16

Finish = Callable[[Response, dict[str, ConsultFacts]], Awaitable[None]]
"""Takes an emulated stream's merged response and its consults' facts (to record them)."""


def error_code(exc: ProviderError) -> str:
    """The advisor error code for a failed consult."""
    if isinstance(exc, ContextLengthError):
        return "prompt_too_long"
    if isinstance(exc, RateLimitError):
        return "too_many_requests"
    if isinstance(exc, OverloadedError):
        return "overloaded"
    if isinstance(exc, UpstreamTimeoutError):
        return "execution_time_exceeded"
    return "unavailable"


@dataclass
class Limits:
    """What one request may still spend on consults."""

    max_uses: int | None
    max_tokens: int
    conversation_left: int | None
    """Consults the conversation cap still allows (``None``: no cap)."""
    may_spend: Callable[[Decimal], bool]
    """Whether the conversation's advisor dollars allow another consult, given what this
    request has spent on the advisor so far."""


@dataclass
class _Run:
    """The state of one emulated turn."""

    transcript: Request
    content: list[ContentBlock] = field(default_factory=list)
    iterations: list[UsageIteration] = field(default_factory=list)
    usages: list[Usage] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    facts: dict[str, ConsultFacts] = field(default_factory=dict)
    uses: int = 0
    advisor_spend: Decimal = Decimal(0)


class Emulation:
    """One executor turn with an emulated advisor."""

    def __init__(
        self,
        tool: AdvisorTool,
        executor: ModelSpec,
        advisor: ModelSpec,
        limits: Limits,
        instructions: str,
    ) -> None:
        self.tool = tool
        self.executor = executor
        self.advisor = advisor
        self.limits = limits
        self.instructions = instructions

    def executor_request(self, request: Request) -> Request:
        """The client's request as the executor sees it: the advisor as a function tool and
        earlier consults as calls of it."""
        name = self.tool.name
        tools = [
            t if t.type != "advisor_20260301" else advisor_function(name) for t in request.tools
        ]
        messages = as_client_tool_history(request.messages, name)
        update = {"tools": tools, "messages": messages}
        return without_beta(request.model_copy(update=update))

    def _step_limit(self) -> int:
        uses = self.limits.max_uses
        return HARD_STEP_LIMIT if uses is None else min(uses + 3, HARD_STEP_LIMIT)

    async def run(
        self, request: Request, original: Request, task: TaskContext
    ) -> tuple[Response, dict[str, ConsultFacts]]:
        """The merged response and the facts of each consult (by its tool use id).

        ``request`` is the executor's request (see :meth:`executor_request`); ``original``
        the client's, whose system prompt and tools the advisor is shown.
        """
        run = _Run(transcript=request)
        limit = self._step_limit()
        for step in range(limit):
            response = await task.call(_step_request(run, step, limit), self.executor)
            if not await self._settle(run, response, original, task):
                break
        return self._merged(run), run.facts

    async def stream(
        self, request: Request, original: Request, task: TaskContext, finish: Finish
    ) -> AsyncGenerator[StreamEvent]:
        """:meth:`run` as one live message: each executor step streams as it comes (see
        :class:`LiveStep`), each consult's blocks follow once it is done. ``finish`` gets
        the merged response and the facts before the final ``message_delta``."""
        run = _Run(transcript=request)
        limit = self._step_limit()
        for step in range(limit):
            model = self.executor.id if step == 0 else None
            live = LiveStep(self.tool.name, len(run.content), model)
            events = task.stream(_step_request(run, step, limit), self.executor)
            async with aclosing(events):
                async for event in events:
                    for passed in live.feed(event):
                        yield passed
            goes_on = await self._settle(run, live.response(), original, task)
            for event in live.rest(run.content):
                yield event
            if not goes_on:
                break
        merged = self._merged(run)
        await finish(merged, run.facts)
        yield MessageDelta(
            stop_reason=merged.stop_reason, stop_sequence=merged.stop_sequence, usage=merged.usage
        )
        yield MessageStop()

    async def _settle(
        self, run: _Run, response: Response, original: Request, task: TaskContext
    ) -> bool:
        """Fold one executor step into ``run``, consulting where it called the advisor;
        whether the turn goes on."""
        executor_side = _side_of(task, response, self.executor)
        run.responses.append(response)
        run.usages.append(response.usage)
        run.iterations.extend(iterations_of(response.usage))
        calls = [b for b in response.tool_calls() if b.name == self.tool.name]
        if not calls:
            run.content.extend(response.content)
            return False
        results = await self._answer(run, response, original, task, executor_side)
        run.transcript = _appended(run.transcript, response, results)
        # the client's own tool calls end the turn
        return not any(b.name != self.tool.name for b in response.tool_calls())

    def _merged(self, run: _Run) -> Response:
        first, last = run.responses[0], run.responses[-1]
        merged = merged_response(first, last, run.content, run.iterations, run.usages)
        return merged.model_copy(update={"model": self.executor.id})

    async def _answer(
        self,
        run: _Run,
        response: Response,
        original: Request,
        task: TaskContext,
        executor_side: Side,
    ) -> list[ToolResultBlock]:
        """Consult for each advisor call in ``response``; its content goes to the client with
        the calls as advisor blocks, and the tool results for the executor come back."""
        results = []
        asked = original.model_copy(update={"messages": run.transcript.messages})
        for block in response.content:
            if not (isinstance(block, ToolUseBlock) and block.name == self.tool.name):
                run.content.append(block)
                continue
            prefix = _before(response.content, block)
            turn = [Message(role="assistant", content=prefix)] if prefix else []
            view = asked.model_copy(update={"messages": [*asked.messages, *turn]})
            result, advisor_side = await self._consult(run, view, task)
            srv_id = new_tool_use_id()
            run.content.append(ServerToolUseBlock(id=srv_id, name=self.tool.name, input={}))
            run.content.append(AdvisorToolResultBlock(tool_use_id=srv_id, content=result))
            run.facts[srv_id] = ConsultFacts(executor_side, advisor_side)
            results.append(ToolResultBlock(tool_use_id=block.id, content=_as_text(result)))
        return results

    def _refused(self, run: _Run) -> bool:
        limits = self.limits
        if limits.max_uses is not None and run.uses >= limits.max_uses:
            return True
        if limits.conversation_left is not None and run.uses >= limits.conversation_left:
            return True
        return not limits.may_spend(run.advisor_spend)

    async def _consult(
        self, run: _Run, view: Request, task: TaskContext
    ) -> tuple[JsonObject, Side]:
        """The advisor's answer to ``view`` (or why there is none) and what it cost."""
        if self._refused(run):
            return error_result("max_uses_exceeded"), Side(cost=Decimal(0))
        run.uses += 1
        asked = advisor_request(
            view,
            instructions=self.instructions,
            max_tokens=self.limits.max_tokens,
            caching=self.tool.caching,
        )
        try:
            answer = await task.call(asked, self.advisor, role="advisor")
        except ProviderError as exc:
            return error_result(error_code(exc)), _failed_side(task)
        side = _side_of(task, answer, self.advisor)
        run.advisor_spend += side.cost or Decimal(0)
        run.iterations.extend(iterations_of(answer.usage, "advisor_message", self.advisor.name))
        run.usages.append(answer.usage)
        return advice_result(answer.text(), answer.stop_reason), side


def _before(content: list[ContentBlock], call: ToolUseBlock) -> list[ContentBlock]:
    """The blocks of an executor message before ``call``, tool calls left out."""
    index = next(i for i, b in enumerate(content) if b is call)
    return [b for b in content[:index] if not isinstance(b, ToolUseBlock)]


def _as_text(result: JsonObject) -> str:
    if result.get("type") == "advisor_result":
        return str(result.get("text", ""))
    return f"advisor unavailable: {result.get('error_code', 'unavailable')}"


def _appended(transcript: Request, response: Response, results: list[ToolResultBlock]) -> Request:
    """The executor's transcript with its turn and the advisor's answers."""
    turn = Message(role="assistant", content=response.content)
    answers = Message(role="user", content=list(results))
    return transcript.model_copy(update={"messages": [*transcript.messages, turn, answers]})


def _step_request(run: _Run, step: int, limit: int) -> Request:
    """The executor's request for ``step``; the last one may not call a tool."""
    return run.transcript if step + 1 < limit else _no_more_tools(run.transcript)


def _no_more_tools(request: Request) -> Request:
    """The last step: the executor must answer without calling a tool."""
    return request.model_copy(update={"tool_choice": ToolChoice(type="none")})


def _last_call(task: TaskContext) -> CallRecord | None:
    calls = task.calls
    return calls[-1] if calls else None


def _side_of(task: TaskContext, response: Response, spec: ModelSpec) -> Side:
    """Tokens and cost of the call that just returned ``response``."""
    record = _last_call(task)
    cost = None if record is None else record.cost_usd
    call_id = None if record is None else record.id
    return Side(billed_tokens(response.usage), cost, call_id)


def _failed_side(task: TaskContext) -> Side:
    record = _last_call(task)
    if record is None:
        return Side()
    return Side(cost=record.cost_usd, call_id=record.id)
