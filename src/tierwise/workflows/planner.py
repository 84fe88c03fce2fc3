"""The planner: a (strong) model writes the plan, and re-plans from the artifacts.

A plan is asked for in structured output and checked (:func:`~tierwise.workflows.plan.parse_plan`);
an invalid answer gets one re-ask that quotes what was wrong, then a :class:`PlanError`.
A re-plan is a fresh request built from the artifacts — the task, the current plan, each
finished step's output and each failure with its reason — never a continuation of the
planner's earlier conversation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.errors import PlanError
from tierwise.messages import Message, Request
from tierwise.strategies.base import TaskContext
from tierwise.workflows.acceptance import clipped
from tierwise.workflows.plan import PLAN_SCHEMA, Plan, Step, parse_plan
from tierwise.workflows.structured import AnswerError, assistant, model_request, user

Mode = Literal["plan", "decompose"]
PLANNER_MAX_TOKENS = 4096
ARTIFACT_CHARS = 6000

_COMMON = """\
For each step give: id (short, unique: s1, s2, ...); goal (self-contained: the executor sees \
only the task, this goal and the outputs of the steps listed in depends_on); depends_on (ids \
of earlier steps whose output it needs); capability (task_kind "simple", "standard" or \
"complex", and the level 1-5 each skill must reach — ask for the least that will do, since \
cheaper models run the simpler steps); acceptance (how the output is checked: "judge" with \
criteria a reviewer checks, "regex" or "contains" with a pattern, "json", "python" for code \
that must parse, or "none"; criteria always says in words what must hold).
Use at most {max_steps} steps, and fewer when the task is simple.
Answer with JSON that matches the schema, nothing else."""

PLAN_SYSTEM = (
    """\
You are the planner. Write a short ordered plan for the task below; cheaper models carry out \
the steps one at a time, and each step's output is checked before the next one starts. \
The last step must produce the complete final answer to the task from the earlier outputs.
"""
    + _COMMON
)

DECOMPOSE_SYSTEM = (
    """\
You are the orchestrator. Split the task below into independent sub-tasks that can run in \
parallel (no depends_on between them), each on the cheapest model that has the capability \
it needs, then one last step that depends on all of them and combines their outputs into \
the complete final answer. A task that does not split is one step.
"""
    + _COMMON
)

REPLAN_NOTE = """
This is a re-plan: some steps failed their checks. Plan the remaining work from the \
artifacts below. Finished steps keep their ids and outputs: depend on them by id and do not \
repeat them; new steps need new ids. Change the approach where the failures show it is wrong."""

REASK = (
    "That plan is invalid: {problem}. Answer again with the whole plan as JSON that matches "
    "the schema."
)


@dataclass(frozen=True)
class StepOutcome:
    """One attempt at a step: who ran it, what came out, whether it passed its check."""

    step: Step
    model: str
    attempt: int
    passed: bool
    output: str
    reason: str


def task_description(request: Request) -> str:
    """The task as the planner and the executors read it: instructions and conversation."""
    parts = []
    if system := "".join(block.text for block in request.system):
        parts.append(f"<instructions>\n{system}\n</instructions>")
    if len(request.messages) == 1:
        parts.append(request.messages[0].text())
    else:
        parts += [f"[{m.role}]\n{m.text()}" for m in request.messages if m.text()]
    return "\n\n".join(parts)


def _artifacts(done: Mapping[str, StepOutcome], failures: Sequence[StepOutcome]) -> str:
    finished = "\n".join(
        f'<output step="{o.step.id}" model="{o.model}">\n{clipped(o.output, ARTIFACT_CHARS)}\n'
        "</output>"
        for o in done.values()
    )
    failed = "\n".join(
        f'<failure step="{o.step.id}" model="{o.model}" attempt="{o.attempt}">\n'
        f"check: {o.reason}\noutput:\n{clipped(o.output, ARTIFACT_CHARS)}\n</failure>"
        for o in failures
    )
    return f"<finished>\n{finished}\n</finished>\n<failures>\n{failed}\n</failures>"


class Planner:
    """Asks ``spec`` for a plan (``mode="plan"``) or a decomposition (``"decompose"``)."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        *,
        mode: Mode = "plan",
        max_steps: int,
        max_tokens: int = PLANNER_MAX_TOKENS,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.mode = mode
        self.max_steps = max_steps
        self.max_tokens = max_tokens

    @property
    def system(self) -> str:
        template = PLAN_SYSTEM if self.mode == "plan" else DECOMPOSE_SYSTEM
        return template.format(max_steps=self.max_steps)

    async def plan(self, request: Request, task: TaskContext) -> Plan:
        prompt = f"<task>\n{task_description(request)}\n</task>"
        return await self._ask(task, self.system, prompt, finished=())

    async def replan(
        self,
        request: Request,
        task: TaskContext,
        plan: Plan,
        done: Mapping[str, StepOutcome],
        failures: Sequence[StepOutcome],
    ) -> Plan:
        """A new plan for what is left, from the task, the plan and the step artifacts."""
        prompt = (
            f"<task>\n{task_description(request)}\n</task>\n"
            f"<plan>\n{plan.as_json()}\n</plan>\n{_artifacts(done, failures)}"
        )
        return await self._ask(task, self.system + REPLAN_NOTE, prompt, finished=list(done))

    async def _ask(
        self, task: TaskContext, system: str, prompt: str, finished: Sequence[str]
    ) -> Plan:
        messages: list[Message] = [user(prompt)]
        problem = ""
        for _ in range(2):  # the answer, then one re-ask
            request = model_request(
                self.spec,
                self.settings,
                system=system,
                messages=messages,
                max_tokens=self.max_tokens,
                schema=PLAN_SCHEMA,
                schema_name="plan",
            )
            answer = (await task.call(request, self.spec, role="planner")).text()
            try:
                return parse_plan(answer, finished=finished, max_steps=self.max_steps)
            except AnswerError as exc:
                problem = str(exc)
            messages += [assistant(answer), user(REASK.format(problem=problem))]
        raise PlanError(f"planner {self.spec.id} gave an invalid plan twice: {problem}")
