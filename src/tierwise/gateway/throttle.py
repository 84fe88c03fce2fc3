"""Failed key checks per client address, so no key can be guessed at speed.

Every failed check counts — the dashboard's sign-in form, and a wrong ``Authorization: Bearer``
or ``x-api-key`` on the dashboard's API and on every model endpoint (counted in
:meth:`tierwise.gateway.auth.Authenticator.authenticate`). An address may fail
:attr:`FailureThrottle.max_failures` times within ``window_s`` (a sliding window); past that,
every attempt from it — even with the right key — gets a 429 with ``retry-after`` until its
oldest failure leaves the window. Only the admin key clears an address's failures (a stored
key's success does not: its holder could otherwise reset the count between guesses).

Memory is per process and bounded: at most ``max_clients`` addresses are tracked, each holding
at most ``max_failures`` timestamps; addresses whose failures all left the window are
forgotten, and past the bound those whose last failure is oldest go first. Alone, each of
``workers = N`` processes counts on its own (an address may fail up to N times the limit);
with the rate limits in Redis, failures are also counted together
(:mod:`tierwise.gateway.throttle_redis`).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

MAX_CLIENTS = 10_000


class FailureThrottle:
    """Counts failed key checks per address; see the module docstring."""

    def __init__(
        self,
        max_failures: int = 10,
        window_s: float = 60.0,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        """Per address, its recent failure times (oldest first); least recently failed first."""

    def __len__(self) -> int:
        """Addresses tracked."""
        return len(self._failures)

    @property
    def failing(self) -> Mapping[str, object]:
        """The addresses with failures on record (some may have left the window), live: a
        caller checks ``client in failing`` first, one dictionary lookup, the whole cost of a
        request from an address that never failed."""
        return self._failures

    def retry_after(self, client: str) -> int | None:
        """Seconds ``client`` must wait before it may try again, or ``None`` if it may now."""
        times = self._recent(client)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - self._clock()))

    def failed(self, client: str) -> None:
        """Count a failed key check from ``client``."""
        times = self._recent(client)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.max_failures)
        now = self._clock()
        times.append(now)
        self._failures.move_to_end(client)
        self._evict(now)

    def _evict(self, now: float) -> None:
        """Forget addresses whose last failure left the window, then the oldest past the bound."""
        while self._failures:
            oldest = next(iter(self._failures.values()))
            if oldest[-1] > now - self.window_s and len(self._failures) <= self._max_clients:
                return
            self._failures.popitem(last=False)

    def block(self, client: str, wait_s: float) -> None:
        """Refuse ``client`` for ``wait_s`` seconds (other processes counted its failures)."""
        start = self._clock() - self.window_s + wait_s
        self._failures[client] = deque([start] * self.max_failures, maxlen=self.max_failures)
        self._failures.move_to_end(client)
        self._evict(self._clock())

    def forgive(self, client: str) -> None:
        """Take back ``client``'s latest failure (counted before the check that cleared it)."""
        times = self._failures.get(client)
        if times:
            times.pop()
            if not times:
                del self._failures[client]

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures."""
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float] | None:
        """``client``'s failures still inside the window (older ones dropped)."""
        times = self._failures.get(client)
        if times is None:
            return None
        start = self._clock() - self.window_s
        while times and times[0] <= start:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times
