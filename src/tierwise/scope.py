"""What a caller may run: an allow-list of model-id patterns, checked on every model call.

A gateway key created with ``--models 'anthropic:*haiku*'`` carries a :class:`ModelScope`.
The gateway checks it against every model a resolved policy may call before the first
call (:func:`tierwise.strategies.reach.reachable_models`), and the task context checks it
again on every call it makes (a router's pick, a judge, a failover), so no path reaches a
model outside it. Patterns are shell globs matched against catalog ids only
(``provider:model``), never against policy text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from tierwise.errors import ModelNotAllowedError


@dataclass(frozen=True)
class ModelScope:
    """The model ids ``owner`` may run: those matching any of ``patterns``."""

    owner: str
    patterns: tuple[str, ...]

    def allows(self, model_id: str) -> bool:
        return any(fnmatchcase(model_id, pattern) for pattern in self.patterns)

    def check(self, model_ids: Iterable[str]) -> None:
        """ModelNotAllowedError naming the first of ``model_ids`` outside the scope."""
        for model_id in model_ids:
            if not self.allows(model_id):
                allowed = ", ".join(self.patterns)
                raise ModelNotAllowedError(
                    f"key {self.owner!r} may not use model {model_id!r} (allowed: {allowed})"
                )
