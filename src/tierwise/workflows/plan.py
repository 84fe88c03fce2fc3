"""The plan artifact: ordered steps, each with a goal, an acceptance check, the capability it
needs and the earlier steps whose output it uses.

A planner model is asked for a plan in structured output against :data:`PLAN_SCHEMA` (kept
to what Anthropic's and OpenAI's strict structured outputs both accept: every property
required, no numeric bounds, enums for levels); its answer is checked against that schema,
then by :class:`Plan` (ids unique, dependencies on earlier or already finished steps, regex
patterns that compile). The step capability reuses the classifier router's vocabulary
(``task_kind`` and skill levels), so a step maps onto a capability profile the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.routing.choose import Requirement
from tierwise.routing.classifier import CLASSIFICATION_SCHEMA, Classification
from tierwise.workflows.structured import AnswerError, unfenced, validation_problem

CheckKind = Literal["judge", "regex", "contains", "json", "python", "none"]
CHECK_KINDS: tuple[str, ...] = ("judge", "regex", "contains", "json", "python", "none")
STEP_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
DEFAULT_MAX_STEPS = 8

ACCEPTANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "How the step's output is checked before the plan moves on.",
    "properties": {
        "kind": {
            "type": "string",
            "enum": list(CHECK_KINDS),
            "description": "judge: a reviewer model checks the criteria; regex: the output "
            "matches pattern (a Python regex); contains: the output contains pattern "
            "(case-insensitive); json: the output is JSON; python: its code parses as "
            "Python; none: no check",
        },
        "criteria": {"type": "string", "description": "What must hold, in words."},
        "pattern": {"type": "string", "description": "For regex and contains; else empty."},
    },
    "required": ["kind", "criteria", "pattern"],
    "additionalProperties": False,
}

STEP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "Short unique id, e.g. s1."},
        "goal": {
            "type": "string",
            "description": "What this step produces; self-contained, since the executor sees "
            "only the task, this goal and the outputs of the steps it depends on.",
        },
        "depends_on": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Ids of earlier steps whose output this step needs.",
        },
        "capability": CLASSIFICATION_SCHEMA,
        "acceptance": ACCEPTANCE_SCHEMA,
    },
    "required": ["id", "goal", "depends_on", "capability", "acceptance"],
    "additionalProperties": False,
}

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "description": "The approach, in one or two sentences."},
        "steps": {"type": "array", "items": STEP_SCHEMA},
    },
    "required": ["summary", "steps"],
    "additionalProperties": False,
}

_VALIDATOR = Draft202012Validator(PLAN_SCHEMA)


class AcceptanceCheck(BaseModel):
    """A check as data: ``kind`` names the gate, ``criteria`` says what must hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CheckKind
    criteria: str = ""
    pattern: str = ""

    def problem(self) -> str | None:
        """Why this check cannot run as given, or ``None``."""
        if self.kind in ("regex", "contains") and not self.pattern:
            return f"a {self.kind} check needs a pattern"
        if self.kind == "judge" and not self.criteria.strip():
            return "a judge check needs criteria"
        if self.kind == "regex":
            try:
                re.compile(self.pattern)
            except re.error as exc:
                return f"pattern {self.pattern!r} is not a valid regex ({exc})"
        return None


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    goal: str = Field(min_length=1)
    depends_on: tuple[str, ...] = ()
    capability: Classification
    acceptance: AcceptanceCheck

    def requirement(self) -> Requirement:
        """The capability profile an executor must meet for this step."""
        return self.capability.requirement()


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    summary: str = ""
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def sinks(self) -> list[Step]:
        """Steps no other step of this plan depends on: together they are the result."""
        used = {dep for step in self.steps for dep in step.depends_on}
        return [step for step in self.steps if step.id not in used]

    def check(self, finished: Collection[str] = (), max_steps: int = DEFAULT_MAX_STEPS) -> None:
        """:class:`AnswerError` unless the steps form a runnable plan after ``finished``."""
        if not 1 <= len(self.steps) <= max_steps:
            raise AnswerError(f"a plan needs 1 to {max_steps} steps, got {len(self.steps)}")
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            problem = next(_step_problems(step, seen, finished), None)
            if problem is not None:
                raise AnswerError(f"steps.{index}: {problem}")
            seen.add(step.id)

    def as_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1)


def _step_problems(step: Step, seen: set[str], finished: Collection[str]) -> Iterator[str]:
    if not STEP_ID.match(step.id):
        yield f"id {step.id!r} must be 1-40 letters, digits, '.', '_' or '-'"
    if step.id in seen or step.id in finished:
        yield f"id {step.id!r} is used twice (finished steps keep their ids)"
    for dep in step.depends_on:
        if dep not in seen and dep not in finished:
            yield f"depends_on {dep!r} is not an earlier step"
    if (problem := step.acceptance.problem()) is not None:
        yield f"acceptance: {problem}"


def parse_plan(
    text: str, *, finished: Collection[str] = (), max_steps: int = DEFAULT_MAX_STEPS
) -> Plan:
    """A planner's answer as a checked :class:`Plan`; :class:`AnswerError` saying what is
    wrong otherwise (not JSON, off the schema, or not runnable)."""
    try:
        data = json.loads(unfenced(text))
    except json.JSONDecodeError as exc:
        raise AnswerError(f"not JSON ({exc.msg})") from None
    error = best_match(_VALIDATOR.iter_errors(data))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "plan"
        raise AnswerError(f"{where}: {error.message}")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise AnswerError(validation_problem(exc)) from None
    plan.check(finished, max_steps)
    return plan
