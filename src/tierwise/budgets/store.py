"""The budget store seam, and the in-memory store for a single gateway process.

Every store keeps, per scope, ``spent`` and ``reserved`` money and tokens, and per request
id one reservation: ``held`` until it is ``committed`` (to the real cost), ``released``, or
``expired`` (its holder vanished; the TTL sweep gives its amount back). All operations are
idempotent by request id: a second reserve returns the first reservation, a second commit or
release changes nothing. A commit after expiry still records the spend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from tierwise.budgets.limits import Amount, Scope, bounded

State = Literal["held", "committed", "released", "expired"]
Clock = Callable[[], float]
ZERO = Amount()
KEEP_FINISHED_S = 24 * 3600.0
"""How long a settled reservation is remembered (for idempotency)."""


@dataclass(frozen=True)
class Reservation:
    request_id: str
    scopes: tuple[str, ...]
    amount: Amount
    expires_at: float
    state: State = "held"


@dataclass(frozen=True)
class Counter:
    """One scope's counters."""

    spent: Amount = ZERO
    reserved: Amount = ZERO
    limit_nanousd: int | None = None
    limit_tokens: int | None = None


@dataclass(frozen=True)
class Rejection:
    """The scope that could not take the amount, and its counters then."""

    scope: Scope
    counter: Counter
    amount: Amount

    @property
    def transient(self) -> bool:
        """True when only in-flight reservations stand in the way (it may fit soon)."""
        spent, amount, scope = self.counter.spent, self.amount, self.scope
        usd_fits = scope.limit_nanousd is None or spent.nanousd + amount.nanousd <= (
            scope.limit_nanousd
        )
        tokens_fit = scope.limit_tokens is None or spent.tokens + amount.tokens <= (
            scope.limit_tokens
        )
        return usd_fits and tokens_fit


class BudgetStore(Protocol):
    """Where budgets live; every method is atomic and idempotent by request id."""

    async def reserve(
        self, request_id: str, scopes: Sequence[Scope], amount: Amount, ttl_s: float
    ) -> Reservation | Rejection: ...

    async def commit(self, request_id: str, actual: Amount) -> bool: ...

    async def release(self, request_id: str) -> bool: ...

    async def charge(self, request_id: str, scopes: Sequence[Scope], actual: Amount) -> bool:
        """Record spend that was never reserved (fail-open); once per request id."""
        ...

    async def reclaim(self) -> int:
        """Give back expired reservations; how many."""
        ...

    async def renew(self, request_ids: Sequence[str], ttl_s: float) -> None:
        """Push back the expiry of these reservations while they are held (still running)."""
        ...

    async def counter(self, scope_key: str) -> Counter: ...

    async def reservation(self, request_id: str) -> Reservation | None: ...

    async def held(self) -> int:
        """How many reservations are held now."""
        ...

    async def aclose(self) -> None: ...


def fits(counter: Counter, scope: Scope, amount: Amount) -> bool:
    """Whether ``amount`` fits ``scope``'s limits on top of what is spent and reserved."""
    used_usd = counter.spent.nanousd + counter.reserved.nanousd + amount.nanousd
    used_tokens = counter.spent.tokens + counter.reserved.tokens + amount.tokens
    return (scope.limit_nanousd is None or used_usd <= scope.limit_nanousd) and (
        scope.limit_tokens is None or used_tokens <= scope.limit_tokens
    )


def _plus(a: Amount, b: Amount, sign: int = 1) -> Amount:
    return Amount(a.nanousd + sign * b.nanousd, a.tokens + sign * b.tokens)


@dataclass
class _Row:
    spent: Amount = ZERO
    reserved: Amount = ZERO
    limits: tuple[int | None, int | None] = (None, None)

    def counter(self) -> Counter:
        return Counter(self.spent, self.reserved, *self.limits)


@dataclass
class _Book:
    rows: dict[str, _Row] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)


class MemoryBudgetStore:
    """Budgets in this process (one gateway instance); a lock makes each call atomic."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._book = _Book()

    async def reserve(
        self, request_id: str, scopes: Sequence[Scope], amount: Amount, ttl_s: float
    ) -> Reservation | Rejection:
        bounded(amount)
        with self._lock:
            book = self._book
            if (found := book.reservations.get(request_id)) is not None:
                return found
            for scope in scopes:
                row = book.rows.setdefault(scope.key, _Row())
                row.limits = (scope.limit_nanousd, scope.limit_tokens)
                if not fits(row.counter(), scope, amount):
                    return Rejection(scope, row.counter(), amount)
            for scope in scopes:
                row = book.rows[scope.key]
                row.reserved = _plus(row.reserved, amount)
            keys = tuple(s.key for s in scopes)
            held = Reservation(request_id, keys, amount, self._clock() + ttl_s)
            book.reservations[request_id] = held
            return held

    async def commit(self, request_id: str, actual: Amount) -> bool:
        with self._lock:
            found = self._book.reservations.get(request_id)
            if found is None or found.state not in ("held", "expired"):
                return False
            for key in found.scopes:
                row = self._book.rows.setdefault(key, _Row())
                if found.state == "held":
                    row.reserved = _plus(row.reserved, found.amount, -1)
                row.spent = _plus(row.spent, actual)
            self._settle(found, "committed")
            return True

    async def release(self, request_id: str) -> bool:
        with self._lock:
            found = self._book.reservations.get(request_id)
            if found is None or found.state != "held":
                return False
            self._unreserve(found)
            self._settle(found, "released")
            return True

    async def charge(self, request_id: str, scopes: Sequence[Scope], actual: Amount) -> bool:
        with self._lock:
            if request_id in self._book.reservations:
                return False
            for scope in scopes:
                row = self._book.rows.setdefault(scope.key, _Row())
                row.spent = _plus(row.spent, actual)
            keys = tuple(s.key for s in scopes)
            self._settle(Reservation(request_id, keys, actual, 0.0), "committed")
            return True

    async def reclaim(self) -> int:
        with self._lock:
            now = self._clock()
            book = self._book
            expired = [
                r for r in book.reservations.values() if r.state == "held" and r.expires_at < now
            ]
            for found in expired:
                self._unreserve(found)
                book.reservations[found.request_id] = replace(found, state="expired")
            for request_id, at in list(book.settled_at.items()):
                if at + KEEP_FINISHED_S < now:
                    del book.settled_at[request_id], book.reservations[request_id]
            return len(expired)

    async def renew(self, request_ids: Sequence[str], ttl_s: float) -> None:
        with self._lock:
            expires = self._clock() + ttl_s
            for request_id in request_ids:
                found = self._book.reservations.get(request_id)
                if found is not None and found.state == "held":
                    self._book.reservations[request_id] = replace(found, expires_at=expires)

    async def counter(self, scope_key: str) -> Counter:
        with self._lock:
            row = self._book.rows.get(scope_key)
            return Counter() if row is None else row.counter()

    async def reservation(self, request_id: str) -> Reservation | None:
        with self._lock:
            return self._book.reservations.get(request_id)

    async def held(self) -> int:
        with self._lock:
            return sum(r.state == "held" for r in self._book.reservations.values())

    async def aclose(self) -> None:
        return None

    def _unreserve(self, found: Reservation) -> None:
        for key in found.scopes:
            row = self._book.rows.setdefault(key, _Row())
            row.reserved = _plus(row.reserved, found.amount, -1)

    def _settle(self, found: Reservation, state: State) -> None:
        self._book.reservations[found.request_id] = replace(found, state=state)
        self._book.settled_at[found.request_id] = self._clock()
