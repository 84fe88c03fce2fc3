"""How long the dashboard's queries take over a ledger of N synthetic tasks (SQLite file).

Each task has a routing decision, one executor call and an outcome, spread over the last 30
days; one in ten escalates, one in seven consults an advisor. Prints the milliseconds of the
summary for a 1-, 7- and 30-day window and of the first and a deep decisions page, with and
without a search. Usage:

    .venv/bin/python bench/dashboard_queries.py [--tasks 20000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from tierwise.catalog import load_catalog
from tierwise.gateway.dashboard import queries
from tierwise.ledger.records import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    LedgerRecord,
    OutcomeRecord,
    TaskRecord,
)
from tierwise.ledger.store import Ledger

MODELS = ("anthropic:claude-haiku-4-5", "anthropic:claude-sonnet-4-6", "openai:gpt-4.1-mini")


def _task(rng: random.Random, now: datetime) -> list[LedgerRecord]:
    at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
    model = rng.choice(MODELS)
    task = TaskRecord(policy="route:rules", source="gateway", created_at=at)
    reason = f"signals: {rng.choice(['code', 'chat', 'maths'])} -> {model}"
    records: list[LedgerRecord] = [
        task,
        DecisionRecord(
            task_id=task.id, router="rules", chosen_model=model, reason=reason, created_at=at
        ),
        CallRecord(
            task_id=task.id,
            provider=model.partition(":")[0],
            model=model,
            input_tokens=rng.randint(100, 5000),
            output_tokens=rng.randint(10, 900),
            cost_usd=Decimal(rng.randint(1, 9000)) / 1_000_000,
            created_at=at,
        ),
        OutcomeRecord(task_id=task.id, outcome="success", created_at=at),
    ]
    if rng.random() < 0.1:
        records.append(
            EscalationRecord(
                task_id=task.id, from_model=model, to_model=MODELS[1], trigger="gate", created_at=at
            )
        )
    if rng.random() < 1 / 7:
        records.append(
            CallRecord(
                task_id=task.id,
                role="advisor",
                provider="anthropic",
                model="anthropic:claude-opus-4-7",
                input_tokens=3000,
                output_tokens=400,
                cost_usd=Decimal("0.025"),
                created_at=at,
            )
        )
    return records


def _ms(run: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - start) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    rng, now, catalog = random.Random(5), datetime.now(UTC), load_catalog()
    with (
        tempfile.TemporaryDirectory() as folder,
        Ledger.open(f"sqlite:///{Path(folder) / 'ledger.db'}") as ledger,
    ):
        for start in range(0, args.tasks, 1000):
            batch = [r for _ in range(min(1000, args.tasks - start)) for r in _task(rng, now)]
            ledger.append(*batch)
        calls = len(ledger.calls())
        print(f"{args.tasks} tasks, {calls} calls on SQLite (best of 3, ms)")
        for days in (1, 7, 30):
            ms = _ms(partial(queries.summary, ledger, catalog, days, now))
            print(f"  summary, {days:>2} days          {ms:8.1f}")
        deep = max(1, args.tasks // queries.PAGE_SIZE // 2)
        print(f"  decisions, page 1        {_ms(lambda: queries.decision_page(ledger)):8.1f}")
        ms = _ms(lambda: queries.decision_page(ledger, page=deep))
        print(f"  decisions, page {deep:<8} {ms:8.1f}")
        ms = _ms(lambda: queries.decision_page(ledger, "maths"))
        print(f"  decisions, q=maths       {ms:8.1f}")


if __name__ == "__main__":
    main()
