"""The fallback layer's state: configured fallback chains and a circuit breaker per upstream.

Retry lives in :mod:`tierwise.providers.retry` (same model, again); this is the other layer:
moving to *another* model. :class:`~tierwise.strategies.base.TaskContext` asks
:meth:`Failover.chain` which models to try in order and, before each call, the upstream's
:class:`CircuitBreaker` whether to try it at all. Every move is recorded by the task context
as an ``EscalationRecord`` with trigger ``"failover: <reason>"``; a stream moves only before
its first event.

Config (``[failover]``)::

    failure_threshold = 5            # consecutive upstream failures that open a circuit
    cooldown_s = 30                  # how long it stays open before one probe is let through

    [failover.fallbacks]             # model -> the models to try next, in order
    "anthropic:claude-sonnet-4-6" = ["openai:gpt-5", "anthropic:claude-haiku-4-5"]

A policy may carry its own list instead:
``fixed:anthropic:claude-sonnet-4-6?fallback=openai:gpt-5``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tierwise.errors import CircuitOpenError, ProviderError

BreakerState = Literal["closed", "open", "half_open"]
Clock = Callable[[], float]
_REASON_CHARS = 200


class FailoverSettings(BaseModel):
    """``[failover]``: fallback chains per model and the circuit breakers' thresholds."""

    model_config = ConfigDict(extra="forbid")

    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    """Model id -> the model ids to try next, in order, when it fails before answering."""
    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive upstream failures (after retries) that open an upstream's circuit."""
    cooldown_s: float = Field(default=30.0, gt=0)
    """How long an open circuit refuses calls before letting one probe through."""


def fails_over(exc: BaseException) -> bool:
    """Whether ``exc`` moves a call to the next model: an open circuit, or an error a retry
    could cure (connection, timeout, 408/409/429/5xx). A request the upstream rejects on its
    merits (400, context length, content filter) would fail the same way elsewhere."""
    return isinstance(exc, CircuitOpenError) or (isinstance(exc, ProviderError) and exc.retryable)


def failover_reason(exc: ProviderError) -> str:
    """The ``trigger`` of the step: ``failover: <error kind> [status]: <message>``."""
    if isinstance(exc, CircuitOpenError):
        return f"failover: circuit open for {exc.provider}:{exc.model}"
    status = f" {exc.status}" if exc.status is not None else ""
    return f"failover: {type(exc).__name__}{status}: {exc.message}"[:_REASON_CHARS]


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after
    ``cooldown_s`` (one probe at a time) -> closed on the probe's success, open on its failure.
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Clock = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "open" if self._clock() < self._opened_at + self.cooldown_s else "half_open"

    def wait_s(self) -> float | None:
        """``None`` when a call may go ahead now (taking the probe when half-open), else the
        seconds until it might."""
        with self._lock:
            now, state = self._clock(), self.state
            if state == "closed":
                return None
            if state == "open" and self._opened_at is not None:
                return self._opened_at + self.cooldown_s - now
            if self._probe_at is not None and now < self._probe_at + self.cooldown_s:
                return self._probe_at + self.cooldown_s - now  # a probe is out; wait for it
            self._probe_at = now
            return None

    def success(self) -> None:
        with self._lock:
            self._failures, self._opened_at, self._probe_at = 0, None, None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            probing = self._probe_at is not None
            if probing or self._failures >= self.threshold:
                self._opened_at, self._probe_at = self._clock(), None


class Failover:
    """Fallback chains and breakers for one engine (shared by all its tasks)."""

    def __init__(
        self, settings: FailoverSettings | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.settings = settings or FailoverSettings()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self.moves: Counter[tuple[str, str]] = Counter()
        """Failover steps taken, by (from model, to model), for ``/metrics``."""

    def chain(self, model_id: str, fallbacks: Sequence[str] | None = None) -> list[str]:
        """``model_id`` then its fallbacks (the policy's when given, else the config's)."""
        listed = self.settings.fallbacks.get(model_id, []) if fallbacks is None else fallbacks
        chain = [model_id]
        chain += [m for m in dict.fromkeys(listed) if m != model_id]
        return chain

    def breaker(self, upstream: str) -> CircuitBreaker:
        """The breaker of one upstream (``provider:model``)."""
        if upstream not in self._breakers:
            s = self.settings
            self._breakers[upstream] = CircuitBreaker(
                s.failure_threshold, s.cooldown_s, self._clock
            )
        return self._breakers[upstream]

    def admit(self, provider: str, model_id: str, model_name: str) -> None:
        """Raise :class:`CircuitOpenError` unless ``model_id``'s circuit lets a call through."""
        wait = self.breaker(model_id).wait_s()
        if wait is not None:
            raise CircuitOpenError(
                f"circuit open after repeated failures; next try in {math.ceil(wait)}s",
                provider=provider,
                model=model_name,
                retry_after=wait,
            )

    def settle(self, model_id: str, error: BaseException | None) -> None:
        """Count a finished call: a failure when the upstream is to blame, else a success."""
        breaker = self.breaker(model_id)
        if error is not None and fails_over(error):
            breaker.failure()
        else:
            breaker.success()

    def moved(self, from_model: str, to_model: str) -> None:
        """Count one failover step."""
        self.moves[from_model, to_model] += 1

    def states(self) -> dict[str, BreakerState]:
        """Every known upstream's circuit state, for ``/metrics`` and ``/readyz``."""
        return {upstream: b.state for upstream, b in sorted(self._breakers.items())}
