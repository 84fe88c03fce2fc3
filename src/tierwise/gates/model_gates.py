"""Gates that ask a model: self-reported confidence, a judge's verdict, agreement of samples.

Every call a gate makes goes through the task context with ``role="judge"``, so it is
costed, recorded and counted against the task's budget like any other call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tierwise.catalog import ModelSpec
from tierwise.errors import GateError
from tierwise.evaluation.gates import final_answer
from tierwise.gates.base import GateResult
from tierwise.gates.text import code_blocks, find_json_object
from tierwise.messages import Message, Request, Response, TextBlock

if TYPE_CHECKING:
    from tierwise.strategies.base import TaskContext

VERDICT_MAX_TOKENS = 400
CONFIDENCE_QUESTION = (
    "How confident are you that your answer above is correct and complete? "
    'Reply with only a JSON object: {"confidence": <a number from 0 to 1>}'
)
JUDGE_SYSTEM = (
    "You review another model's answer to a task. Be strict: an answer passes only if it is "
    "correct and complete. Do not solve the task yourself beyond what checking needs. Reply "
    'with only a JSON object: {"verdict": "pass" or "fail", "score": <0 to 1>, '
    '"reason": "<one sentence>"}'
)
_STATED_CONFIDENCE = re.compile(r"confidence\W{0,3}\s*(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)


def _follow_up(request: Request, answer: Response, question: str) -> Request:
    """The conversation so far, the answer, and one more user turn; no tools."""
    messages = [
        *request.messages,
        Message(role="assistant", content=[TextBlock(text=answer.text() or "(no text)")]),
        Message(role="user", content=[TextBlock(text=question)]),
    ]
    return Request(
        messages=messages, system=request.system, max_tokens=VERDICT_MAX_TOKENS, headers={}
    )


def _fraction(value: Any, percent: bool = False) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    number = number / 100 if percent or number > 1 else number
    return number if 0 <= number <= 1 else None


def stated_confidence(text: str) -> float | None:
    """A confidence the answer states itself ("Confidence: 0.8", "confidence: 85%")."""
    found = _STATED_CONFIDENCE.search(text)
    return None if found is None else _fraction(found.group(1), found.group(2) == "%")


class ConfidenceGate:
    """Passes when the answering model's confidence is at least ``threshold``: stated in the
    answer, else asked for in a follow-up turn (a JSON reply)."""

    def __init__(self, threshold: float) -> None:
        if not 0 <= threshold <= 1:
            raise GateError(f"gate confidence: threshold {threshold} is not between 0 and 1")
        self.threshold = threshold
        self.name = f"confidence>={threshold:g}"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        confidence = stated_confidence(answer.text())
        source = "stated"
        if confidence is None:
            spec = task.catalog.get(answer.model)
            reply = await task.call(_follow_up(request, answer, CONFIDENCE_QUESTION), spec, "judge")
            verdict = find_json_object(reply.text()) or {}
            confidence, source = _fraction(verdict.get("confidence")), "asked"
        if confidence is None:
            return GateResult(False, None, "the model reported no confidence")
        passed = confidence >= self.threshold
        return GateResult(passed, confidence, f"{source} confidence {confidence:g}")


def transcript(request: Request) -> str:
    """The task as a reader sees it: system prompt and every turn's text."""
    lines = [f"System: {block.text}" for block in request.system]
    lines += [f"{m.role.capitalize()}: {m.text()}" for m in request.messages]
    return "\n\n".join(lines)


class JudgeGate:
    """A (stronger) model reads the task and the answer and returns a short verdict; cheap,
    because reading costs input tokens, not output tokens."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self.name = f"judge:{model.id}"

    def _request(self, request: Request, answer: Response) -> Request:
        prompt = (
            f"<task>\n{transcript(request)}\n</task>\n\n"
            f"<answer>\n{answer.text()}\n</answer>\n\nDoes the answer pass?"
        )
        return Request.from_prompt(
            prompt, system=[TextBlock(text=JUDGE_SYSTEM)], max_tokens=VERDICT_MAX_TOKENS
        )

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        reply = await task.call(self._request(request, answer), self.model, role="judge")
        verdict = find_json_object(reply.text())
        if verdict is None or str(verdict.get("verdict", "")).lower() not in ("pass", "fail"):
            return GateResult(False, None, "the judge gave no verdict")
        passed = str(verdict["verdict"]).lower() == "pass"
        reason = str(verdict.get("reason") or verdict["verdict"])
        return GateResult(passed, _fraction(verdict.get("score")), f"judge: {reason}")


def answer_key(text: str) -> str:
    """What two answers must share to agree: a stated final number, else the code, else the
    text, with case and whitespace ignored."""
    stated = final_answer(text)
    if stated is not None and stated.form != "last number":
        return f"{stated.value:.10g}"
    blocks = code_blocks(text)
    basis = "\n".join(blocks) if blocks else text
    return " ".join(basis.lower().split()).rstrip(".")


class AgreementGate:
    """Draws ``k - 1`` more samples from the answering model; passes when more than half of
    the ``k`` answers agree with this one (the score is the share that does)."""

    def __init__(self, k: int) -> None:
        if k < 2:
            raise GateError(f"gate agree: needs at least 2 samples, not {k}")
        self.k = k
        self.name = f"agree:{k}"

    async def check(self, request: Request, answer: Response, task: TaskContext) -> GateResult:
        spec = task.catalog.get(answer.model)
        sample = (
            request
            if request.temperature is not None
            else request.model_copy(update={"temperature": 1.0})
        )
        key = answer_key(answer.text())
        agreeing = 1
        for _ in range(self.k - 1):
            other = await task.call(sample, spec, role="judge")
            agreeing += answer_key(other.text()) == key
        share = agreeing / self.k
        return GateResult(agreeing * 2 > self.k, share, f"{agreeing} of {self.k} samples agree")
