"""Requests and tokens per minute per key: a sliding window over two fixed windows.

The count at time ``t`` is ``previous * (1 - elapsed share of this window) + current`` (the
estimate Cloudflare and others use), so a burst at a window edge cannot double the rate.
A request is admitted only when both its request and its token estimate fit; the token
count is corrected to the real usage when the request ends. :func:`retry_after` says when
the request would fit, for the ``retry-after`` header.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

WINDOW_S = 60.0


@dataclass(frozen=True)
class RateLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class Windows:
    """Counts in the previous and the current window, and how far into it ``now`` is."""

    previous: tuple[int, int]
    current: tuple[int, int]
    elapsed: float
    """Share of the current window gone, in [0, 1)."""


class RateLimiter(Protocol):
    async def hit(self, key: str, requests: int, tokens: int, limits: RateLimits) -> float | None:
        """Count the request and return ``None``, or count nothing and return the seconds to
        wait (``math.inf`` when it can never fit)."""
        ...

    async def add_tokens(self, key: str, tokens: int) -> None:
        """Correct the current window's token count (``tokens`` may be negative)."""
        ...

    async def aclose(self) -> None: ...


def window_index(now: float) -> tuple[int, float]:
    index = math.floor(now / WINDOW_S)
    return index, now / WINDOW_S - index


def _wait(previous: int, current: int, elapsed: float, amount: int, limit: int | None) -> float:
    """Seconds until ``amount`` fits ``limit`` given the window counts (0 if it fits now)."""
    if limit is None or previous * (1 - elapsed) + current + amount <= limit:
        return 0.0
    if amount > limit:
        return math.inf
    left = (1 - elapsed) * WINDOW_S
    if previous > 0 and current + amount <= limit:
        share = (previous * (1 - elapsed) + current + amount - limit) / previous
        return min(share * WINDOW_S, left)
    # wait into the next window, where the current one becomes the previous
    share = 1 - (limit - amount) / current if current > 0 else 0.0
    return left + max(0.0, share) * WINDOW_S


def retry_after(windows: Windows, requests: int, tokens: int, limits: RateLimits) -> float:
    """Seconds until a request of ``requests`` and ``tokens`` fits (0: it fits now)."""
    (pr, pt), (cr, ct), elapsed = windows.previous, windows.current, windows.elapsed
    return max(
        _wait(pr, cr, elapsed, requests, limits.requests_per_minute),
        _wait(pt, ct, elapsed, tokens, limits.tokens_per_minute),
    )


class MemoryRateLimiter:
    """Per-minute counters in this process (one gateway instance)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], list[int]] = {}

    async def hit(self, key: str, requests: int, tokens: int, limits: RateLimits) -> float | None:
        with self._lock:
            index, elapsed = window_index(self._clock())
            current = self._counts.setdefault((key, index), [0, 0])
            previous = self._counts.get((key, index - 1), [0, 0])
            windows = Windows((previous[0], previous[1]), (current[0], current[1]), elapsed)
            wait = retry_after(windows, requests, tokens, limits)
            if wait > 0:
                return wait
            current[0] += requests
            current[1] += tokens
            self._forget_before(index - 1)
            return None

    async def add_tokens(self, key: str, tokens: int) -> None:
        with self._lock:
            index, _ = window_index(self._clock())
            current = self._counts.setdefault((key, index), [0, 0])
            current[1] = max(0, current[1] + tokens)

    async def aclose(self) -> None:
        return None

    def _forget_before(self, index: int) -> None:
        if len(self._counts) > 10_000:
            for stale in [k for k in self._counts if k[1] < index]:
                del self._counts[stale]
