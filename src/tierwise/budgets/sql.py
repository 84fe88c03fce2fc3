"""Budgets in SQL: the ledger's database (SQLite for one instance, PostgreSQL for several).

A reservation is one transaction: for each scope, in key order, make sure its row exists and
run ``UPDATE budget_counters SET reserved = reserved + :amount WHERE scope = :scope AND
spent + reserved + :amount <= :limit``. PostgreSQL takes the row lock and re-checks the
condition against the newest row, so concurrent gateways queue on it and never overshoot;
SQLite serialises writers (``BEGIN IMMEDIATE``). No row updated means the budget cannot take
the amount: the transaction rolls back whole and the caller gets a :class:`Rejection`.
The ledger runs synchronously; each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from tierwise.budgets.limits import Amount, Scope, bounded
from tierwise.budgets.store import (
    KEEP_FINISHED_S,
    Clock,
    Counter,
    Rejection,
    Reservation,
    State,
)
from tierwise.errors import BudgetUnavailableError, LedgerError
from tierwise.ledger.records import utc_now
from tierwise.ledger.schema import budget_counters as counters
from tierwise.ledger.schema import budget_reservations as reservations
from tierwise.ledger.store import Ledger

T = TypeVar("T")
_RECLAIM_BATCH = 500


class _Rejected(Exception):
    """Rolls the reservation's transaction back."""

    def __init__(self, rejection: Rejection) -> None:
        self.rejection = rejection


def _counter(row: Any) -> Counter:
    if row is None:
        return Counter()
    return Counter(
        Amount(row.spent_nanousd, row.spent_tokens),
        Amount(row.reserved_nanousd, row.reserved_tokens),
        row.limit_nanousd,
        row.limit_tokens,
    )


def _reservation(row: Any) -> Reservation:
    state: State = row.state
    amount = Amount(row.nanousd, row.tokens)
    return Reservation(row.request_id, tuple(row.scopes), amount, row.expires_at, state)


class SqlBudgetStore:
    """A :class:`~tierwise.budgets.store.BudgetStore` in the ledger's database."""

    def __init__(self, ledger: Ledger, *, clock: Clock = time.time, owned: bool = False) -> None:
        """``owned``: close the ledger with the store (it was opened for budgets alone)."""
        self._ledger = ledger
        self._clock = clock
        self._owned = owned

    async def reserve(
        self, request_id: str, scopes: Sequence[Scope], amount: Amount, ttl_s: float
    ) -> Reservation | Rejection:
        bounded(amount)  # a counter past its column would read as the store being down
        try:
            return await self._run(self._reserve, request_id, scopes, amount, ttl_s)
        except _Rejected as rejected:
            return rejected.rejection

    async def commit(self, request_id: str, actual: Amount) -> bool:
        return await self._run(self._settle, request_id, "committed", actual)

    async def release(self, request_id: str) -> bool:
        return await self._run(self._settle, request_id, "released", None)

    async def charge(self, request_id: str, scopes: Sequence[Scope], actual: Amount) -> bool:
        return await self._run(self._charge, request_id, scopes, actual)

    async def reclaim(self) -> int:
        return await self._run(self._reclaim)

    async def renew(self, request_ids: Sequence[str], ttl_s: float) -> None:
        if not request_ids:
            return
        c = reservations.c
        stmt = (
            update(reservations)
            .where(c.request_id.in_(list(request_ids)) & (c.state == "held"))
            .values(expires_at=self._clock() + ttl_s)
        )

        def run() -> None:
            with self._ledger.transaction("could not renew reservations", write=True) as conn:
                conn.execute(stmt)

        await self._run(run)

    async def counter(self, scope_key: str) -> Counter:
        def read() -> Counter:
            with self._ledger.transaction("could not read a budget") as conn:
                stmt = select(counters).where(counters.c.scope == scope_key)
                return _counter(conn.execute(stmt).first())

        return await self._run(read)

    async def reservation(self, request_id: str) -> Reservation | None:
        def read() -> Reservation | None:
            with self._ledger.transaction("could not read a reservation") as conn:
                row = conn.execute(_find(request_id)).first()
                return None if row is None else _reservation(row)

        return await self._run(read)

    async def held(self) -> int:
        def count() -> int:
            stmt = select(func.count()).where(reservations.c.state == "held")
            with self._ledger.transaction("could not count reservations") as conn:
                return int(conn.execute(stmt).scalar_one())

        return await self._run(count)

    async def aclose(self) -> None:
        if self._owned:
            self._ledger.close()

    # --- in a worker thread -----------------------------------------------------------------

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(work, *args)
        except LedgerError as exc:
            raise BudgetUnavailableError(f"the budget store is unavailable: {exc}") from exc

    def _reserve(
        self, request_id: str, scopes: Sequence[Scope], amount: Amount, ttl_s: float
    ) -> Reservation:
        with self._ledger.transaction("could not reserve budget", write=True) as conn:
            if (row := conn.execute(_find(request_id)).first()) is not None:
                return _reservation(row)
            for scope in sorted(scopes, key=lambda s: s.key):
                _ensure_row(conn, scope)
                if conn.execute(_take(scope, amount)).rowcount != 1:
                    stmt = select(counters).where(counters.c.scope == scope.key)
                    counter = _counter(conn.execute(stmt).first())
                    raise _Rejected(Rejection(scope, counter, amount))
            held = Reservation(
                request_id, tuple(s.key for s in scopes), amount, self._clock() + ttl_s
            )
            conn.execute(insert(reservations), [_row(held)])
            return held

    def _settle(self, request_id: str, state: State, actual: Amount | None) -> bool:
        with self._ledger.transaction("could not settle a reservation", write=True) as conn:
            row = conn.execute(_find(request_id).with_for_update()).first()
            if row is None or row.state not in ("held", "expired"):
                return False
            if actual is None and row.state != "held":
                return False
            found = _reservation(row)
            back = found.amount if found.state == "held" else Amount()
            for key in found.scopes:
                conn.execute(_adjust(key, back, actual or Amount()))
            conn.execute(_set_state(request_id, state))
            return True

    def _charge(self, request_id: str, scopes: Sequence[Scope], actual: Amount) -> bool:
        with self._ledger.transaction("could not record spend", write=True) as conn:
            if conn.execute(_find(request_id)).first() is not None:
                return False
            for scope in sorted(scopes, key=lambda s: s.key):
                _ensure_row(conn, scope)
                conn.execute(_adjust(scope.key, Amount(), actual))
            keys = tuple(s.key for s in scopes)
            done = Reservation(request_id, keys, actual, self._clock(), "committed")
            conn.execute(insert(reservations), [_row(done)])
            return True

    def _reclaim(self) -> int:
        now = self._clock()
        expired = (reservations.c.state == "held") & (reservations.c.expires_at < now)
        with self._ledger.transaction("could not reclaim reservations", write=True) as conn:
            stmt = select(reservations).where(expired).limit(_RECLAIM_BATCH).with_for_update()
            rows = [_reservation(row) for row in conn.execute(stmt)]
            back: dict[str, Amount] = {}
            for found in rows:
                for key in found.scopes:
                    was = back.get(key, Amount())
                    back[key] = Amount(
                        was.nanousd + found.amount.nanousd, was.tokens + found.amount.tokens
                    )
                conn.execute(_set_state(found.request_id, "expired"))
            for key in sorted(back):  # counters in key order, as reservations lock them
                conn.execute(_adjust(key, back[key], Amount()))
            old = reservations.c.expires_at < now - KEEP_FINISHED_S
            conn.execute(delete(reservations).where(old & (reservations.c.state != "held")))
            return len(rows)


def _find(request_id: str) -> Any:
    return select(reservations).where(reservations.c.request_id == request_id)


def _row(found: Reservation) -> dict[str, Any]:
    return {
        "request_id": found.request_id,
        "scopes": list(found.scopes),
        "nanousd": found.amount.nanousd,
        "tokens": found.amount.tokens,
        "state": found.state,
        "expires_at": found.expires_at,
        "created_at": utc_now(),
    }


def _ensure_row(conn: Connection, scope: Scope) -> None:
    """Insert the scope's row unless it exists (no error, no lock wait on PostgreSQL)."""
    values = {"scope": scope.key}
    maker = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(maker(counters).values(values).on_conflict_do_nothing())


def _take(scope: Scope, amount: Amount) -> Any:
    """Reserve ``amount`` on ``scope`` only where it fits; also records the current limits."""
    c = counters.c
    stmt = update(counters).where(c.scope == scope.key)
    if scope.limit_nanousd is not None:
        used = c.spent_nanousd + c.reserved_nanousd + amount.nanousd
        stmt = stmt.where(used <= scope.limit_nanousd)
    if scope.limit_tokens is not None:
        stmt = stmt.where(c.spent_tokens + c.reserved_tokens + amount.tokens <= scope.limit_tokens)
    return stmt.values(
        reserved_nanousd=c.reserved_nanousd + amount.nanousd,
        reserved_tokens=c.reserved_tokens + amount.tokens,
        limit_nanousd=scope.limit_nanousd,
        limit_tokens=scope.limit_tokens,
    )


def _adjust(key: str, unreserve: Amount, spend: Amount) -> Any:
    c = counters.c
    return (
        update(counters)
        .where(c.scope == key)
        .values(
            reserved_nanousd=c.reserved_nanousd - unreserve.nanousd,
            reserved_tokens=c.reserved_tokens - unreserve.tokens,
            spent_nanousd=c.spent_nanousd + spend.nanousd,
            spent_tokens=c.spent_tokens + spend.tokens,
        )
    )


def _set_state(request_id: str, state: State) -> Any:
    stmt = update(reservations).where(reservations.c.request_id == request_id)
    return stmt.values(state=state)
