"""Who is calling: the admin key, a stored key (cached briefly), or anyone when auth is off.

Clients send their key as ``Authorization: Bearer <key>`` (OpenAI SDK, Claude Code's
``ANTHROPIC_AUTH_TOKEN``) or ``x-api-key`` (Anthropic SDK). The key never travels further:
upstream requests carry only the allow-listed headers of
:func:`tierwise.gateway.dialects.forward_headers` and the gateway's own provider keys.

Every wrong key counts toward its client address's
:class:`~tierwise.gateway.throttle.FailureThrottle` (shared with the dashboard's sign-in form;
in Redis too when the rate limits are there): past the limit the address gets a 429 with
``retry-after``, even with the right key, until the window frees. A missing key is no guess
and is not counted. A successful check costs one dictionary lookup more.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tierwise.budgets.limits import Limits
from tierwise.catalog import ModelSpec
from tierwise.errors import AuthThrottledError, PolicyNotAllowedError, UnauthorizedError
from tierwise.gateway.clients import UNKNOWN, throttle_key
from tierwise.gateway.keys import KeyStore, split_token
from tierwise.gateway.models import Target
from tierwise.gateway.throttle import FailureThrottle
from tierwise.gateway.throttle_redis import SharedFailures
from tierwise.inline_policies import check_inline_policy
from tierwise.scope import ModelScope

_CACHE_LIMIT = 10_000
_MISSING = (
    "missing API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>` "
    "(create one with `tierwise keys create NAME`)"
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; ``models`` are allow-list globs over model ids (empty:
    every model); ``inline_policies``: it may send policy expressions (the safe subset)."""

    name: str
    models: tuple[str, ...] = ()
    admin: bool = False
    limits: Limits | None = None
    """The key's own budgets and rate limits (the gateway adds its defaults)."""
    inline_policies: bool = False
    key_id: str | None = None
    """The stored key's id (``None``: the admin key, or anyone when auth is off)."""

    @property
    def scope(self) -> ModelScope | None:
        """The models this caller may run; ``None``: any."""
        return ModelScope(self.name, self.models) if self.models else None

    def authorize(self, target: Target) -> None:
        """PolicyNotAllowedError (403) for an inline expression this caller may not send,
        InvalidRequestError (400) for one outside the safe subset."""
        if not target.inline:
            return
        if not self.inline_policies:
            raise PolicyNotAllowedError(
                f"key {self.name!r} may not send policy expressions ({target.requested!r}): "
                "use a model id or a named policy (GET /v1/models), or a key created with "
                "`tierwise keys create --inline-policies`"
            )
        check_inline_policy(target.policy)

    def authorize_models(self, models: Iterable[ModelSpec] | None) -> None:
        """ModelNotAllowedError (403) naming the first of ``models`` outside this caller's
        scope; ``None`` (a strategy that cannot say what it calls) passes only an
        unrestricted caller."""
        scope = self.scope
        if scope is None:
            return
        if models is None:
            raise PolicyNotAllowedError(
                f"key {self.name!r} is limited to some models and this policy cannot say "
                "which models it calls"
            )
        scope.check(spec.id for spec in models)

    def may_use(self, models: Iterable[ModelSpec] | None) -> bool:
        """Whether every one of ``models`` is in this caller's scope."""
        scope = self.scope
        if scope is None:
            return True
        return models is not None and all(scope.allows(spec.id) for spec in models)


ADMIN = Principal("admin", admin=True, inline_policies=True)
ANONYMOUS = Principal("anonymous")
"""The caller when ``auth = false``: every model, no inline expressions."""


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
        throttle: FailureThrottle | None = None,
        shared: SharedFailures | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.throttle = throttle if throttle is not None else FailureThrottle()
        """Failed key checks per address (the dashboard's sign-in form counts here too)."""
        self._failing = self.throttle.failing
        self._shared = shared
        self._admin = admin_key.encode() if admin_key else None
        self._keys = keys
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._checking: dict[bytes, asyncio.Future[Principal | None]] = {}
        """Stored keys being checked in the database (by digest), awaited by all who sent one."""

    async def authenticate(self, headers: Mapping[str, str], *, client: str | None) -> Principal:
        """The caller; UnauthorizedError for a missing or unknown key, AuthThrottledError while
        ``client`` (its address, :mod:`tierwise.gateway.clients`; None: unknown) has failed
        too often."""
        if not self.enabled:
            return ANONYMOUS
        address = client or UNKNOWN
        if ":" in address:  # IPv6: its /64 (IPv4 as it is, without a call: the hot path)
            address = throttle_key(address)
        failed_before = address in self._failing
        if failed_before:
            refuse_if_throttled(self.throttle, address)
        key = presented_key(headers)
        if key is None:
            raise UnauthorizedError(_MISSING)
        if self._admin is not None and hmac.compare_digest(key.encode(), self._admin):
            if failed_before:
                self.throttle.succeeded(address)
            return ADMIN
        return await self._stored(key, address)

    def check_throttle(self, client: str) -> None:
        """AuthThrottledError while ``client`` (an address) is over its failed key checks."""
        refuse_if_throttled(self.throttle, throttle_key(client))

    def admin_signed_in(self, client: str) -> None:
        """The admin key came from ``client``: its failures are forgotten."""
        self.throttle.succeeded(throttle_key(client))

    async def failed_check(self, client: str) -> None:
        """Count a failed key check from ``client`` (an address) seen outside
        :meth:`authenticate` (the dashboard's form): at once here, then in Redis if shared."""
        await self._count_failure(throttle_key(client))

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    async def _stored(self, key: str, client: str) -> Principal:
        digest = hashlib.sha256(key.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        if self._keys is None or split_token(key) is None:
            await self._count_failure(client)
            raise UnauthorizedError("invalid API key")
        checking = self._checking.get(digest)
        if checking is None:  # counted before the wait, forgiven if the key is good: guesses
            self.throttle.failed(client)  # sent at once cannot all pass before they count
            checking = self._checking[digest] = asyncio.ensure_future(self._verify(key, digest))
            checking.add_done_callback(lambda done: self._checked(digest, client, done))
            if (found := await asyncio.shield(checking)) is None:
                await self._count_shared(client)
        elif (found := await asyncio.shield(checking)) is None:
            await self._count_failure(client)  # the same wrong key sent again while checked
        if found is None:
            raise UnauthorizedError("invalid API key")
        return found

    async def _count_failure(self, client: str) -> None:
        """Count a failed key check under throttle key ``client``."""
        self.throttle.failed(client)
        await self._count_shared(client)

    async def _count_shared(self, client: str) -> None:
        if self._shared is not None and (wait := await self._shared.failed(client)) is not None:
            self.throttle.block(client, wait)

    async def _verify(self, key: str, digest: bytes) -> Principal | None:
        """The stored key's principal (then cached), or None; one check per key at a time."""
        assert self._keys is not None
        found = await asyncio.to_thread(self._keys.verify, key)
        if found is None:
            return None
        principal = Principal(
            found.name,
            tuple(found.models),
            limits=found.limits,
            inline_policies=found.inline_policies,
            key_id=found.id,
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (principal, self._clock() + self._cache_s)
        return principal

    def _checked(self, digest: bytes, client: str, done: asyncio.Future[Principal | None]) -> None:
        """A check ended: unless it found the key wrong, the failure counted for it is undone."""
        del self._checking[digest]
        if done.cancelled() or done.exception() is not None or done.result() is not None:
            self.throttle.forgive(client)

    async def revalidate(self, headers: Mapping[str, str], principal: Principal) -> None:
        """UnauthorizedError unless ``principal``'s stored key is active right now, asked of
        the key store (not the cache); a key found revoked leaves the cache too."""
        if principal.key_id is None:  # the admin key, or auth off: nothing to revoke
            return
        key = presented_key(headers) or ""
        found = None
        if self._keys is not None and split_token(key) is not None:
            found = await asyncio.to_thread(self._keys.verify, key)
        if found is None or found.id != principal.key_id:
            self._cache.pop(hashlib.sha256(key.encode()).digest(), None)
            raise UnauthorizedError("invalid API key")


def refuse_if_throttled(throttle: FailureThrottle, client: str) -> None:
    """AuthThrottledError (429) while ``client`` is over its failed key checks."""
    if (wait := throttle.retry_after(client)) is not None:
        unit = "second" if wait == 1 else "seconds"
        raise AuthThrottledError(
            f"too many failed key checks from your address: try again in {wait} {unit}", wait
        )


PRINCIPAL = "tierwise.principal"
"""The scope key of the caller :class:`~tierwise.gateway.edge.EdgeMiddleware` authenticated."""


def principal_of(scope: Mapping[str, Any]) -> Principal:
    """The caller authenticated for this request; UnauthorizedError if none was."""
    principal = scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise UnauthorizedError(_MISSING)
    return principal
