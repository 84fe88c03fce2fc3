"""Budget correctness under concurrency: N requests at once against a budget that fits K.

Issue 6 §4. A fake upstream (bench/fake_upstream.py, its own process, 50 ms latency) answers
every request with the same usage; the prompt and ``max_tokens`` are chosen so that a
request's reservation (input estimate + ``max_tokens`` at the model's price, margin 1.0)
equals what it really costs, so exactly K fit. For each row the script starts one or two
``tierwise serve`` processes (on different ports) sharing the budget store, creates a key
whose total budget is K requests' cost, releases all N requests at once (alternating between
the instances), waits, and prints:

* ok / refused — 200s, and 429s (``insufficient_quota`` or "held by requests in flight");
* overshoot — dollars spent above the cap, from the ledger's call costs (exact Decimal);
* false rejections — refused requests the budget could still have paid for at the end;
* held — reservations left held in the store after every request ended.

Rows: one instance on SQLite; one and two instances on PostgreSQL (budgets in the ledger's
database, per-minute limits in Redis); one and two instances with budgets in Redis. The
PostgreSQL rows use a fresh schema (dropped afterwards), the Redis rows a unique key prefix
(deleted afterwards); a row whose database is unreachable is skipped with a note. Usage::

    .venv/bin/python bench/budget_concurrency.py                 # 200 requests, fits 20
    .venv/bin/python bench/budget_concurrency.py --requests 500 --fits 50
    .venv/bin/python bench/budget_concurrency.py --smoke          # SQLite only, 40 / 5

Targets: overshoot $0, false rejections 0, held 0 — single and multi-instance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx2
import psycopg
import redis
from processes import free_port, process, wait_http
from psycopg import sql

from tierwise.budgets.limits import Limits, to_nanousd, to_usd
from tierwise.budgets.redis_store import RedisBudgetStore
from tierwise.budgets.sql import SqlBudgetStore
from tierwise.budgets.store import BudgetStore
from tierwise.catalog import load_catalog
from tierwise.gateway.keys import KeyStore
from tierwise.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4.1-mini"
PROMPT = "one two three four five six seven eight nine ten eleven twelve"
"""Twelve tokens by the gateway's estimate: the fake upstream reports 12 input tokens."""
INPUT_TOKENS = 12
POSTGRES_URL = os.environ.get("TIERWISE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")
REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY = "bench"


@dataclass(frozen=True)
class Row:
    name: str
    instances: int
    backend: str  # sqlite | postgresql | redis


@dataclass
class Outcome:
    ok: int = 0
    quota: int = 0
    in_flight: int = 0
    other: int = 0


# --- backends ----------------------------------------------------------------------------


@contextmanager
def _postgres_schema() -> Iterator[str]:
    schema = f"tierwise_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def _redis_prefix() -> Iterator[str]:
    prefix = f"tierwise-bench:{uuid.uuid4().hex[:10]}:"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    client.ping()
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _available(backend: str) -> str | None:
    """Why ``backend`` cannot be used here, or None."""
    try:
        if backend == "postgresql":
            psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
        if backend in ("postgresql", "redis"):
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as exc:
        return " ".join(str(exc).split())
    return None


# --- one row -----------------------------------------------------------------------------


def _config(tmp: Path, upstream_port: int, backend: str, prefix: str) -> Path:
    stores = ""
    if backend == "postgresql":
        stores = f'rate_limit_store = "{REDIS_URL}"\n'
    elif backend == "redis":
        stores = f'budget_store = "{REDIS_URL}"\n'
    config = tmp / f"tierwise-{backend}.toml"
    config.write_text(
        f'default_policy = "fixed:openai:{MODEL}"\n'
        "[providers.openai]\n"
        'kind = "openai"\n'
        f'base_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        'api_key = "sk-bench"\n'
        "max_retries = 0\n"
        "[gateway]\n"
        "max_in_flight = 1024\n"
        "max_loop_lag_ms = 0\n"  # measure budgets, not load shedding on a busy machine
        f"{stores}"
        "[gateway.budgets]\n"
        "input_margin = 1.0\n"
        f'redis_prefix = "{prefix}"\n'
    )
    return config


def _request_cost(output_tokens: int) -> Decimal:
    prices = load_catalog().get(f"openai:{MODEL}").prices
    assert prices.input is not None and prices.output is not None
    return (INPUT_TOKENS * prices.input + output_tokens * prices.output) / 1_000_000


async def _fire(urls: list[str], token: str, count: int, output_tokens: int) -> Outcome:
    outcome = Outcome()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": output_tokens,
    }
    limits = httpx2.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(limits=limits, timeout=120, headers=headers) as client:
        start = asyncio.Event()

        async def one(i: int) -> None:
            await start.wait()
            reply = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body)
            if reply.status_code == 200:
                outcome.ok += 1
            elif reply.status_code == 429 and "insufficient_quota" in reply.text:
                outcome.quota += 1
            elif reply.status_code == 429:
                outcome.in_flight += 1
            else:
                outcome.other += 1
                print(f"  unexpected {reply.status_code}: {reply.text[:200]}", file=sys.stderr)

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.sleep(0.2)  # every task is waiting on the start line
        start.set()
        await asyncio.gather(*tasks)
    return outcome


def _store(backend: str, ledger: Ledger, prefix: str) -> BudgetStore:
    if backend == "redis":
        return RedisBudgetStore(REDIS_URL, prefix=prefix)
    return SqlBudgetStore(ledger)


async def _after(store: BudgetStore) -> tuple[int, int]:
    """(spent nano-dollars in the store, reservations held), once requests settled."""
    deadline = time.monotonic() + 30
    while await store.held() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    spent = (await store.counter(f"key:{KEY}:total")).spent.nanousd
    held = await store.held()
    await store.aclose()
    return spent, held


def run_row(row: Row, args: argparse.Namespace, upstream_port: int, tmp: Path) -> str:
    cost = _request_cost(args.chunks)
    cap = cost * args.fits
    with ExitStack() as backends, ExitStack() as stack:
        ledger_url = f"sqlite:///{tmp / f'{row.name}.db'}"
        if row.backend == "postgresql":
            ledger_url = backends.enter_context(_postgres_schema())
        prefix = backends.enter_context(_redis_prefix()) if row.backend != "sqlite" else "x:"
        with Ledger.open(ledger_url) as ledger:
            token = KeyStore(ledger).create(KEY, limits=Limits(usd_total=cap)).token
        config = _config(tmp, upstream_port, row.backend, prefix)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
        env |= {"XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}
        tierwise = str(Path(sys.executable).parent / "tierwise")
        urls = []
        for i in range(row.instances):
            port = free_port()
            command = [tierwise, "--config", str(config), "--ledger", ledger_url]
            command += ["serve", "--port", str(port)]
            stack.enter_context(process(command, env, tmp / f"{row.name}-{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_http(int(url.rsplit(":", 1)[1]), "/healthz")
        outcome = asyncio.run(_fire(urls, token, args.requests, args.chunks))
        with Ledger.open(ledger_url) as ledger:
            store_spent, held = asyncio.run(_after(_store(row.backend, ledger, prefix)))
        stack.close()  # stop the gateways: their ledgers are written through
        with Ledger.open(ledger_url) as ledger:
            costs = [c.cost_usd for c in ledger.calls()]
    known = sum((c for c in costs if c is not None), Decimal(0))
    unknown = sum(c is None for c in costs)
    overshoot = max(Decimal(0), known - cap)
    left = int((cap - known) // cost) if known <= cap else 0
    refused = outcome.quota + outcome.in_flight
    false_rejections = min(refused, left)
    store_over = max(0, store_spent - to_nanousd(cap))
    return (
        f"{row.name:<28} {outcome.ok:>4} {outcome.quota:>6} {outcome.in_flight:>9} "
        f"{outcome.other:>6}  ${overshoot:<10} {false_rejections:>6} {held:>5}  "
        f"${to_usd(store_over):<8} {unknown:>7}"
    )


ROWS = [
    Row("1 instance, SQLite", 1, "sqlite"),
    Row("1 instance, PostgreSQL", 1, "postgresql"),
    Row("2 instances, PostgreSQL", 2, "postgresql"),
    Row("1 instance, Redis", 1, "redis"),
    Row("2 instances, Redis", 2, "redis"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--chunks", type=int, default=20, help="output tokens per answer")
    parser.add_argument("--smoke", action="store_true", help="SQLite only, 40 requests, fits 5")
    args = parser.parse_args()
    rows = ROWS
    if args.smoke:
        args.requests, args.fits, rows = 40, 5, ROWS[:1]
    cost = _request_cost(args.chunks)
    print(
        f"{args.requests} requests at once, budget ${cost * args.fits} = {args.fits} x "
        f"${cost} (each reserves and costs {INPUT_TOKENS} + {args.chunks} tokens of {MODEL})"
    )
    print(
        f"{'row':<28} {'ok':>4} {'quota':>6} {'in-flight':>9} {'other':>6}  "
        f"{'overshoot':<11} {'false':>6} {'held':>5}  {'store>cap':<9} {'unknown':>7}"
    )
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        port = free_port()
        script = str(ROOT / "bench" / "fake_upstream.py")
        upstream = [sys.executable, script, "--port", str(port)]
        upstream += ["--latency-ms", str(args.latency_ms), "--chunks", str(args.chunks)]
        with process(upstream, dict(os.environ), tmp / "upstream.log"):
            for row in rows:
                if (why := _available(row.backend)) is not None:
                    print(f"{row.name:<28} skipped: {why}")
                    continue
                print(run_row(row, args, port, tmp), flush=True)


if __name__ == "__main__":
    main()
