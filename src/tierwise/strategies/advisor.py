"""``advisor:<executor>?advisor=<model>&max_uses=3&max_tokens=1024&caching=1h``.

The executor runs the task and may consult a stronger advisor mid-task. The strategy adds
Anthropic's ``advisor_20260301`` tool to the request (a request that already carries one
keeps its own) and calls the executor; the engine's advisor hook passes the tool through to
Anthropic natively or emulates it for any other executor (see :mod:`tierwise.advisor`).
``advisor`` alone is the config's ``[advisor]`` executor and model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

from tierwise.advisor.runner import advisor_tool, native_supported
from tierwise.advisor.tool import ADVISOR_TOOL_TYPE
from tierwise.catalog import ModelSpec
from tierwise.errors import PolicyError
from tierwise.ledger.records import DecisionRecord
from tierwise.messages import Request, Response, StreamEvent, Tool
from tierwise.routing.registry import RouterEnv
from tierwise.strategies.base import TaskContext

PARAMS = frozenset({"advisor", "max_uses", "max_tokens", "caching"})
CACHING = frozenset({"5m", "1h", "off"})


class AdvisorStrategy:
    """One executor that consults one advisor."""

    def __init__(
        self, executor: ModelSpec, advisor: ModelSpec, tool: Tool, *, native: bool, name: str
    ) -> None:
        self.executor = executor
        self.advisor = advisor
        self.tool = tool
        self.native = native
        self.name = name

    def may_call(self) -> list[ModelSpec]:
        return [self.executor, self.advisor]

    def with_tool(self, request: Request) -> Request:
        """``request`` with the advisor tool (its own, when it already carries one)."""
        if _carries_tool(request):
            return request
        return request.model_copy(update={"tools": [*request.tools, self.tool]})

    async def _decide(self, request: Request, task: TaskContext) -> None:
        mode = "natively" if self.native else "emulated"
        if _carries_tool(request):
            mode = "the request's own advisor tool"
        await task.record(
            DecisionRecord(
                task_id=task.task_id,
                router="advisor",
                chosen_model=self.executor.id,
                candidates=[{"model": self.executor.id}, {"model": self.advisor.id}],
                reason=f"policy {self.name}: {self.executor.id} executes and may consult "
                f"{self.advisor.id} ({mode})",
            )
        )

    async def run(self, request: Request, task: TaskContext) -> Response:
        await self._decide(request, task)
        return await task.call(self.with_tool(request), self.executor)

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        await self._decide(request, task)
        async with aclosing(task.stream(self.with_tool(request), self.executor)) as events:
            async for event in events:
                yield event


def _carries_tool(request: Request) -> bool:
    return any(tool.type == ADVISOR_TOOL_TYPE for tool in request.tools)


def _int(params: Mapping[str, str], key: str) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    if not raw.isdigit():
        raise PolicyError(f"policy 'advisor': {key} must be a whole number, not {raw!r}")
    return int(raw)


def _caching(params: Mapping[str, str]) -> str | None:
    raw = params.get("caching", "off")
    if raw not in CACHING:
        raise PolicyError(f"policy 'advisor': caching must be one of 5m, 1h, off, not {raw!r}")
    return None if raw == "off" else raw


def build_advisor_strategy(
    executor_id: str, params: Mapping[str, str], env: RouterEnv
) -> AdvisorStrategy:
    """The strategy for ``advisor:<executor>?<params>`` (defaults from ``[advisor]``)."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise PolicyError(
            f"policy 'advisor' has no parameter {unknown[0]!r} (known: {', '.join(sorted(PARAMS))})"
        )
    defaults = env.settings.advisor
    executor = env.catalog.get(executor_id or defaults.executor)
    advisor = env.catalog.get(params.get("advisor") or defaults.model)
    max_uses = _int(params, "max_uses")
    tool = advisor_tool(
        advisor,
        max_uses=defaults.max_uses if max_uses is None else max_uses,
        max_tokens=_int(params, "max_tokens") or defaults.max_tokens,
        caching=_caching(params),
    )
    native = native_supported(env.settings.providers, executor, advisor)
    query = "&".join(f"{key}={value}" for key, value in params.items())
    name = f"advisor:{executor.id}" + (f"?{query}" if query else "")
    return AdvisorStrategy(executor, advisor, tool, native=native, name=name)
