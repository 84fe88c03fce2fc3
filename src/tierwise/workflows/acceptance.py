"""Acceptance checks as gates: a plan's checks are data, each kind is a small gate on the
:class:`~tierwise.gates.Gate` seam.

``judge`` asks a model (by default the planner) for a verdict in structured output — cheap,
since it mostly reads; the others are deterministic: ``regex``, ``contains``, ``json``,
``python`` (the answer's code parses) and ``none``. A failed check is a result, never an
exception; a judge whose answer is unusable fails the check and says so (a judge that cannot
be reached raises: the gate could not run).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.gates.base import Gate, GateResult
from tierwise.messages import Request, Response
from tierwise.strategies.base import TaskContext
from tierwise.workflows.plan import AcceptanceCheck
from tierwise.workflows.structured import AnswerError, model_request, parse_json_as, user

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)```", re.DOTALL)
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


def python_source(text: str) -> str:
    """The Python in an answer: its python (or untagged) fenced blocks, else the whole text."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    return "\n\n".join(body for tag, body in blocks if tag.lower() in ("", "py", "python"))


def json_source(text: str) -> str:
    """The JSON in an answer: its first json (or untagged) fenced block, else the text."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in ("", "json")]
    return blocks[0] if blocks else text.strip()


@dataclass
class RegexGate:
    pattern: str
    name: str = "acceptance:regex"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        found = re.search(self.pattern, answer.text(), re.MULTILINE) is not None
        verb = "matches" if found else "does not match"
        return GateResult(passed=found, reason=f"output {verb} /{self.pattern}/")


@dataclass
class ContainsGate:
    text: str
    name: str = "acceptance:contains"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        found = self.text.casefold() in answer.text().casefold()
        verb = "contains" if found else "does not contain"
        return GateResult(passed=found, reason=f"output {verb} {self.text!r}")


@dataclass
class JsonGate:
    name: str = "acceptance:json"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        try:
            json.loads(json_source(answer.text()))
        except json.JSONDecodeError as exc:
            return GateResult(passed=False, reason=f"output is not JSON ({exc.msg})")
        return GateResult(passed=True, reason="output is JSON")


@dataclass
class PythonGate:
    name: str = "acceptance:python"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        source = python_source(answer.text())
        if not source.strip():
            return GateResult(passed=False, reason="output has no Python code")
        try:
            ast.parse(source)
        except SyntaxError as exc:
            return GateResult(passed=False, reason=f"Python syntax error line {exc.lineno}")
        return GateResult(passed=True, reason="the code parses as Python")


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
        return PythonGate()
    return NoCheck()
