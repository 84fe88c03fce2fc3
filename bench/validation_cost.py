"""What checking a request body at the gateway's edge costs, per body, in microseconds.

For three bodies — a small Chat Completions request, a small Messages request, and the
trimmed Claude Code request of the tests (five turns with thinking, tool use and results, an
image, a PDF, six tools; about 5 KB) — prints the time of ``json.loads`` of its text, of the
checks alone (``validate_openai`` / ``validate_anthropic``, the surrogate pass included), and
of the whole translation to a canonical request (``request_from_*``, which runs the checks
first). Each figure is the best of ``--repeat`` runs of ``--n`` calls (the machine is shared;
the best run is the least disturbed one). Usage:

    PYTHONPATH=src .venv/bin/python bench/validation_cost.py [--n 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierwise.wire.anthropic import request_from_anthropic
from tierwise.wire.openai import request_from_openai
from tierwise.wire.validate_anthropic import validate_anthropic
from tierwise.wire.validate_openai import validate_openai

ROOT = Path(__file__).resolve().parent.parent
Row = tuple[str, dict[str, Any], Callable[[Any], Any], Callable[[Any], Any]]

SMALL_OPENAI = {
    "model": "gpt-4.1-mini",
    "max_tokens": 1024,
    "temperature": 0.2,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello, how are you?"},
    ],
}
SMALL_ANTHROPIC = {
    "model": "claude-haiku-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, how are you?"}],
}


def best_us(work: Callable[[], Any], n: int, repeat: int) -> float:
    for _ in range(n // 10):
        work()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            work()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def timed(row: Row, n: int, repeat: int) -> str:
    name, body, check, translate = row
    text = json.dumps(body)
    loads = best_us(lambda: json.loads(text), n, repeat)
    checks = best_us(lambda: check(body), n, repeat)
    whole = best_us(lambda: translate(body), n, repeat)
    return f"{name:<26}{len(text):>7}{loads:>12.1f}{checks:>9.1f}{whole:>13.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.fakes.anthropic_upstream import claude_code_request  # noqa: PLC0415

    rows: list[Row] = [
        ("chat completions, small", SMALL_OPENAI, validate_openai, request_from_openai),
        ("messages, small", SMALL_ANTHROPIC, validate_anthropic, request_from_anthropic),
        (
            "messages, Claude Code",
            claude_code_request(),
            validate_anthropic,
            request_from_anthropic,
        ),
    ]
    print(f"{'body':<26}{'bytes':>7}{'json.loads':>12}{'checks':>9}{'translation':>13}  (us)")
    for row in rows:
        print(timed(row, args.n, args.repeat))


if __name__ == "__main__":
    main()
