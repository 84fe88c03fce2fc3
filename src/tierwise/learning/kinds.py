"""Task kinds: the routing rule that decides a prompt, and the kind its words suggest.

A kind is read from the prompt text alone (the ledger keeps it), with the same signals and
rule set the ``rules`` router uses — so "the ``feature`` rule's tasks escalate a lot" speaks
about the rule a user can change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.messages import Request
from tierwise.routing.rules import RuleSet, compile_rules
from tierwise.routing.signals import extract_signals

DEFAULT_RULE = "default"
"""The kind of a prompt no deciding rule fired on."""


@dataclass(frozen=True)
class TaskKind:
    rule: str
    """The rule that decided the prompt's tier (``default`` when none did)."""
    words: str
    """The kind its verbs suggest: ``simple``, ``standard``, ``complex`` or ``unclear``."""


class KindReader:
    """Reads (and remembers) the kind of each prompt."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self.rules: RuleSet = compile_rules(overrides)
        self._seen: dict[str, TaskKind] = {}

    def __call__(self, prompt: str) -> TaskKind:
        if prompt not in self._seen:
            signals = extract_signals(Request.from_prompt(prompt))
            verdict = self.rules.evaluate(signals)
            self._seen[prompt] = TaskKind(
                rule=verdict.decided_by or DEFAULT_RULE, words=signals.task_kind or "unclear"
            )
        return self._seen[prompt]
