"""The seven-dimension rubric a judge model scores a workflow's outcome on.

Root-cause soundness, surgical scope discipline, fidelity to the plan, correctness, tests,
code quality and explanation, each 1 (poor) to 5 (excellent), asked for in structured output.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.messages import Request
from tierwise.workflows.acceptance import clipped
from tierwise.workflows.structured import model_request, user

DIMENSIONS: dict[str, str] = {
    "root_cause": "root-cause soundness: the real cause is found and addressed, not a symptom",
    "scope_discipline": "surgical scope discipline: only what the task needs is changed",
    "plan_fidelity": "fidelity to the plan: the result does what the plan set out, or says why not",
    "correctness": "correctness: the result is right and would work",
    "tests": "tests: the change is tested (or the checks that matter are shown)",
    "code_quality": "code quality: clear, idiomatic, maintainable",
    "explanation": "explanation: what was done and why is said briefly and truly",
}
"""Rubric key -> what a judge scores under it."""

SHORT_LABELS: dict[str, str] = {
    "root_cause": "root cause",
    "scope_discipline": "scope",
    "plan_fidelity": "plan fid.",
    "correctness": "correct",
    "tests": "tests",
    "code_quality": "quality",
    "explanation": "explain",
}

_LEVEL: dict[str, Any] = {"type": "integer", "enum": [1, 2, 3, 4, 5]}

RUBRIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{key: _LEVEL | {"description": what} for key, what in DIMENSIONS.items()},
        "notes": {"type": "string", "description": "Two sentences at most: the main reasons."},
    },
    "required": [*DIMENSIONS, "notes"],
    "additionalProperties": False,
}

RUBRIC_SYSTEM = (
    "You grade the outcome of a task done by an AI workflow (a plan, then its execution). "
    "Score each dimension from 1 (poor) to 5 (excellent); a dimension the task does not "
    "call for (e.g. tests for a question) scores by whether the outcome handles it sensibly.\n"
    + "\n".join(f"- {key}: {what}" for key, what in DIMENSIONS.items())
    + "\nAnswer with JSON that matches the schema, nothing else."
)
JUDGE_MAX_TOKENS = 1024


Level = Annotated[int, Field(ge=1, le=5)]


class RubricScores(BaseModel):
    """A judge's scores, one per dimension (1-5), and its short notes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root_cause: Level
    scope_discipline: Level
    plan_fidelity: Level
    correctness: Level
    tests: Level
    code_quality: Level
    explanation: Level
    notes: str = ""

    def scores(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in DIMENSIONS}


def rubric_request(
    judge: ModelSpec,
    settings: Settings,
    *,
    task: str,
    reference: str,
    plan: str,
    outcome: str,
) -> Request:
    """The judge's request: the task, what a good outcome does, the plan and the outcome."""
    parts = [f"<task>\n{task}\n</task>"]
    if reference:
        parts.append(f"<reference>\n{reference}\n</reference>")
    parts += [
        f"<plan>\n{clipped(plan or '(no plan recorded)', 12_000)}\n</plan>",
        f"<outcome>\n{clipped(outcome)}\n</outcome>",
    ]
    return model_request(
        judge,
        settings,
        system=RUBRIC_SYSTEM,
        messages=[user("\n".join(parts))],
        max_tokens=JUDGE_MAX_TOKENS,
        schema=RUBRIC_SCHEMA,
        schema_name="rubric",
    )
