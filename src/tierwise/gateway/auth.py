"""Who is calling: the admin key, a stored key (cached briefly), or anyone when auth is off.

Clients send their key as ``Authorization: Bearer <key>`` (OpenAI SDK, Claude Code's
``ANTHROPIC_AUTH_TOKEN``) or ``x-api-key`` (Anthropic SDK). The key never travels further:
upstream requests carry only the allow-listed headers of
:func:`tierwise.gateway.dialects.forward_headers` and the gateway's own provider keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from tierwise.budgets.limits import Limits
from tierwise.errors import ForbiddenError, UnauthorizedError
from tierwise.gateway.keys import KeyStore, split_token
from tierwise.gateway.models import Target

_CACHE_LIMIT = 10_000
_MISSING = (
    "missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>` "
    "(create one with `tierwise keys create NAME`)"
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``models`` are allow-list globs (empty: everything)."""

    name: str
    models: tuple[str, ...] = ()
    admin: bool = False
    limits: Limits | None = None
    """The key's own budgets and rate limits (the gateway adds its defaults)."""

    def may_use(self, names: Iterable[str]) -> bool:
        if not self.models:
            return True
        return any(fnmatchcase(name, pattern) for name in names for pattern in self.models)

    def authorize(self, target: Target) -> None:
        """ForbiddenError unless this key may use ``target``."""
        if not self.may_use(target.names):
            allowed = ", ".join(self.models)
            raise ForbiddenError(
                f"key {self.name!r} may not use model {target.requested!r} (allowed: {allowed})"
            )


ADMIN = Principal("admin", admin=True)
ANONYMOUS = Principal("anonymous")


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, from ``x-api-key`` or a bearer ``Authorization`` header."""
    if key := headers.get("x-api-key", "").strip():
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class Authenticator:
    """Checks keys; verified stored keys are trusted for ``cache_s`` (the revocation lag)."""

    def __init__(
        self,
        *,
        enabled: bool,
        admin_key: str | None,
        keys: KeyStore | None,
        cache_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._admin = admin_key.encode() if admin_key else None
        self._keys = keys
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller; UnauthorizedError for a missing or unknown key."""
        if not self.enabled:
            return ANONYMOUS
        key = presented_key(headers)
        if key is None:
            raise UnauthorizedError(_MISSING)
        if self._admin is not None and hmac.compare_digest(key.encode(), self._admin):
            return ADMIN
        return await self._stored(key)

    async def _stored(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode()).digest()
        cached = self._cache.get(digest)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        found = None
        if self._keys is not None and split_token(key) is not None:
            found = await asyncio.to_thread(self._keys.verify, key)
        if found is None:
            raise UnauthorizedError("invalid API key")
        principal = Principal(found.name, tuple(found.models), limits=found.limits)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (principal, now + self._cache_s)
        return principal
