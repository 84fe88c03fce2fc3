"""The executor's escalation prompt: when it must consult, and the early nudge."""

from __future__ import annotations

from tierwise.advisor.settings import AdvisorSettings
from tierwise.messages import Request, TextBlock


def escalation_section(settings: AdvisorSettings, name: str, max_uses: int | None) -> str:
    """The system-prompt section that tells the executor when to consult."""
    when = []
    if settings.consult_before_approach:
        when.append("before you commit to an approach on anything non-trivial")
    if settings.after_failed_attempts is not None:
        n = settings.after_failed_attempts
        when.append(f"after {n} failed attempt{'s' if n > 1 else ''} at the same step")
    if settings.hard_categories:
        when.append("whenever the task involves " + ", ".join(settings.hard_categories))
    when.append("when you believe you are done with a hard task, to check your result")
    limit = "" if max_uses is None else f" You may consult it at most {max_uses} times."
    lines = "\n".join(f"- {item}" for item in when)
    return (
        f"You have an `{name}` tool backed by a stronger model. It takes no arguments: it "
        f"reads the whole conversation and answers with advice. Consult it:\n{lines}\n"
        f"Give its advice serious weight; if evidence contradicts it, say so in one more "
        f"consult.{limit} Do not consult for routine steps."
    )


def with_escalation(request: Request, section: str) -> Request:
    """``request`` with ``section`` as the last system block (once)."""
    if any(block.text == section for block in request.system):
        return request
    return request.model_copy(update={"system": [*request.system, TextBlock(text=section)]})


def is_first_turn(request: Request) -> bool:
    return not any(m.role == "assistant" for m in request.messages)


def with_nudge(request: Request, text: str) -> Request:
    """On a conversation's first turn, ``text`` appended to the last user message."""
    if not is_first_turn(request) or not request.messages:
        return request
    *rest, last = request.messages
    nudged = last.model_copy(update={"content": [*last.content, TextBlock(text=text)]})
    return request.model_copy(update={"messages": [*rest, nudged]})
