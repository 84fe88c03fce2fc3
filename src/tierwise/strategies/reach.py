"""Which models a strategy may call: what a key's allow-list is checked against up front.

Every strategy of :mod:`tierwise.policies` says so through ``may_call()`` — tiers, routers'
candidates, classifier, judge, advisor, planner, executors, a policy's ``fallback=``
models. A strategy without ``may_call`` (a library user's own) may call anything; the task
context still checks each call it makes (:class:`tierwise.scope.ModelScope`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tierwise.catalog import ModelSpec


@runtime_checkable
class Reaching(Protocol):
    def may_call(self) -> Sequence[ModelSpec] | None:
        """Every model this strategy may call; ``None``: it cannot say."""
        ...


def reachable_models(strategy: object) -> list[ModelSpec] | None:
    """The models ``strategy`` may call (each once, in order); ``None`` when unknown."""
    if not isinstance(strategy, Reaching):
        return None
    found = strategy.may_call()
    if found is None:
        return None
    return list({spec.id: spec for spec in found}.values())
