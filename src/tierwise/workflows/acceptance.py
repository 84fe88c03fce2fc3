"""Acceptance checks as gates: a plan's checks are data, each kind is a small gate on the
:class:`~tierwise.gates.Gate` seam.

``judge`` asks a model (by default the planner) for a verdict on the step's own criteria in
structured output — cheap, since it mostly reads. The others are deterministic: ``regex``,
``json`` and ``python`` (the answer's code parses) are the gates of :mod:`tierwise.gates`;
``contains`` and ``none`` are here. A failed check is a result, never an exception; a judge
whose answer is unusable fails the check and says so (a judge that cannot be reached
raises: the gate could not run, and the plan's ``on_gate_error`` decides what that means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.gates.base import Gate, GateResult
from tierwise.gates.static import JsonGate, PythonSyntaxGate, RegexGate
from tierwise.messages import Request, Response
from tierwise.strategies.base import TaskContext
from tierwise.workflows.plan import AcceptanceCheck
from tierwise.workflows.structured import AnswerError, model_request, parse_json_as, user

JUDGE_MAX_TOKENS = 512
MAX_OUTPUT_CHARS = 24_000

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "passed": {"type": "boolean"},
        "reason": {"type": "string", "description": "One sentence: why."},
    },
    "required": ["passed", "reason"],
    "additionalProperties": False,
}

JUDGE_SYSTEM = """\
You review the output of one step of a plan. Say whether the output meets the acceptance
criteria for the step's goal: strict about the criteria, indifferent to style.
Answer with JSON that matches the schema: {"passed": true or false, "reason": "one sentence"}."""


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    passed: bool
    reason: str = ""


def clipped(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """``text``, its middle cut when longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return f"{text[:head]}\n[… {len(text) - limit} characters cut …]\n{text[-(limit - head) :]}"


@dataclass
class ContainsGate:
    text: str
    name: str = "acceptance:contains"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        found = self.text.casefold() in answer.text().casefold()
        verb = "contains" if found else "does not contain"
        return GateResult(passed=found, reason=f"output {verb} {self.text!r}")


@dataclass
class NoCheck:
    name: str = "acceptance:none"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        return GateResult(passed=True, reason="no check asked for")


@dataclass
class JudgeGate:
    """A model reads the goal, the criteria and the output, and gives a verdict."""

    judge: ModelSpec
    settings: Settings
    goal: str
    criteria: str
    name: str = "acceptance:judge"

    def request(self, output: str) -> Request:
        prompt = (
            f"<goal>\n{self.goal}\n</goal>\n<criteria>\n{self.criteria}\n</criteria>\n"
            f"<output>\n{clipped(output)}\n</output>"
        )
        return model_request(
            self.judge,
            self.settings,
            system=JUDGE_SYSTEM,
            messages=[user(prompt)],
            max_tokens=JUDGE_MAX_TOKENS,
            schema=VERDICT_SCHEMA,
            schema_name="verdict",
        )

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        response = await task.call(self.request(answer.text()), self.judge, role="judge")
        try:
            verdict = parse_json_as(response.text(), Verdict)
        except AnswerError as exc:
            return GateResult(passed=False, reason=f"judge {self.judge.id} answer unusable: {exc}")
        return GateResult(passed=verdict.passed, score=float(verdict.passed), reason=verdict.reason)


def acceptance_gate(
    check: AcceptanceCheck, *, goal: str, judge: ModelSpec, settings: Settings
) -> Gate:
    """The gate that runs ``check`` (a judge check is read by ``judge``)."""
    if check.kind == "judge":
        return JudgeGate(judge, settings, goal, check.criteria)
    if check.kind == "regex":
        return RegexGate(check.pattern)
    if check.kind == "contains":
        return ContainsGate(check.pattern)
    if check.kind == "json":
        return JsonGate()
    if check.kind == "python":
        return PythonSyntaxGate()
    return NoCheck()
