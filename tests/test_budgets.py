"""Budget stores (memory, SQLite, PostgreSQL, Redis) and rate limiters, against real backends.

PostgreSQL runs in a fresh schema per test and Redis under a unique key prefix, both removed
afterwards. Time is a fake clock, moved by hand.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql

from tierwise.budgets.config import BudgetSettings
from tierwise.budgets.gate import BudgetGate
from tierwise.budgets.limits import MAX_NANOUSD, Amount, Limits, Scope, to_nanousd
from tierwise.budgets.rate import MemoryRateLimiter, RateLimiter, RateLimits, Windows, retry_after
from tierwise.budgets.redis_store import RedisBudgetStore, RedisRateLimiter
from tierwise.budgets.sql import SqlBudgetStore
from tierwise.budgets.store import BudgetStore, MemoryBudgetStore, Rejection, Reservation
from tierwise.catalog import load_catalog
from tierwise.errors import BudgetUnavailableError, InvalidRequestError
from tierwise.ledger.store import Ledger
from tierwise.messages import Request, Tool
from tierwise.strategies.fixed import FixedStrategy

POSTGRES_URL = os.environ.get("TIERWISE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TTL_S = 30.0
AMOUNT = Amount(to_nanousd(Decimal("0.0125")), 300)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search path is a fresh schema (dropped afterwards)."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}")
    schema = f"tierwise_budget_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"tierwise-test:{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


StoreFactory = Callable[[], BudgetStore]


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
async def stores(
    request: pytest.FixtureRequest, clock: Clock, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Makes stores sharing one backend (as separate gateway instances would)."""
    made: list[BudgetStore] = []
    kind = request.param
    memory = MemoryBudgetStore(clock=clock)
    url = ""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'budgets.db'}"
    elif kind == "postgresql":
        url = request.getfixturevalue("pg_url")
    prefix = request.getfixturevalue("redis_prefix") if kind == "redis" else ""

    def make() -> BudgetStore:
        store: BudgetStore
        if kind == "memory":
            store = memory
        elif kind == "redis":
            store = RedisBudgetStore(REDIS_URL, prefix=prefix, clock=clock)
        else:
            store = SqlBudgetStore(Ledger.open(url), clock=clock, owned=True)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


def scope(
    key: str = "key:ci:total", *, usd: Decimal | None = None, tokens: int | None = None
) -> Scope:
    limit = None if usd is None else to_nanousd(usd)
    return Scope(key, limit, tokens, owner="ci")


async def test_reserve_commit_release_move_the_counters(stores: StoreFactory) -> None:
    store = stores()
    cap = scope(usd=Decimal("0.05"), tokens=10_000)
    held = await store.reserve("r1", [cap], AMOUNT, TTL_S)
    assert isinstance(held, Reservation) and held.amount == AMOUNT
    assert (await store.counter(cap.key)).reserved == AMOUNT
    assert await store.commit("r1", Amount(to_nanousd(Decimal("0.01")), 250))
    counter = await store.counter(cap.key)
    assert counter.reserved == Amount() and counter.spent == Amount(10_000_000, 250)
    assert isinstance(await store.reserve("r2", [cap], AMOUNT, TTL_S), Reservation)
    assert await store.release("r2")
    assert (await store.counter(cap.key)).spent == Amount(10_000_000, 250)
    assert (await store.counter(cap.key)).reserved == Amount()
    assert await store.held() == 0


async def test_settling_is_idempotent_by_request_id(stores: StoreFactory) -> None:
    store = stores()
    cap = scope(usd=Decimal(1))
    first = await store.reserve("same", [cap], AMOUNT, TTL_S)
    again = await store.reserve("same", [cap], AMOUNT, TTL_S)
    assert isinstance(first, Reservation) and isinstance(again, Reservation)
    assert (await store.counter(cap.key)).reserved == AMOUNT  # counted once
    assert await store.commit("same", AMOUNT)
    assert not await store.commit("same", AMOUNT)
    assert not await store.release("same")
    assert (await store.counter(cap.key)).spent == AMOUNT
    assert not await store.commit("never-reserved", AMOUNT)
    assert not await store.release("never-reserved")
    found = await store.reservation("same")
    assert found is not None and found.state == "committed"


async def test_a_rejection_names_the_scope_and_reserves_nothing(stores: StoreFactory) -> None:
    store = stores()
    roomy, tight = scope("key:ci:month:2026-11", usd=Decimal(10)), scope(tokens=500)
    assert isinstance(await store.reserve("a", [roomy, tight], AMOUNT, TTL_S), Reservation)
    rejected = await store.reserve("b", [roomy, tight], AMOUNT, TTL_S)
    assert isinstance(rejected, Rejection) and rejected.scope == tight
    assert rejected.counter.reserved == AMOUNT and rejected.transient  # only in-flight holds it
    assert (await store.counter(roomy.key)).reserved == AMOUNT  # b reserved nowhere
    assert await store.commit("a", AMOUNT)
    exhausted = await store.reserve("c", [roomy, tight], AMOUNT, TTL_S)
    assert isinstance(exhausted, Rejection) and not exhausted.transient
    assert await store.reservation("b") is None


async def test_concurrent_reserves_admit_exactly_what_fits(stores: StoreFactory) -> None:
    instances = [stores(), stores()]  # two gateways sharing the backend
    fits = 7
    cap = scope(usd=AMOUNT.usd * fits + AMOUNT.usd / 2)
    results = await asyncio.gather(
        *(instances[i % 2].reserve(f"r{i}", [cap], AMOUNT, TTL_S) for i in range(40))
    )
    admitted = [r for r in results if isinstance(r, Reservation)]
    assert len(admitted) == math.floor(cap.limit_nanousd / AMOUNT.nanousd) == fits  # type: ignore[operator]
    counter = await instances[0].counter(cap.key)
    assert counter.reserved.nanousd == fits * AMOUNT.nanousd <= cap.limit_nanousd  # type: ignore[operator]
    await asyncio.gather(*(instances[1].commit(r.request_id, AMOUNT) for r in admitted))
    counter = await instances[1].counter(cap.key)
    assert counter.spent.nanousd == fits * AMOUNT.nanousd and counter.reserved == Amount()
    assert await instances[0].held() == 0


@pytest.mark.parametrize(
    "amount",
    [
        Amount(-AMOUNT.nanousd, AMOUNT.tokens),
        Amount(AMOUNT.nanousd, -1),
        Amount(MAX_NANOUSD + 1, AMOUNT.tokens),
        Amount(AMOUNT.nanousd, 10**30),  # past a BIGINT: SQLite raised, read as "store down"
    ],
    ids=["negative-usd", "negative-tokens", "past-max-usd", "past-bigint-tokens"],
)
async def test_a_negative_or_overflowing_amount_is_refused_not_reserved(
    stores: StoreFactory, amount: Amount
) -> None:
    store = stores()
    cap = scope(usd=AMOUNT.usd * 3, tokens=10_000)
    with pytest.raises(InvalidRequestError, match="no budget can count"):
        await store.reserve("r1", [cap], amount, TTL_S)
    assert await store.reservation("r1") is None and await store.held() == 0
    assert (await store.counter(cap.key)).reserved == Amount()


async def test_a_refused_amount_in_flight_lets_nothing_past_the_cap(stores: StoreFactory) -> None:
    """A negative reservation held would lower ``reserved`` and let others through."""
    instances = [stores(), stores()]
    fits = 3
    cap = scope(usd=AMOUNT.usd * fits + AMOUNT.usd / 2)
    with pytest.raises(InvalidRequestError):
        await instances[0].reserve("negative", [cap], Amount(-AMOUNT.nanousd * 100, 0), TTL_S)
    results = await asyncio.gather(
        *(instances[i % 2].reserve(f"r{i}", [cap], AMOUNT, TTL_S) for i in range(12))
    )
    assert sum(isinstance(r, Reservation) for r in results) == fits
    counter = await instances[1].counter(cap.key)
    assert counter.reserved.nanousd == fits * AMOUNT.nanousd <= cap.limit_nanousd  # type: ignore[operator]


@pytest.mark.parametrize("max_tokens", [-1_000_000, -1, 0, 10**30])
async def test_the_gate_refuses_a_token_limit_no_budget_can_take(
    stores: StoreFactory, max_tokens: int
) -> None:
    """400, even with ``fail_open`` (an overflow once read as the store being down)."""
    catalog = load_catalog()
    gate = BudgetGate(
        BudgetSettings(fail_open=True),
        Limits(),
        stores(),
        MemoryRateLimiter(),
        store_name="test",
        catalog=catalog,
    )
    strategy = FixedStrategy(catalog.get("openai:gpt-4.1-mini"))
    limits = Limits(usd_total=Decimal(1), tokens_per_minute=10_000)
    request = Request.from_prompt("Hi", max_tokens=max_tokens)
    with pytest.raises(InvalidRequestError) as refused:
        await gate.admit("ci", limits, request, strategy)
    assert refused.value.param == "max_tokens"
    assert await gate.store.held() == 0  # type: ignore[union-attr]
    assert gate.pending == 0 and gate.refusals["store_down"] == 0
    await gate.aclose()


async def test_an_advisor_tool_allowing_too_many_uses_is_refused_before_its_slots() -> None:
    """The request's own advisor tool: each use is a slot; 100 at most (was: any number, a
    list of that many slots)."""
    catalog = load_catalog()
    gate = BudgetGate(
        BudgetSettings(),
        Limits(),
        MemoryBudgetStore(),
        MemoryRateLimiter(),
        store_name="memory",
        catalog=catalog,
    )
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}
    strategy = FixedStrategy(catalog.get("anthropic:claude-haiku-4-5"))
    limits = Limits(usd_total=Decimal(10_000))
    allowed = Request.from_prompt("Hi", max_tokens=100, tools=[advisor | {"max_uses": 100}])
    _, hold = await gate.admit("ci", limits, allowed, strategy)
    assert hold is not None and hold.reserved
    too_many = allowed.model_copy(update={"tools": [Tool(**advisor, max_uses=100_000)]})
    with pytest.raises(InvalidRequestError, match="at most 100 uses"):
        await gate.admit("ci", limits, too_many, strategy)
    await gate.aclose()


async def test_expired_reservations_are_reclaimed(stores: StoreFactory, clock: Clock) -> None:
    store = stores()
    cap = scope(usd=AMOUNT.usd)
    assert isinstance(await store.reserve("crashed", [cap], AMOUNT, TTL_S), Reservation)
    assert isinstance(await store.reserve("late", [cap], Amount(), TTL_S), Reservation)
    assert isinstance(await store.reserve("blocked", [cap], AMOUNT, TTL_S), Rejection)
    assert await store.reclaim() == 0
    clock.now += TTL_S + 1
    assert await store.reclaim() == 2
    assert (await store.counter(cap.key)).reserved == Amount()
    assert await store.held() == 0
    assert not await store.release("crashed")  # its holder is gone; nothing to give back twice
    assert await store.commit("late", Amount(5, 1))  # a late finisher still records its spend
    assert (await store.counter(cap.key)).spent == Amount(5, 1)
    assert isinstance(
        await store.reserve("next", [cap], Amount(AMOUNT.nanousd - 5), TTL_S), Reservation
    )


async def test_running_requests_renew_their_reservations(
    stores: StoreFactory, clock: Clock
) -> None:
    store = stores()
    cap = scope(usd=AMOUNT.usd * 2)
    assert isinstance(await store.reserve("long", [cap], AMOUNT, TTL_S), Reservation)
    assert isinstance(await store.reserve("crashed", [cap], AMOUNT, TTL_S), Reservation)
    for _ in range(3):  # a stream running three TTLs long, renewed by its instance
        clock.now += TTL_S - 1
        await store.renew(["long", "never-reserved"], TTL_S)
    assert await store.reclaim() == 1  # only the one nobody renewed
    assert (await store.counter(cap.key)).reserved == AMOUNT
    assert await store.commit("long", AMOUNT)
    await store.renew(["long"], TTL_S)  # a settled reservation is not revived
    found = await store.reservation("long")
    assert found is not None and found.state == "committed"
    assert await store.held() == 0


async def test_charge_records_unreserved_spend_once(stores: StoreFactory) -> None:
    store = stores()
    day, total = scope("key:ci:day:2026-11-22", usd=Decimal(1)), scope(usd=Decimal(1))
    assert await store.charge("offline", [day, total], AMOUNT)
    assert not await store.charge("offline", [day, total], AMOUNT)
    assert (await store.counter(day.key)).spent == AMOUNT
    assert (await store.counter(total.key)).spent == AMOUNT


async def test_a_store_that_is_down_says_so(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'gone.db'}")
    ledger.close()
    with pytest.raises(BudgetUnavailableError, match="budget store is unavailable"):
        await SqlBudgetStore(ledger).reserve("r", [scope(usd=Decimal(1))], AMOUNT, TTL_S)
    redis = RedisBudgetStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(BudgetUnavailableError, match=r"\(Redis\) is unavailable"):
            await redis.reserve("r", [scope(usd=Decimal(1))], AMOUNT, TTL_S)
    finally:
        await redis.aclose()


# --- limits and rate limits ---------------------------------------------------------------


def test_limits_become_scopes_per_period() -> None:
    own = Limits(usd_per_day=Decimal("2.5"), tokens_total=1000)
    limits = own.over(Limits(usd_per_day=Decimal(9), usd_per_month=Decimal(40)))
    at = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    scopes = {s.period: s for s in limits.scopes("ci", at)}
    assert scopes["day"].key == "key:ci:day:2026-12-31"
    assert scopes["day"].limit_nanousd == 2_500_000_000
    assert scopes["day"].resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert scopes["month"].key == "key:ci:month:2026-12" and scopes["month"].limit_tokens is None
    assert scopes["total"].limit_tokens == 1000 and scopes["total"].resets_at is None
    assert Limits(requests_per_minute=5).has_rate and not Limits(requests_per_minute=5).has_budget
    assert to_nanousd(Decimal("0.0000000001")) == 1  # rounded up, never down


def test_retry_after_waits_for_the_window_to_slide() -> None:
    limits = RateLimits(requests_per_minute=10)
    assert retry_after(Windows((0, 0), (9, 0), 0.5), 1, 0, limits) == 0
    # 10 in the previous window, none now, halfway: 5 + 1 fits
    assert retry_after(Windows((10, 0), (0, 0), 0.5), 1, 0, limits) == 0
    # 10 in the current window: wait for the next one, then until a tenth of it has passed
    wait = retry_after(Windows((0, 0), (10, 0), 0.5), 1, 0, limits)
    assert wait == pytest.approx(30 + 6)
    assert (
        retry_after(Windows((0, 0), (0, 0), 0.0), 1, 50, RateLimits(tokens_per_minute=40))
        == math.inf
    )


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[RateLimiter]:
    made: RateLimiter
    if request.param == "memory":
        made = MemoryRateLimiter(clock=clock)
    else:
        made = RedisRateLimiter(
            REDIS_URL, prefix=request.getfixturevalue("redis_prefix"), clock=clock
        )
    yield made
    await made.aclose()


async def test_requests_per_minute(limiter: RateLimiter, clock: Clock) -> None:
    clock.now = 60 * 30_000_000.0  # the start of a window
    limits = RateLimits(requests_per_minute=3)
    assert [await limiter.hit("ci", 1, 0, limits) for _ in range(3)] == [None] * 3
    wait = await limiter.hit("ci", 1, 0, limits)
    assert wait is not None and 60 < wait <= 80  # into the next window, while this one counts
    assert await limiter.hit("other-key", 1, 0, limits) is None
    clock.now += wait + 0.01
    assert await limiter.hit("ci", 1, 0, limits) is None


async def test_tokens_per_minute_are_corrected_to_real_usage(
    limiter: RateLimiter, clock: Clock
) -> None:
    clock.now = 60 * 30_000_000.0 + 10
    limits = RateLimits(tokens_per_minute=1000)
    assert await limiter.hit("ci", 1, 800, limits) is None
    assert await limiter.hit("ci", 1, 300, limits) is not None
    await limiter.add_tokens("ci", -600)  # the request used 200, not 800
    assert await limiter.hit("ci", 1, 300, limits) is None
