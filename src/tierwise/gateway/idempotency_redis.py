"""The Redis store for ``Idempotency-Key`` (``[gateway] idempotency = "redis://..."``).

One hash per key, ``tierwise:idempotency:<scoped key>``, expiring with the TTL: ``f`` the
request's fingerprint, and once answered ``s`` (status), ``h`` (headers, JSON) and ``b`` (the
body). Claiming is one Lua script, so two instances racing on a key cannot both win. If Redis
cannot be reached the request is refused with a 503 rather than risk paying twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from tierwise.errors import ConfigError, IdempotencyUnavailableError
from tierwise.gateway.idempotency import Stored, decide

PREFIX = "tierwise:idempotency:"
TIMEOUT_S = 2.0
T = TypeVar("T")

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'f', 's', 'h', 'b')
end
redis.call('HSET', KEYS[1], 'f', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return false
"""
_RELEASE = """
if redis.call('HEXISTS', KEYS[1], 's') == 0 then redis.call('DEL', KEYS[1]) end
return 1
"""


def _client(url: str) -> Any:
    try:
        from redis.asyncio import Redis  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ConfigError(
            "a Redis idempotency store needs: pip install 'tierwise[redis]'"
        ) from None
    return Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)


async def _call(pending: Awaitable[T]) -> T:
    from redis.exceptions import RedisError  # noqa: PLC0415

    try:
        return await pending
    except (RedisError, OSError) as exc:
        raise IdempotencyUnavailableError(
            f"the Idempotency-Key store is unavailable: {exc}"
        ) from None


class RedisStore:
    """Idempotency keys in Redis, shared by every gateway instance using it."""

    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self._redis = _client(url)
        self._prefix = prefix
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)

    async def begin(self, key: str, fingerprint: str, ttl_s: float) -> Stored | None:
        args = [fingerprint, int(ttl_s * 1000)]
        found = await _call(self._claim(keys=[self._prefix + key], args=args))
        if not found:
            return None
        claimed, status, headers, body = found
        stored = None
        if status is not None:
            pairs = [(str(k), str(v)) for k, v in json.loads(headers)]
            stored = Stored(int(status), pairs, bytes(body))
        return decide(fingerprint, claimed.decode(), stored)

    async def finish(self, key: str, stored: Stored, ttl_s: float) -> None:
        name = self._prefix + key
        fields = {"s": stored.status, "h": json.dumps(stored.headers), "b": stored.body}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, mapping=fields)
            pipe.pexpire(name, int(ttl_s * 1000))
            await _call(pipe.execute())

    async def release(self, key: str) -> None:
        await _call(self._release(keys=[self._prefix + key]))

    async def aclose(self) -> None:
        await self._redis.aclose()
