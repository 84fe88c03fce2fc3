"""A judge model as a gate: a strong model reads a task and an answer and says, in
structured output, whether the answer is right.

Reading is cheap (input tokens) and the verdict short (a few output tokens). The judge's
call is made through the task's context with ``role="judge"``, so the ledger keeps it with
the task it judged. An unusable verdict (not JSON, wrong shape) fails the gate with the
reason; a judge that cannot be reached raises, as a gate that cannot run must.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from tierwise.catalog import ModelSpec
from tierwise.config import Settings
from tierwise.gates.base import GateResult
from tierwise.messages import Message, Request, Response, TextBlock
from tierwise.strategies.base import TaskContext

MAX_VERDICT_TOKENS = 300
MAX_TEXT_CHARS = 24_000

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "correct": {"type": "boolean"},
        "score": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["correct", "score", "reason"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = """\
You grade answers. Read the task and the candidate answer. Decide whether the answer does
what the task asks, correctly and completely; do not redo the task at length.
correct: true or false. score: your confidence that the answer is right, from 0 to 1.
reason: one short sentence. Answer with JSON that matches the schema, nothing else."""

_OBJECT = re.compile(r"\{.*\}", re.S)


class Verdict(BaseModel):
    correct: bool
    score: float = Field(ge=0, le=1)
    reason: str = ""


def _clip(text: str) -> str:
    if len(text) <= MAX_TEXT_CHARS:
        return text
    head = MAX_TEXT_CHARS * 3 // 4
    return f"{text[:head]}\n[…]\n{text[-(MAX_TEXT_CHARS - head) :]}"


def parse_verdict(text: str) -> Verdict | str:
    """The verdict in ``text``, or why there is none."""
    found = _OBJECT.search(text)
    if found is None:
        return "the judge's answer holds no JSON object"
    try:
        return Verdict.model_validate(json.loads(found.group(0)))
    except (ValueError, ValidationError) as exc:
        return f"the judge's verdict is malformed ({type(exc).__name__})"


class JudgeGate:
    """Gate ``judge:<model>``: pass when the judge model says the answer is right."""

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        self.spec = spec
        self.settings = settings
        self.name = f"judge:{spec.id}"

    def request(self, task: str, answer: str) -> Request:
        prompt = f"<task>\n{_clip(task)}\n</task>\n<answer>\n{_clip(answer)}\n</answer>"
        return Request(
            messages=[Message(role="user", content=[TextBlock(text=prompt)])],
            system=[TextBlock(text=SYSTEM_PROMPT)],
            max_tokens=MAX_VERDICT_TOKENS,
            **self._structured_output(),
        )

    def _structured_output(self) -> dict[str, Any]:
        row = self.settings.providers.get(self.spec.provider)
        if row is not None and row.kind == "anthropic":
            output = {"format": {"type": "json_schema", "schema": VERDICT_SCHEMA}}
            return {"origin": "anthropic", "extra": {"output_config": output}}
        if row is not None and row.kind == "openai":
            schema = {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}
            return {
                "origin": "openai",
                "extra": {"response_format": {"type": "json_schema", "json_schema": schema}},
            }
        return {}

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        judged = await task.call(
            self.request(request.prompt_text(), answer.text()), self.spec, role="judge"
        )
        verdict = parse_verdict(judged.text())
        if isinstance(verdict, str):
            return GateResult(passed=False, score=None, reason=verdict)
        return GateResult(passed=verdict.correct, score=verdict.score, reason=verdict.reason)
