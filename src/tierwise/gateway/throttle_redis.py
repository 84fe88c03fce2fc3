"""Failed key checks counted by every gateway process and instance together, in Redis.

When the per-minute limits are in Redis (``[gateway] rate_limit_store``, or a Redis
``budget_store``), each failed key check is also added to a counter shared by all processes,
per address and fixed window of ``auth_failure_window_s``; a process that sees the shared count
past ``auth_failures`` locks the address out locally until that window ends. So an address
spreading its guesses over N processes gets at most ``auth_failures`` + N per window (+ up to
as many again across a window's edge), not N times the limit. Only failures reach Redis:
successful checks cost nothing more. With Redis down, each process counts on its own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from tierwise.errors import ConfigError
from tierwise.gateway.config import GatewayConfig

log = logging.getLogger("tierwise.gateway")
_REDIS = ("redis://", "rediss://", "unix://")
TIMEOUT_S = 0.5
"""A failure's count waits this long at most for Redis (then it is counted locally only)."""


class SharedFailures:
    """The shared counter; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        window_s: float,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            from redis.asyncio import Redis  # noqa: PLC0415 (optional dependency)
        except ImportError:
            raise ConfigError(
                "a Redis rate_limit_store needs: pip install 'tierwise[redis]'"
            ) from None
        self._redis: Any = Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        self._limit = limit
        self._window_s = window_s
        self._prefix = prefix
        self._clock = clock
        self._quiet_until = 0.0

    async def failed(self, client: str) -> int | None:
        """Count a failure of ``client`` everywhere: the seconds left in the window when the
        shared count is past the limit, else None (also when Redis cannot be reached)."""
        from redis.exceptions import RedisError  # noqa: PLC0415

        now = self._clock()
        index = math.floor(now / self._window_s)
        key = f"{self._prefix}authfail:{index}:{client}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, math.ceil(self._window_s) + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            if now >= self._quiet_until:  # one warning a window, however many guesses
                self._quiet_until = now + self._window_s
                log.warning("failed key checks are counted per process: Redis: %s", exc)
            return None
        if int(count) <= self._limit:
            return None
        return max(1, math.ceil((index + 1) * self._window_s - now))

    async def aclose(self) -> None:
        await self._redis.aclose()


def shared_failures(config: GatewayConfig) -> SharedFailures | None:
    """The shared counter when the rate limits are in Redis, else None (per process)."""
    budget_store = config.budget_store
    url = config.rate_limit_store or (budget_store if budget_store.startswith(_REDIS) else None)
    if url is None or not url.startswith(_REDIS):
        return None
    return SharedFailures(
        url,
        limit=config.auth_failures,
        window_s=config.auth_failure_window_s,
        prefix=config.budgets.redis_prefix,
    )
