"""The gateway side of budgets: admit a request (rate limits, then a reservation of its worst
case), and settle it to what its calls really cost when it ends, however it ends.

The worst case (:mod:`tierwise.budgets.estimate`) is the input estimate plus ``max_tokens``
(set to a default when the client sent none) over every call the policy may make, each at
the dearest model that may take it. A request's own calls come from the gateway's trace; a
call of unknown cost (one cut off once sent: a stream cut before or after its first event,
an abandoned call) is charged its whole reservation. When the store
is down, budgets fail closed (503) unless ``fail_open`` is set: then the request goes
through and its spend waits in memory until the store is back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tierwise.budgets.config import BudgetSettings
from tierwise.budgets.estimate import OutputLimit, call_slots, output_limit, spent, worst_case
from tierwise.budgets.limits import Amount, Limits, Scope, bounded, to_usd
from tierwise.budgets.rate import RateLimiter, RateLimits
from tierwise.budgets.store import BudgetStore, Rejection
from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import (
    BudgetExhaustedError,
    BudgetUnavailableError,
    InvalidRequestError,
    KeyRateLimitError,
)
from tierwise.ledger.records import CallRecord, new_id
from tierwise.messages import Request

T = TypeVar("T")
log = logging.getLogger("tierwise.budgets")
_KEPT_LIMITS = 4096
"""Strategies whose output limit is kept (the engine keeps at most 1024 built)."""
_FAIL_OPEN_HINT = "set gateway.budgets.fail_open = true to admit requests and record spend later"


@dataclass(eq=False)
class Hold:
    """One admitted request's claim on its key's budget and rate; settled exactly once."""

    gate: BudgetGate
    key: str
    request_id: str
    scopes: list[Scope]
    amount: Amount
    reserved: bool
    """A reservation exists in the store (false: no budget, or admitted fail-open)."""
    rate_tokens: int
    _settling: asyncio.Task[None] | None = field(default=None, repr=False)

    def settle_soon(self, calls: Sequence[CallRecord]) -> None:
        """Settle in the background (safe from a finishing or cancelled request)."""
        if self._settling is None:
            self._settling = self.gate.track(self.key, self.gate.settle(self, list(calls)))

    async def settle(self, calls: Sequence[CallRecord]) -> None:
        self.settle_soon(calls)
        if self._settling is not None:
            await asyncio.shield(self._settling)


@dataclass
class _Pending:
    hold: Hold
    actual: Amount


class BudgetGate:
    """Admits and settles requests against per-key budgets and rate limits."""

    def __init__(
        self,
        settings: BudgetSettings,
        defaults: Limits,
        store: BudgetStore | None,
        rates: RateLimiter,
        *,
        store_name: str,
        catalog: Catalog,
        failover_chains: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.settings = settings
        self.defaults = defaults
        self._defaults_apply = bool(defaults.model_dump(exclude_none=True))
        self.store = store
        self.rates = rates
        self.store_name = store_name
        self._catalog = catalog
        self._chains = dict(failover_chains or {})
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        """Settlements under way, by key."""
        self._pending: list[_Pending] = []
        self._live: weakref.WeakSet[Hold] = weakref.WeakSet()
        """Holds of requests still running here, renewed by the sweeper; a hold dropped
        unsettled (its request vanished on a path that never finished) stops being renewed
        and its reservation expires."""
        self._output_limits: dict[int, tuple[object, OutputLimit]] = {}
        """By strategy (its id, and the strategy itself to tell a reused id apart)."""
        self.refusals: collections.Counter[str] = collections.Counter()
        """Requests refused, by reason (``/metrics``)."""

    # --- admission --------------------------------------------------------------------------

    async def admit(
        self, key: str, limits: Limits | None, request: Request, strategy: object
    ) -> tuple[Request, Hold | None]:
        """Check ``key``'s limits (``limits=None``: unlimited, e.g. the admin key) and reserve
        ``request``'s worst case; the request (``max_tokens`` set if needed) and its hold."""
        if limits is None or not (limits.model_fields_set or self._defaults_apply):
            return request, None  # the common case of no limits at all: nothing to do
        effective = limits.over(self.defaults)
        budgeted = effective.has_budget or effective.usd_per_request is not None
        if not (budgeted or effective.has_rate):
            return request, None
        if budgeted and request.max_tokens is None:
            request = request.model_copy(update={"max_tokens": self.settings.default_max_tokens})
        slots = self.slots(strategy, request)
        amount, unknown = worst_case(request, slots, self.settings.input_margin)
        bounded(amount)
        _check_request(key, effective, amount, unknown)
        rate_tokens = await self._rate(key, effective, amount.tokens)
        scopes = effective.scopes(key, datetime.now(UTC)) if self.store is not None else []
        hold = Hold(self, key, new_id(), scopes, amount, False, rate_tokens)
        if scopes:
            try:
                hold.reserved = await self._reserve(hold)
                if hold.reserved:
                    self._live.add(hold)
            except BaseException:
                if rate_tokens:
                    await self._untake_rate(key, rate_tokens)
                raise
        return request, hold

    def slots(self, strategy: object, request: Request | None = None) -> list[list[ModelSpec]]:
        """The calls ``strategy`` (and ``request``'s advisor tool) may make, failover chains
        included (:func:`call_slots`)."""
        return call_slots(strategy, self._catalog, self._chains, request)

    def output_limit(self, strategy: object, unknown: int) -> OutputLimit:
        """:func:`~tierwise.budgets.estimate.output_limit` of ``strategy``'s own calls (an
        advisor tool's consults have their own ``max_tokens``); kept per strategy, which the
        engine builds once per policy."""
        found = self._output_limits.get(id(strategy))
        if found is not None and found[0] is strategy:
            return found[1]
        if len(self._output_limits) >= _KEPT_LIMITS:
            self._output_limits.clear()
        limit = output_limit(self.slots(strategy), unknown)
        self._output_limits[id(strategy)] = (strategy, limit)
        return limit

    async def _rate(self, key: str, limits: Limits, tokens: int) -> int:
        """Count the request against the key's per-minute limits; the tokens counted."""
        if not limits.has_rate:
            return 0
        rate = RateLimits(limits.requests_per_minute, limits.tokens_per_minute)
        counted = tokens if rate.tokens_per_minute is not None else 0
        try:
            wait = await self.rates.hit(key, 1, counted, rate)
        except BudgetUnavailableError as exc:
            return self._store_down(exc, admit=0)
        if wait is None:
            return counted
        if math.isinf(wait):
            raise InvalidRequestError(
                f"this request may use up to {tokens} tokens, more than key {key!r}'s "
                f"tokens_per_minute of {rate.tokens_per_minute}; lower max_tokens"
            )
        seconds = max(1, math.ceil(wait))
        self.refusals["rate_limit"] += 1
        raise KeyRateLimitError(
            f"key {key!r} is over its rate limit ({_describe(rate)}); retry in {seconds} s",
            retry_after_s=seconds,
        )

    async def _reserve(self, hold: Hold) -> bool:
        assert self.store is not None
        ttl = self.settings.reservation_ttl_s
        try:
            found = await self.store.reserve(hold.request_id, hold.scopes, hold.amount, ttl)
            # refused: first let this key's finished requests give back what they held
            if isinstance(found, Rejection) and (
                await self._settled(hold.key) or await self.store.reclaim()
            ):
                found = await self.store.reserve(hold.request_id, hold.scopes, hold.amount, ttl)
        except BudgetUnavailableError as exc:
            return self._store_down(exc, admit=False)
        if isinstance(found, Rejection):
            self.refusals["held_in_flight" if found.transient else "budget_exhausted"] += 1
            raise _refusal(found)
        return True

    def _store_down(self, exc: BudgetUnavailableError, *, admit: T) -> T:
        if not self.settings.fail_open:
            self.refusals["store_down"] += 1
            raise BudgetUnavailableError(
                f"{exc.message}; requests are refused while budgets cannot be checked "
                f"({_FAIL_OPEN_HINT})",
            ) from exc
        log.warning("budget store down, admitting without a check (fail-open): %s", exc)
        return admit

    async def _untake_rate(self, key: str, tokens: int) -> None:
        try:
            await self.rates.add_tokens(key, -tokens)
        except BudgetUnavailableError:
            log.warning("could not give back %d rate-limit tokens of key %r", tokens, key)

    # --- settlement -------------------------------------------------------------------------

    def track(self, key: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        running = self._tasks.setdefault(key, set())
        running.add(task)
        task.add_done_callback(running.discard)
        return task

    async def _settled(self, key: str) -> bool:
        """Wait for ``key``'s settlements under way; whether there were any."""
        running = list(self._tasks.get(key, ()))
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        return bool(running)

    async def settle(self, hold: Hold, calls: list[CallRecord]) -> None:
        """Commit ``hold`` to what ``calls`` cost (release it when nothing was called)."""
        self._live.discard(hold)
        actual = spent(calls, hold.amount)
        if hold.rate_tokens:
            await self._untake_rate(hold.key, hold.rate_tokens - actual.tokens)
        if not hold.scopes:
            return
        try:
            await self._apply(hold, actual)
        except BudgetUnavailableError as exc:
            log.warning("budget store down, spend of %s kept to write later: %s", hold.key, exc)
            self._pending.append(_Pending(hold, actual))

    async def _apply(self, hold: Hold, actual: Amount) -> None:
        assert self.store is not None
        if not hold.reserved:
            await self.store.charge(hold.request_id, hold.scopes, actual)
        elif actual == Amount():
            await self.store.release(hold.request_id)
        else:
            await self.store.commit(hold.request_id, actual)

    async def sweep(self) -> None:
        """Keep this process's running requests' reservations, reclaim expired ones (of a
        crashed instance), write buffered spend — while the store answers."""
        if self.store is None:
            return
        try:
            live = sorted(hold.request_id for hold in self._live)
            await self.store.renew(live, self.settings.reservation_ttl_s)
            while self._pending:
                await self._apply(self._pending[0].hold, self._pending[0].actual)
                self._pending.pop(0)
            await self.store.reclaim()
        except BudgetUnavailableError as exc:
            log.warning("budget store still down (%d spends buffered): %s", self.pending, exc)

    @property
    def pending(self) -> int:
        """Spends waiting for the store to come back."""
        return len(self._pending)

    async def run_sweeper(self) -> None:
        """Sweep every ``sweep_s`` until cancelled (an unexpected failure is logged, not fatal)."""
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("the budget sweep failed")

    async def aclose(self) -> None:
        """Finish settling, write what is buffered, close the stores."""
        for key in list(self._tasks):
            await self._settled(key)
        await self.sweep()
        for hold in (p.hold for p in self._pending):
            log.error(
                "budget spend of request %s (key %r) not written to the budget store "
                "(its calls are in the ledger)",
                hold.request_id,
                hold.key,
            )
        if self.store is not None:
            await self.store.aclose()
        await self.rates.aclose()


def _check_request(key: str, limits: Limits, amount: Amount, unknown: list[str]) -> None:
    """Refuse a request no budget could ever admit as it is."""
    caps = (limits.usd_per_day, limits.usd_per_month, limits.usd_total, limits.usd_per_request)
    dollars = any(cap is not None for cap in caps)
    if dollars and unknown:
        raise InvalidRequestError(
            f"key {key!r} has a dollar budget, and the price of {', '.join(unknown)} is "
            "unknown, so its cost cannot be bounded; add its prices to the catalog"
        )
    cap = limits.usd_per_request
    if cap is not None and amount.usd > cap:
        raise InvalidRequestError(
            f"this request may cost up to ${amount.usd:.6f}, over key {key!r}'s per-request "
            f"cap of ${cap}; lower max_tokens or shorten the input"
        )


def _refusal(rejection: Rejection) -> BudgetExhaustedError | KeyRateLimitError:
    scope, counter = rejection.scope, rejection.counter
    what = scope.describe()
    limit = (
        f"${to_usd(scope.limit_nanousd):.6f}"
        if scope.limit_nanousd is not None
        else f"{scope.limit_tokens} tokens"
    )
    if rejection.transient:
        return KeyRateLimitError(
            f"{what} ({limit}) is held by requests in flight; this one may cost up to "
            f"${rejection.amount.usd:.6f} ({rejection.amount.tokens} tokens); retry shortly",
            retry_after_s=1,
        )
    used = f"${counter.spent.usd:.6f} and {counter.spent.tokens} tokens spent"
    resets = f"; it resets at {scope.resets_at:%Y-%m-%d %H:%M} UTC" if scope.resets_at else ""
    return BudgetExhaustedError(
        f"{what} is exhausted: {used} of {limit}, and this request may cost up to "
        f"${rejection.amount.usd:.6f} ({rejection.amount.tokens} tokens){resets}"
    )


def _describe(rate: RateLimits) -> str:
    parts = []
    if rate.requests_per_minute is not None:
        parts.append(f"{rate.requests_per_minute} requests")
    if rate.tokens_per_minute is not None:
        parts.append(f"{rate.tokens_per_minute} tokens")
    return " and ".join(parts) + " per minute"
