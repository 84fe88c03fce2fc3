"""Budgets and rate limits in Redis, shared by every gateway instance (``redis://`` URL).

Each operation is one Lua script, which Redis runs atomically: the check of every scope and
the reservation happen with nothing in between, so concurrent gateways cannot overshoot.

Keys (all under ``prefix``): ``b:<scope>`` a hash of counters (integer nano-dollars and
tokens), ``r:<request id>`` a reservation hash, ``held`` a sorted set of held reservations by
expiry (swept by :meth:`RedisBudgetStore.reclaim`), ``rl:<key>:<minute>`` rate counters.
Amounts travel as decimal strings: Lua numbers are doubles, exact below 2**53 (see
:data:`~tierwise.budgets.limits.MAX_NANOUSD`), and are never turned back into strings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar, cast

from tierwise.budgets.limits import Amount, Scope, bounded
from tierwise.budgets.rate import RateLimits, Windows, retry_after, window_index
from tierwise.budgets.store import KEEP_FINISHED_S, Clock, Counter, Rejection, Reservation
from tierwise.errors import BudgetUnavailableError, ConfigError

T = TypeVar("T")
SOCKET_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64
"""Per process and store; more requests at once queue for a connection."""
POOL_WAIT_S = 30.0
"""How long a request waits for a free connection (a busy process, not a dead Redis)."""
DEFAULT_PREFIX = "tierwise:"

_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {1}
end
local n = #KEYS - 2
for i = 1, n do
  local b = redis.call('HMGET', KEYS[i + 2], 'su', 'st', 'ru', 'rt')
  local lu, lt = ARGV[9 + (i - 1) * 3], ARGV[10 + (i - 1) * 3]
  local su, st = tonumber(b[1] or '0'), tonumber(b[2] or '0')
  local ru, rt = tonumber(b[3] or '0'), tonumber(b[4] or '0')
  if (lu ~= '' and su + ru + tonumber(ARGV[2]) > tonumber(lu))
     or (lt ~= '' and st + rt + tonumber(ARGV[3]) > tonumber(lt)) then
    return {0, i, b[1] or '0', b[2] or '0', b[3] or '0', b[4] or '0'}
  end
end
for i = 1, n do
  local key = KEYS[i + 2]
  redis.call('HINCRBY', key, 'ru', ARGV[2])
  redis.call('HINCRBY', key, 'rt', ARGV[3])
  local expire_at = ARGV[11 + (i - 1) * 3]
  if expire_at ~= '' then redis.call('EXPIREAT', key, expire_at) end
end
redis.call('HSET', KEYS[1], 'state', 'held', 'u', ARGV[2], 'tk', ARGV[3],
  'nu', ARGV[7], 'ntk', ARGV[8], 'scopes', ARGV[6], 'expires', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return {2}
"""

_UNRESERVE = """
local function unreserve(prefix, scopes, nu, ntk)
  for _, scope in ipairs(scopes) do
    local key = prefix .. 'b:' .. scope
    redis.call('HINCRBY', key, 'ru', nu)
    redis.call('HINCRBY', key, 'rt', ntk)
  end
end
"""

# KEYS: reservation, held; ARGV: request id, spent usd, spent tokens, prefix, keep seconds,
# mode ('commit' or 'release')
_SETTLE = (
    _UNRESERVE
    + """
local r = redis.call('HMGET', KEYS[1], 'state', 'nu', 'ntk', 'scopes')
local state = r[1]
if not state or (state ~= 'held' and state ~= 'expired') then return 0 end
if ARGV[6] == 'release' and state ~= 'held' then return 0 end
local scopes = cjson.decode(r[4])
if state == 'held' then unreserve(ARGV[4], scopes, r[2], r[3]) end
if ARGV[6] == 'commit' then
  for _, scope in ipairs(scopes) do
    local key = ARGV[4] .. 'b:' .. scope
    redis.call('HINCRBY', key, 'su', ARGV[2])
    redis.call('HINCRBY', key, 'st', ARGV[3])
  end
  redis.call('HSET', KEYS[1], 'state', 'committed')
else
  redis.call('HSET', KEYS[1], 'state', 'released')
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
)

# KEYS: reservation, budgets...; ARGV: usd, tokens, scopes json, keep seconds
_CHARGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'su', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'st', ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', 'committed', 'u', ARGV[1], 'tk', ARGV[2],
  'scopes', ARGV[3], 'expires', '0')
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: held; ARGV: now, prefix, batch
_RECLAIM = (
    _UNRESERVE
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local n = 0
for _, id in ipairs(ids) do
  local rkey = ARGV[2] .. 'r:' .. id
  local r = redis.call('HMGET', rkey, 'state', 'nu', 'ntk', 'scopes')
  if r[1] == 'held' then
    unreserve(ARGV[2], cjson.decode(r[4]), r[2], r[3])
    redis.call('HSET', rkey, 'state', 'expired')
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return n
"""
)

# KEYS: held; ARGV: expires at, prefix, request ids...
_RENEW = """
for i = 3, #ARGV do
  local rkey = ARGV[2] .. 'r:' .. ARGV[i]
  if redis.call('HGET', rkey, 'state') == 'held' then
    redis.call('HSET', rkey, 'expires', ARGV[1])
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  end
end
return 0
"""

# KEYS: previous window, current window; ARGV: requests, tokens, rpm limit, tpm limit,
# elapsed share, ttl
_RATE = """
local p = redis.call('HMGET', KEYS[1], 'r', 't')
local c = redis.call('HMGET', KEYS[2], 'r', 't')
local pr, pt = tonumber(p[1] or '0'), tonumber(p[2] or '0')
local cr, ct = tonumber(c[1] or '0'), tonumber(c[2] or '0')
local keep = 1 - tonumber(ARGV[5])
if (ARGV[3] ~= '' and pr * keep + cr + tonumber(ARGV[1]) > tonumber(ARGV[3]))
   or (ARGV[4] ~= '' and pt * keep + ct + tonumber(ARGV[2]) > tonumber(ARGV[4])) then
  return {0, p[1] or '0', p[2] or '0', c[1] or '0', c[2] or '0'}
end
redis.call('HINCRBY', KEYS[2], 'r', ARGV[1])
redis.call('HINCRBY', KEYS[2], 't', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1}
"""


def _client(url: str) -> Any:
    """A client whose requests wait for one of ``MAX_CONNECTIONS`` rather than fail."""
    try:
        from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415 (optional)
    except ImportError:
        raise ConfigError("Redis budgets need: pip install 'tierwise[redis]'") from None
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    return Redis.from_pool(pool)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


async def _call(action: str, pending: Awaitable[T]) -> T:
    from redis.exceptions import RedisError  # noqa: PLC0415

    try:
        return await pending
    except (RedisError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        message = f"the budget store (Redis) is unavailable: {action}: {reason}"
        raise BudgetUnavailableError(message) from exc


class RedisBudgetStore:
    """A :class:`~tierwise.budgets.store.BudgetStore` in Redis."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, clock: Clock = time.time) -> None:
        self._redis = _client(url)
        self._prefix = prefix
        self._clock = clock
        self._scripts = {
            name: self._redis.register_script(source)
            for name, source in (
                ("reserve", _RESERVE),
                ("settle", _SETTLE),
                ("charge", _CHARGE),
                ("reclaim", _RECLAIM),
                ("renew", _RENEW),
            )
        }

    def _budget(self, scope: str) -> str:
        return f"{self._prefix}b:{scope}"

    def _held_key(self) -> str:
        return f"{self._prefix}held"

    def _res(self, request_id: str) -> str:
        return f"{self._prefix}r:{request_id}"

    async def reserve(
        self, request_id: str, scopes: Sequence[Scope], amount: Amount, ttl_s: float
    ) -> Reservation | Rejection:
        bounded(amount)  # Lua's doubles are exact only this far
        ordered = sorted(scopes, key=lambda s: s.key)
        expires = self._clock() + ttl_s
        keys = [self._res(request_id), self._held_key(), *(self._budget(s.key) for s in ordered)]
        args: list[str] = [
            request_id,
            str(amount.nanousd),
            str(amount.tokens),
            repr(expires),
            str(math.ceil(ttl_s + KEEP_FINISHED_S)),
            json.dumps([s.key for s in ordered]),
            str(-amount.nanousd),
            str(-amount.tokens),
        ]
        for scope in ordered:
            reset = "" if scope.resets_at is None else str(int(scope.resets_at.timestamp()) + 86400)
            args += [_opt(scope.limit_nanousd), _opt(scope.limit_tokens), reset]
        reply = await _call("reserve", self._scripts["reserve"](keys=keys, args=args))
        if int(reply[0]) == 0:
            index, su, st, ru, rt = (int(x) for x in reply[1:])
            scope = ordered[index - 1]
            counter = Counter(
                Amount(su, st), Amount(ru, rt), scope.limit_nanousd, scope.limit_tokens
            )
            return Rejection(scope, counter, amount)
        if int(reply[0]) == 1:
            found = await self.reservation(request_id)
            if found is not None:
                return found
        return Reservation(request_id, tuple(s.key for s in ordered), amount, expires)

    async def commit(self, request_id: str, actual: Amount) -> bool:
        return await self._settle(request_id, actual, "commit")

    async def release(self, request_id: str) -> bool:
        return await self._settle(request_id, Amount(), "release")

    async def _settle(self, request_id: str, actual: Amount, mode: str) -> bool:
        keys = [self._res(request_id), self._held_key()]
        args = [
            request_id,
            str(actual.nanousd),
            str(actual.tokens),
            self._prefix,
            str(int(KEEP_FINISHED_S)),
            mode,
        ]
        return int(await _call(mode, self._scripts["settle"](keys=keys, args=args))) == 1

    async def charge(self, request_id: str, scopes: Sequence[Scope], actual: Amount) -> bool:
        keys = [self._res(request_id), *(self._budget(s.key) for s in scopes)]
        scope_list = json.dumps([s.key for s in scopes])
        args = [str(actual.nanousd), str(actual.tokens), scope_list, str(int(KEEP_FINISHED_S))]
        return int(await _call("charge", self._scripts["charge"](keys=keys, args=args))) == 1

    async def reclaim(self) -> int:
        args = [repr(self._clock()), self._prefix, "500"]
        reply = self._scripts["reclaim"](keys=[self._held_key()], args=args)
        return int(await _call("reclaim", reply))

    async def renew(self, request_ids: Sequence[str], ttl_s: float) -> None:
        if not request_ids:
            return
        args = [repr(self._clock() + ttl_s), self._prefix, *request_ids]
        await _call("renew", self._scripts["renew"](keys=[self._held_key()], args=args))

    async def counter(self, scope_key: str) -> Counter:
        pending = self._redis.hmget(self._budget(scope_key), ["su", "st", "ru", "rt"])
        su, st, ru, rt = (int(v or 0) for v in await _call("read", pending))
        return Counter(Amount(su, st), Amount(ru, rt))

    async def reservation(self, request_id: str) -> Reservation | None:
        fields = ["state", "u", "tk", "scopes", "expires"]
        pending = self._redis.hmget(self._res(request_id), fields)
        state, u, tk, scopes, expires = await _call("read", pending)
        if state is None:
            return None
        amount = Amount(int(u), int(tk))
        found = Reservation(request_id, tuple(json.loads(scopes)), amount, float(expires))
        return Reservation(found.request_id, found.scopes, amount, found.expires_at, state.decode())

    async def held(self) -> int:
        return int(await _call("read", self._redis.zcard(self._held_key())))

    async def aclose(self) -> None:
        await self._redis.aclose()


class RedisRateLimiter:
    """Per-minute counters in Redis, shared by every gateway instance."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, clock: Clock = time.time) -> None:
        self._redis = _client(url)
        self._prefix = prefix
        self._clock = clock
        self._script = self._redis.register_script(_RATE)

    def _window(self, key: str, index: int) -> str:
        return f"{self._prefix}rl:{key}:{index}"

    async def hit(self, key: str, requests: int, tokens: int, limits: RateLimits) -> float | None:
        index, elapsed = window_index(self._clock())
        keys = [self._window(key, index - 1), self._window(key, index)]
        args = [
            str(requests),
            str(tokens),
            _opt(limits.requests_per_minute),
            _opt(limits.tokens_per_minute),
            repr(elapsed),
            "180",
        ]
        reply = await _call("rate limit", self._script(keys=keys, args=args))
        if int(reply[0]) == 1:
            return None
        pr, pt, cr, ct = (int(x) for x in reply[1:])
        wait = retry_after(Windows((pr, pt), (cr, ct), elapsed), requests, tokens, limits)
        return max(wait, 0.001)

    async def add_tokens(self, key: str, tokens: int) -> None:
        index, _ = window_index(self._clock())
        pending = self._redis.hincrby(self._window(key, index), "t", tokens)
        await _call("rate limit", cast(Awaitable[int], pending))

    async def aclose(self) -> None:
        await self._redis.aclose()
