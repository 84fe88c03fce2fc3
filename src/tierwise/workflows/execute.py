"""``plan:<planner>`` and ``decompose:<orchestrator>``: plan with a strong model, execute
each step on the cheapest capable executor, check every step, re-plan from the artifacts.

One task runs as: the planner's plan (role ``planner``) → steps in dependency order, each a
sub-task (``parent_id`` = the task) whose executor is the cheapest candidate meeting the
step's capability (a routing decision in the ledger), whose output goes through its
acceptance gate (a gate record) → a failed step is tried again one capable candidate up
(an escalation record), and after ``replan_after`` failures the planner re-plans from the
plan, the finished steps' outputs and the failures (an escalation to the planner) → the
result is assembled from the outputs of the plan's final steps. ``decompose`` asks for
independent sub-tasks plus a combining step and runs ready steps concurrently.

Policy parameters: ``executors=a,b`` (default: ``routing.candidates``, else every model
with a key), ``judge=<model>`` (reads ``judge`` checks; default: the planner),
``replan_after=2``, ``max_replans=1``, ``concurrency`` (1 for plan, 4 for decompose),
``max_steps=8``, ``step_tokens=4096``, ``on_gate_error=escalate|accept|fail`` (a ``judge``
check whose call failed: a failed step attempt, an output accepted unverified, or the task
fails; default ``[cascade] on_gate_error``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.errors import BudgetExceededError, PolicyError, TierwiseError, WorkflowError
from tierwise.gates import GateErrorPolicy, accepted, check_recorded, gate_error_policy
from tierwise.ledger.records import EscalationRecord, OutcomeRecord
from tierwise.messages import Request, Response, StreamEvent, TextBlock, Usage
from tierwise.routing.base import Decision, RouteContext
from tierwise.routing.choose import pick, priced
from tierwise.routing.registry import RouterEnv
from tierwise.strategies.base import TaskContext
from tierwise.streaming import events_from_response
from tierwise.workflows.acceptance import acceptance_gate, clipped
from tierwise.workflows.plan import DEFAULT_MAX_STEPS, Plan, Step
from tierwise.workflows.planner import Mode, Planner, StepOutcome, task_description
from tierwise.workflows.structured import model_request, user

EXECUTOR_SYSTEM = """\
You carry out one step of a larger plan. Do this step's goal and nothing beyond it, building \
on the outputs of earlier steps given as inputs. Your output is checked against the step's \
acceptance criteria. Reply with the step's output only."""

INPUT_CHARS = 12_000


@dataclass(frozen=True)
class PlanOptions:
    replan_after: int = 2
    """Failed step attempts (since the last plan) that trigger a re-plan."""
    max_replans: int = 1
    concurrency: int = 1
    """Ready steps run at once (independent steps of a decomposition)."""
    max_steps: int = DEFAULT_MAX_STEPS
    step_tokens: int = 4096
    on_gate_error: GateErrorPolicy = "escalate"
    """What a check that could not run (its judge call failed) means for the step."""


class PlanStrategy:
    """Plan, route each step, check it, re-plan on repeated failure, assemble the result."""

    def __init__(
        self,
        planner: Planner,
        executors: Sequence[ModelSpec],
        *,
        judge: ModelSpec,
        settings: Settings,
        options: PlanOptions,
        name: str,
    ) -> None:
        if not executors:
            raise PolicyError(f"policy {name!r} has no executor models")
        self.planner = planner
        self.executors = list(executors)
        self.judge = judge
        self.settings = settings
        self.options = options
        self.name = name

    def may_call(self) -> list[ModelSpec]:
        return [self.planner.spec, *self.executors, self.judge]

    async def run(self, request: Request, task: TaskContext) -> Response:
        return await _Run(self, request, task).execute()

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        """The assembled result as one stream (steps cannot stream a result not yet made)."""
        response = await self.run(request, task)
        for event in events_from_response(response):
            yield event


class _Run:
    """The state of one task under a :class:`PlanStrategy`."""

    def __init__(self, strategy: PlanStrategy, request: Request, task: TaskContext) -> None:
        self.strategy = strategy
        self.options = strategy.options
        self.request = request
        self.task = task
        self.plan: Plan | None = None
        self.done: dict[str, StepOutcome] = {}
        self.attempts: dict[str, list[StepOutcome]] = {}
        self.failures: list[StepOutcome] = []
        """Failed attempts since the current plan was made."""
        self.replans = 0

    async def execute(self) -> Response:
        self.plan = await self.strategy.planner.plan(self.request, self.task)
        while ready := self._ready():
            for outcome in await _all(self._run_step(step) for step in ready):
                self._tally(outcome)
            if len(self.failures) >= self.options.replan_after:
                await self._replan()
        return self._assemble()

    def _ready(self) -> list[Step]:
        assert self.plan is not None
        waiting = [s for s in self.plan.steps if s.id not in self.done]
        ready = [s for s in waiting if all(dep in self.done for dep in s.depends_on)]
        return ready[: self.options.concurrency]

    def _tally(self, outcome: StepOutcome) -> None:
        self.attempts.setdefault(outcome.step.id, []).append(outcome)
        if outcome.passed:
            self.done[outcome.step.id] = outcome
            self._offer_partial()
        else:
            self.failures.append(outcome)

    def _offer_partial(self) -> None:
        """The finished steps' outputs, as the task's best answer so far (what a task stopped
        by its budget hands back), ranked above any single executor's answer."""
        finished = list(self.done.values())
        text = "\n\n".join(f"## {o.step.goal}\n\n{o.output}" for o in finished)
        self.task.guard.offer(self._response(text, finished[-1].model), score=len(finished))

    # --- a step -------------------------------------------------------------------------

    async def _run_step(self, step: Step) -> StepOutcome:
        earlier = self.attempts.get(step.id, [])
        prompt = self._step_prompt(step, earlier[-1] if earlier else None)
        spec, decision = self._route(step, prompt, attempt=len(earlier))
        sub = await self.task.subtask(
            f"plan-step:{step.id}",
            prompt_text=step.goal,
            metadata={"step": step.id, "attempt": len(earlier) + 1, "plan_task": self.task.task_id},
        )
        await sub.record(decision.record(sub.task_id))
        if earlier and earlier[-1].model != spec.id:
            trigger = f"step {step.id} failed its check: {earlier[-1].reason}"
            await sub.record(
                EscalationRecord(
                    task_id=sub.task_id,
                    from_model=earlier[-1].model,
                    to_model=spec.id,
                    trigger=trigger,
                )
            )
        try:
            return await self._execute_step(sub, step, spec, prompt, attempt=len(earlier) + 1)
        except TierwiseError as exc:
            stopped = isinstance(exc, BudgetExceededError)  # ended early, not broken
            outcome = "failure" if stopped else "error"
            await sub.record(OutcomeRecord(task_id=sub.task_id, outcome=outcome, detail=str(exc)))
            raise

    async def _execute_step(
        self, sub: TaskContext, step: Step, spec: ModelSpec, prompt: str, *, attempt: int
    ) -> StepOutcome:
        strategy = self.strategy
        request = self._step_request(spec, prompt)
        response = await sub.call(request, spec, role="executor")
        call_id = next((c.id for c in reversed(sub.calls) if c.role == "executor"), None)
        gate = acceptance_gate(
            step.acceptance, goal=step.goal, judge=strategy.judge, settings=strategy.settings
        )
        name = f"acceptance:{step.acceptance.kind}"
        on_error = self.options.on_gate_error
        verdict = await check_recorded(
            gate, request, response, sub, call_id=call_id, name=name, on_error=on_error
        )
        passed = accepted(verdict, on_error)
        outcome = "success" if passed else "failure"
        await sub.record(
            OutcomeRecord(
                task_id=sub.task_id, outcome=outcome, source="gate", detail=verdict.reason
            )
        )
        return StepOutcome(step, response.model, attempt, passed, response.text(), verdict.reason)

    def _route(self, step: Step, prompt: str, *, attempt: int) -> tuple[ModelSpec, Decision]:
        """The cheapest executor meeting the step's capability; after ``attempt`` failures,
        the capable one ``attempt`` places up the price ladder (the last when past it)."""
        requirement = step.requirement()
        estimate = Request(messages=[user(prompt)], max_tokens=self.options.step_tokens)
        executors = self.strategy.executors
        chosen = pick(estimate, executors, RouteContext(catalog=self.task.catalog), requirement)
        spec, how = chosen.spec, chosen.how
        capable = [s for s, _ in priced(estimate, executors) if not requirement.gaps(s)]
        if attempt and len(capable) > 1:
            spec = capable[min(attempt, len(capable) - 1)]
            how = f"capable candidate {capable.index(spec) + 1} of {len(capable)} by price"
            how += f", after {attempt} failed attempt(s)"
        reason = f"step {step.id} needs {requirement.describe()}: {how}"
        return spec, Decision(router="plan", chosen=spec.id, scores=chosen.scores, reason=reason)

    def _step_request(self, spec: ModelSpec, prompt: str) -> Request:
        return model_request(
            spec,
            self.strategy.settings,
            system=EXECUTOR_SYSTEM,
            messages=[user(prompt)],
            max_tokens=self.options.step_tokens,
        )

    def _step_prompt(self, step: Step, last: StepOutcome | None) -> str:
        assert self.plan is not None
        inputs = "\n".join(
            f'<input step="{o.step.id}" goal="{o.step.goal}">\n'
            f"{clipped(o.output, INPUT_CHARS)}\n</input>"
            for o in self._inputs(step)
        )
        check = step.acceptance
        parts = [
            f"<task>\n{task_description(self.request)}\n</task>",
            f"<approach>\n{self.plan.summary}\n</approach>",
            inputs,
            f'<step id="{step.id}">\n{step.goal}\n</step>',
            f'<acceptance kind="{check.kind}">\n{check.criteria}\n</acceptance>',
        ]
        if last is not None:
            parts.append(
                f"<previous_attempt>\nIt failed its check: {last.reason}\n"
                f"{clipped(last.output, INPUT_CHARS)}\n</previous_attempt>"
            )
        return "\n".join(part for part in parts if part)

    def _inputs(self, step: Step) -> list[StepOutcome]:
        """The finished steps ``step`` builds on, directly or through its dependencies, in
        the order they finished."""
        needed: set[str] = set()
        frontier = list(step.depends_on)
        while frontier:
            dep = frontier.pop()
            if dep not in needed and dep in self.done:
                needed.add(dep)
                frontier += self.done[dep].step.depends_on
        return [o for step_id, o in self.done.items() if step_id in needed]

    # --- re-planning and the result -----------------------------------------------------

    async def _replan(self) -> None:
        assert self.plan is not None
        failed = sorted({o.step.id for o in self.failures})
        last = self.failures[-1]
        if self.replans >= self.options.max_replans:
            raise WorkflowError(
                f"plan failed: step(s) {', '.join(failed)} failed their checks "
                f"{len(self.failures)} time(s) after {self.replans} re-plan(s); "
                f"last: step {last.step.id} on {last.model}: {last.reason}"
            )
        planner = self.strategy.planner
        trigger = f"re-plan after {len(self.failures)} failed step attempt(s): {', '.join(failed)}"
        await self.task.record(
            EscalationRecord(
                task_id=self.task.task_id,
                from_model=last.model,
                to_model=planner.spec.id,
                trigger=trigger,
            )
        )
        self.plan = await planner.replan(
            self.request, self.task, self.plan, self.done, self.failures
        )
        self.replans += 1
        self.failures = []

    def _assemble(self) -> Response:
        assert self.plan is not None
        finals = [self.done[step.id] for step in self.plan.sinks()]
        if len(finals) == 1:
            text = finals[0].output
        else:
            text = "\n\n".join(f"## {o.step.goal}\n\n{o.output}" for o in finals)
        return self._response(text, finals[-1].model)

    def _response(self, text: str, model: str) -> Response:
        return Response(
            id=f"msg_plan_{self.task.task_id}",
            model=model,
            content=[TextBlock(text=text)],
            stop_reason="end_turn",
            usage=_usage(self.task),
        )


async def _all(steps: Iterable[Coroutine[Any, Any, StepOutcome]]) -> list[StepOutcome]:
    """Run ``steps`` concurrently; the first failure is raised as itself (not as a group)."""
    try:
        async with asyncio.TaskGroup() as group:
            running = [group.create_task(step) for step in steps]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in running]


def _usage(task: TaskContext) -> Usage:
    """Tokens of every call of the task, summed per axis (informational: the ledger's call
    records carry the exact cost)."""
    calls = [c for c in task.calls if c.status == "ok"]
    return Usage(
        input_tokens=sum(c.input_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls),
        cache_write_5m_tokens=sum(c.cache_write_5m_tokens for c in calls),
        cache_write_1h_tokens=sum(c.cache_write_1h_tokens for c in calls),
        cache_read_tokens=sum(c.cache_read_tokens for c in calls),
        estimated=any(c.tokens_estimated for c in calls),
    )


# --- building from a policy -------------------------------------------------------------------

_LIMITS: dict[str, tuple[int, int]] = {
    "replan_after": (1, 20),
    "max_replans": (0, 10),
    "concurrency": (1, 32),
    "max_steps": (1, 32),
    "step_tokens": (16, 200_000),
}


def _int_param(kind: str, params: Mapping[str, str], key: str, default: int) -> int:
    low, high = _LIMITS[key]
    raw = params.get(key)
    if raw is None:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise PolicyError(
            f"policy {kind!r}: {key} must be an integer from {low} to {high}, got {raw!r}"
        )
    return int(raw)


def _options(kind: str, params: Mapping[str, str], settings: Settings) -> PlanOptions:
    defaults = PlanOptions(concurrency=4 if kind == "decompose" else 1)
    on_error = params.get("on_gate_error", settings.cascade.on_gate_error)
    return PlanOptions(
        replan_after=_int_param(kind, params, "replan_after", defaults.replan_after),
        max_replans=_int_param(kind, params, "max_replans", defaults.max_replans),
        concurrency=_int_param(kind, params, "concurrency", defaults.concurrency),
        max_steps=_int_param(kind, params, "max_steps", defaults.max_steps),
        step_tokens=_int_param(kind, params, "step_tokens", defaults.step_tokens),
        on_gate_error=gate_error_policy(on_error),
    )


def build_plan_strategy(
    mode: Mode, planner_id: str, params: Mapping[str, str], env: RouterEnv
) -> PlanStrategy:
    """``plan:<planner>?executors=a,b&...`` or ``decompose:<orchestrator>?...``."""
    from tierwise.strategies.route import resolve_candidates  # noqa: PLC0415

    if not planner_id:
        raise PolicyError(f"policy {mode!r} needs a planner model: {mode}:<provider:model>")
    known = ("executors", "judge", "on_gate_error", *_LIMITS)
    for key in params:
        if key not in known:
            takes = ", ".join(known)
            raise PolicyError(f"policy {mode!r} does not take {key!r} (takes: {takes})")
    options = _options(mode, params, env.settings)
    planner_spec = env.catalog.get(planner_id)
    executors = resolve_candidates(params.get("executors", "").split(","), env)
    judge = env.catalog.get(params["judge"]) if params.get("judge") else planner_spec
    planner = Planner(planner_spec, env.settings, mode=mode, max_steps=options.max_steps)
    query = "&".join(f"{key}={value}" for key, value in params.items())
    name = f"{mode}:{planner_spec.id}" + (f"?{query}" if query else "")
    return PlanStrategy(
        planner, executors, judge=judge, settings=env.settings, options=options, name=name
    )
