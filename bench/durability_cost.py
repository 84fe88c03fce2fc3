"""What making a task's records durable before its answer costs: journal vs commit-before-answer.

Issue 13 §10. In one process, an open loop at ``rate`` tasks per second hands each task's
records (a task with its prompt, a decision, a call, an outcome: what a gateway request
stores) to :meth:`Ledger.append_durably`, and times how long the caller waits for it:

* **memory** — write-behind without a journal (what the gateway did before): queued only;
* **journal** — write-behind with the journal: appended to it, then the fsync that covers it
  (group commit; the writer thread still writes the database in batches);
* **commit** — no write-behind: one database transaction per task before returning
  (SQLite in WAL mode as shipped, and PostgreSQL when ``--postgres`` is given).

Printed per mode and rate: wait p50/p99 (ms) and the process's CPU time per task (every
thread: serialising, the journal's fsyncs, the writer's batches), and for the journal the
tasks per fsync. Usage::

    .venv/bin/python bench/durability_cost.py --duration 10 --rates 50,500
    .venv/bin/python bench/durability_cost.py --postgres postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from tierwise.ledger import CallRecord, DecisionRecord, Ledger, OutcomeRecord, TaskRecord
from tierwise.ledger.journal import JournalOptions

PROMPT = "Say hello in twenty short pieces. " * 6


def _task() -> list[TaskRecord | DecisionRecord | CallRecord | OutcomeRecord]:
    task = TaskRecord(source="gateway", policy="fixed:openai:gpt-4.1-mini", prompt_text=PROMPT)
    decision = DecisionRecord(task_id=task.id, router="fixed", chosen_model="openai:gpt-4.1-mini")
    call = CallRecord(
        task_id=task.id,
        provider="openai",
        model="openai:gpt-4.1-mini",
        input_tokens=12,
        output_tokens=20,
        cost_usd=Decimal("0.0000368"),
        latency_ms=50.0,
        prompt_text=PROMPT,
        response_text="hello " * 20,
    )
    return [task, decision, call, OutcomeRecord(task_id=task.id, outcome="success")]


async def _drive(ledger: Ledger, rate: float, duration: float) -> list[float]:
    waits: list[float] = []

    async def one() -> None:
        records = _task()
        start = time.perf_counter()
        await ledger.append_durably(records)
        waits.append((time.perf_counter() - start) * 1000)

    running: set[asyncio.Task[None]] = set()
    begin = time.monotonic()
    sent = 0
    while (now := time.monotonic() - begin) < duration:
        task = asyncio.create_task(one())
        running.add(task)
        task.add_done_callback(running.discard)
        sent += 1
        await asyncio.sleep(max(0.0, sent / rate - now))
    if running:
        await asyncio.wait(running)
    return waits


def _row(mode: str, url: str, rate: float, duration: float, tmp: Path) -> str:
    with Ledger.open(url) as ledger:
        if mode != "commit":
            journal = (
                JournalOptions(tmp / f"journal-{mode}-{rate:g}") if mode == "journal" else None
            )
            ledger.start_write_behind(journal_options=journal)
        cpu = time.process_time()
        waits = asyncio.run(_drive(ledger, rate, duration))
        behind = ledger.write_behind
        fsyncs = behind.journal.fsyncs if behind and behind.journal else 0
        ledger.flush(60)  # the writer's batches count in the CPU too
        cpu_ms = (time.process_time() - cpu) * 1000 / len(waits)
    cuts = statistics.quantiles(waits, n=100)
    batching = f"; {len(waits) / fsyncs:.1f} tasks per fsync" if fsyncs else ""
    return (
        f"{mode:8} {url.split(':', maxsplit=1)[0]:10} {rate:5g}/s: wait p50 {cuts[49]:.3f} ms, "
        f"p99 {cuts[98]:.3f} ms; CPU {cpu_ms:.3f} ms per task{batching}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--rates", default="50,500")
    parser.add_argument("--postgres", help="a PostgreSQL URL for the commit rows too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for rate in (float(r) for r in args.rates.split(",")):
            for mode in ("memory", "journal", "commit"):
                url = f"sqlite:///{tmp / f'{mode}-{rate:g}.db'}"
                print(_row(mode, url, rate, args.duration, tmp), flush=True)
            if args.postgres:
                print(_row("commit", args.postgres, rate, args.duration, tmp), flush=True)


if __name__ == "__main__":
    main()
