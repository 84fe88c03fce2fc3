"""Gates that read the answer alone: Python syntax, JSON, JSON Schema, a regex, and the
GSM8K answer checks of :mod:`tierwise.evaluation.gates` as live gates."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from tierwise.errors import GateError
from tierwise.evaluation.gates import GATES as ANSWER_CHECKS
from tierwise.evaluation.gates import GateVerdict
from tierwise.gates.base import GateResult
from tierwise.gates.text import json_text, python_code

if TYPE_CHECKING:
    from tierwise.messages import Request, Response
    from tierwise.strategies.base import TaskContext


class PythonSyntaxGate:
    """Passes when the answer's Python code blocks (or its whole text) parse with ``ast``."""

    name = "python"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        code = python_code(answer.text())
        if not code.strip():
            return GateResult(False, 0.0, "no Python code in the answer")
        try:
            ast.parse(code)
        except SyntaxError as exc:
            return GateResult(False, 0.0, f"SyntaxError: {exc.msg} (line {exc.lineno})")
        return GateResult(True, 1.0, "the Python code parses")


def _parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(json_text(text)), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


class JsonGate:
    """Passes when the answer (or its first ``json`` fenced block) is valid JSON."""

    name = "json"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        _, error = _parse_json(answer.text())
        if error is not None:
            return GateResult(False, 0.0, error)
        return GateResult(True, 1.0, "valid JSON")


class JsonSchemaGate:
    """Passes when the answer is JSON that validates against a JSON Schema (any draft the
    schema's ``$schema`` names; 2020-12 by default)."""

    def __init__(self, schema: dict[str, Any], *, name: str = "json_schema") -> None:
        validator_class = validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except schema_errors.SchemaError as exc:
            raise GateError(f"gate {name}: not a valid JSON Schema: {exc.message}") from None
        self._validator = validator_class(schema)
        self.name = name

    @classmethod
    def from_file(cls, path: Path) -> JsonSchemaGate:
        try:
            schema = json.loads(path.read_text("utf-8"))
        except OSError as exc:
            raise GateError(f"gate json_schema: cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise GateError(f"gate json_schema: {path} is not JSON: {exc.msg}") from None
        if not isinstance(schema, dict):
            raise GateError(f"gate json_schema: {path} holds no JSON Schema object")
        return cls(schema, name=f"json_schema:{path}")

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        value, error = _parse_json(answer.text())
        if error is not None:
            return GateResult(False, 0.0, error)
        problem = schema_errors.best_match(self._validator.iter_errors(value))
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "(root)"
            return GateResult(False, 0.0, f"schema violation at {where}: {problem.message}")
        return GateResult(True, 1.0, "valid against the schema")


class RegexGate:
    """Passes when the pattern is found in the answer's text (``re.search``)."""

    def __init__(self, pattern: str) -> None:
        try:
            self._pattern = re.compile(pattern)
        except re.error as exc:
            raise GateError(f"gate regex: bad pattern {pattern!r}: {exc}") from None
        self.name = f"regex:{pattern}"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        if self._pattern.search(answer.text()):
            return GateResult(True, 1.0, f"matches {self._pattern.pattern!r}")
        return GateResult(False, 0.0, f"does not match {self._pattern.pattern!r}")


class AnswerCheckGate:
    """One of the deterministic maths-answer checks (``answer``, ``arithmetic``,
    ``consistency``) that the offline GSM8K cascades use, on a live answer."""

    def __init__(self, name: str) -> None:
        if name not in ANSWER_CHECKS:
            raise GateError(f"no answer check {name!r} (known: {', '.join(ANSWER_CHECKS)})")
        self._check: Callable[[str], GateVerdict] = ANSWER_CHECKS[name]
        self.name = name

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        verdict = self._check(answer.text())
        return GateResult(verdict.passed, verdict.score, verdict.reason)
