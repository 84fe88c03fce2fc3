"""``[advisor]``: the defaults of the advisor rung and the executor's escalation prompt.

Example::

    [advisor]
    executor = "openai:gpt-5-mini"           # the default `advisor` policy's executor
    model = "anthropic:claude-opus-4-7"      # ... and its advisor
    max_uses = 3                             # consults per request (the tool's own max_uses wins)
    after_failed_attempts = 2
    hard_categories = ["security", "concurrency", "data migrations"]
    early_nudge = true
    max_consults_per_conversation = 6
    max_usd_per_conversation = 0.50
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HARD_CATEGORIES = (
    "security",
    "concurrency",
    "data migrations",
    "architecture decisions",
    "performance-critical code",
)


class AdvisorSettings(BaseModel):
    """How an executor consults a stronger model mid-task (see :mod:`tierwise.advisor`)."""

    model_config = ConfigDict(extra="forbid")

    executor: str = "anthropic:claude-haiku-4-5"
    """The executor of the default ``advisor`` policy (the ``tierwise/advisor`` model)."""
    model: str = "anthropic:claude-opus-4-7"
    """The advisor of the default ``advisor`` policy."""
    max_uses: int | None = Field(default=3, ge=0)
    """Consults per request when the tool does not say (``None``: no limit)."""
    max_tokens: int = Field(default=2048, gt=0)
    """The advisor's output cap per consult when the tool does not say."""
    escalation_prompt: Literal["emulated", "always", "never"] = "emulated"
    """When to add the escalation section to the executor's system prompt: only when the
    advisor is emulated (Anthropic trains its executors for the native tool), always, never."""
    consult_before_approach: bool = True
    after_failed_attempts: int | None = Field(default=2, ge=1)
    hard_categories: list[str] = Field(default_factory=lambda: list(DEFAULT_HARD_CATEGORIES))
    early_nudge: bool = False
    """On a conversation's first turn, remind the executor to consult before it starts."""
    nudge_text: str = "Before you start, consult the advisor about your approach."
    max_consults_per_conversation: int | None = Field(default=None, ge=0)
    """Consults over a whole conversation (earlier turns' results count)."""
    max_usd_per_conversation: Decimal | None = Field(default=None, ge=0)
    """Advisor dollars over a conversation; once spent, consults get ``max_uses_exceeded``."""
    max_pause_turns: int = Field(default=4, ge=0)
    """How many times a native ``pause_turn`` is resumed before it is returned as it is."""
    advisor_instructions: str = (
        "You are the advisor of a less capable executor model working on the task in the "
        "transcript. Read the whole transcript and give the executor concise, concrete "
        "guidance for its next steps: a plan, a correction, or what to check. Do not do the "
        "work yourself and do not address the user."
    )
