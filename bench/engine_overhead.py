"""Engine overhead per task on the replay provider, with the ledger on SQLite and PostgreSQL.

Prints p50/p99 milliseconds per task and tasks per second for each ledger backend, measured
side by side in one run on the same recorded prompts (RouteLLM GSM8K). Usage:

    .venv/bin/python bench/engine_overhead.py [--tasks 500] [--data-dir ../shared/data]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tierwise.config import load_settings
from tierwise.datasets import dataset_file, get_dataset
from tierwise.engine import Engine
from tierwise.errors import LedgerError
from tierwise.providers.replay import ReplayProvider

POLICY = "fixed:openai:gpt-4-1106-preview"


async def _measure(ledger_url: str, replay: ReplayProvider, prompts: list[str]) -> list[float]:
    settings = load_settings(None, ledger_url=ledger_url)
    timings = []
    async with Engine(settings, providers={"openai": replay}) as engine:
        await engine.complete(prompts[0], POLICY)  # open and migrate the ledger first
        for prompt in prompts:
            start = time.perf_counter()
            await engine.complete(prompt, POLICY)
            timings.append((time.perf_counter() - start) * 1000)
    return timings


def _report(name: str, timings: list[float]) -> float:
    cuts = statistics.quantiles(timings, n=100)
    rate = len(timings) / (sum(timings) / 1000)
    print(f"{name:<12} p50 {cuts[49]:6.2f} ms  p99 {cuts[98]:6.2f} ms  {rate:7.1f} tasks/s")
    return cuts[49]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).parents[2] / "shared" / "data"
    )
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    source = get_dataset("routellm-gsm8k")
    outcomes = source.load(
        dataset_file(source, data_dir=args.data_dir, cache_dir=Path(tempfile.gettempdir()))
    )
    replay = ReplayProvider("replay", outcomes)
    prompts = sorted({o.prompt for o in outcomes})[: args.tasks]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_p50 = _report(
            "sqlite", asyncio.run(_measure(f"sqlite:///{tmp}/bench.db", replay, prompts))
        )
    try:
        pg_p50 = _report("postgresql", asyncio.run(_measure(args.postgres, replay, prompts)))
        print(f"postgresql/sqlite p50 ratio: {pg_p50 / sqlite_p50:.2f}")
    except LedgerError as exc:
        print(f"postgresql   skipped: {exc}")


if __name__ == "__main__":
    main()
