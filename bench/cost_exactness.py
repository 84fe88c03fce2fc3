"""Cost exactness through the gateway: recorded provider responses replayed, ledger vs hand sums.

Issue 6 §5. The gateway is served by uvicorn on 127.0.0.1 over fake upstreams that answer
with recorded-shape provider responses (tests/fakes: Anthropic usage with the 5 min / 1 h
cache-write split and cache reads, advisor iterations billed at each iteration's model;
OpenAI usage with cached prompt tokens), streaming and not. The official ``anthropic`` and
``openai`` clients send each request; the cost the ledger recorded for the task is compared
with a figure worked out by hand below from list prices (USD per million tokens), not by the
code under test. It prints each case and the total drift (target: exactly 0). Usage::

    .venv/bin/python bench/cost_exactness.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
M = Decimal(1_000_000)
HELLO = [{"role": "user", "content": "Summarise the design doc."}]

# Hand sums (USD per million tokens, list prices in the shipped catalog):
# Haiku 4.5: $1 in, $5 out, $1.25 cache write 5m, $2 cache write 1h, $0.10 cache read.
HAIKU_CACHED = (50 * 1 + 400 * 5 + 1000 * Decimal("1.25") + 4000 * 2 + 30000 * Decimal("0.10")) / M
# Sonnet 4.6 executor ($3 in, $15 out, $3.75 write 5m, $0.30 read) over two iterations, and
# an Opus 4.7 advisor iteration ($5 in, $25 out, $10 write 1h).
ADVISOR = (
    (1200 * 3 + 85 * 15 + 8000 * Decimal("0.30") + 600 * Decimal("3.75"))
    + (9400 * 5 + 620 * 25 + 2800 * 10)
    + (1905 * 3 + 240 * 15 + 8600 * Decimal("0.30"))
) / M
# GPT-4.1 mini: $0.40 in, $0.10 cached in, $1.60 out; 2000 prompt tokens of which 1500 cached.
GPT_CACHED = (500 * Decimal("0.40") + 1500 * Decimal("0.10") + 300 * Decimal("1.60")) / M


@dataclass(frozen=True)
class Case:
    name: str
    expected: Decimal
    run: Callable[[Any], str]
    """Scripts the fake, sends the request through the gateway, returns the task id."""


def _anthropic_case(message: Callable[[], dict[str, Any]], model: str, stream: bool, **extra: Any):
    def run(gw: Any) -> str:
        gw.anthropic_fake.reply_message(message())
        client = gw.anthropic()
        create = client.messages.with_raw_response.create
        raw = create(model=model, max_tokens=2048, messages=HELLO, stream=stream, **extra)
        raw.parse() if not stream else list(raw.parse())
        return str(raw.headers["x-tierwise-task-id"])

    return run


def _openai_case(stream: bool):
    def run(gw: Any) -> str:
        from tests.fakes import openai_upstream as ofx  # noqa: PLC0415

        usage = ofx.usage(2000, 300, cached_tokens=1500)
        gw.openai_fake.reply_completion(ofx.completion("Done.", token_usage=usage))
        create = gw.openai().chat.completions.with_raw_response.create
        raw = create(model="gpt-4.1-mini", messages=HELLO, stream=stream)
        raw.parse() if not stream else list(raw.parse())
        return str(raw.headers["x-tierwise-task-id"])

    return run


def _cross_format_case(message: Callable[[], dict[str, Any]]) -> Callable[[Any], str]:
    def run(gw: Any) -> str:
        gw.anthropic_fake.reply_message(message())
        create = gw.openai().chat.completions.with_raw_response.create
        raw = create(model="anthropic:claude-haiku-4-5", messages=HELLO, stream=True)
        list(raw.parse())
        return str(raw.headers["x-tierwise-task-id"])

    return run


def _cases() -> list[Case]:
    from tests.fakes import anthropic_upstream as fx  # noqa: PLC0415

    def cached() -> dict[str, Any]:
        usage = fx.usage(50, 400, cache_read=30000, cache_write_5m=1000, cache_write_1h=4000)
        return fx.text_message("done", usage_=usage)

    advisor = {
        "tools": [{"type": "advisor_20260301", "name": "advisor", "model": fx.ADVISOR_MODEL}],
        "extra_headers": {"anthropic-beta": fx.ADVISOR_BETA},
    }
    haiku, sonnet = "claude-haiku-4-5", "claude-sonnet-4-6"
    return [
        Case(
            "anthropic cache write 5m+1h, read", HAIKU_CACHED, _anthropic_case(cached, haiku, False)
        ),
        Case("anthropic cache, streamed", HAIKU_CACHED, _anthropic_case(cached, haiku, True)),
        Case(
            "anthropic advisor iterations",
            ADVISOR,
            _anthropic_case(fx.advisor_message, sonnet, False, **advisor),
        ),
        Case(
            "anthropic advisor, streamed",
            ADVISOR,
            _anthropic_case(fx.advisor_message, sonnet, True, **advisor),
        ),
        Case("openai client -> anthropic model", HAIKU_CACHED, _cross_format_case(cached)),
        Case("openai cached prompt tokens", GPT_CACHED, _openai_case(False)),
        Case("openai cached, streamed", GPT_CACHED, _openai_case(True)),
    ]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.gateway_harness import gateway_settings, running_gateway  # noqa: PLC0415

    from tierwise.ledger.store import Ledger  # noqa: PLC0415

    total_drift = Decimal(0)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ledger.db"
        with running_gateway(gateway_settings(url)) as gw:
            done = [(case, case.run(gw)) for case in _cases()]
        with Ledger.open(url) as ledger:
            print(f"{'case':<36} {'hand-computed':>16} {'ledger':>16} {'drift':>8}")
            for case, task_id in done:
                costs = [c.cost_usd for c in ledger.calls(task_id=task_id)]
                recorded = None if None in costs else sum(costs, Decimal(0))  # type: ignore[arg-type]
                drift = (
                    abs((recorded or Decimal(0)) - case.expected) if recorded is not None else None
                )
                total_drift += drift if drift is not None else case.expected
                shown = "unknown" if recorded is None else str(recorded)
                print(f"{case.name:<36} {case.expected!s:>16} {shown:>16} {drift!s:>8}")
    print(f"\ntotal drift: ${total_drift} over {len(done)} cases (target: exactly 0)")
    sys.exit(0 if total_drift == 0 else 1)


if __name__ == "__main__":
    main()
