"""Recorded provider responses through the engine: ledger cost equals the hand-computed figure.

The figures below are worked out by hand from list prices (USD per million tokens), not by
calling the code under test.
"""

from __future__ import annotations

from decimal import Decimal

import httpx2

from tests.fakes import anthropic_upstream as fx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.ledger.store import Ledger
from tierwise.messages import Request, Tool
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.streaming import collect

# Sonnet 4.6 executor: $3 in, $15 out, $3.75 cache write 5m, $0.30 cache read.
# Opus 4.7 advisor: $5 in, $25 out, $10 cache write 1h.
EXECUTOR_FIRST = 1200 * 3 + 85 * 15 + 8000 * Decimal("0.30") + 600 * Decimal("3.75")  # 9525
ADVISOR = 9400 * 5 + 620 * 25 + 2800 * 10  # 90500
EXECUTOR_SECOND = 1905 * 3 + 240 * 15 + 8600 * Decimal("0.30")  # 11895
ADVISOR_EXCHANGE_COST = (EXECUTOR_FIRST + ADVISOR + EXECUTOR_SECOND) / Decimal(1_000_000)


def _engine(settings: Settings, fake: FakeAnthropic) -> Engine:
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    config = ProviderConfig(kind="anthropic", base_url="http://anthropic.fake")
    provider = AnthropicProvider("anthropic", config, "sk-test", http_client=client)
    return Engine(settings, providers={"anthropic": provider})


def _advisor_request() -> Request:
    advisor = Tool(name="advisor", type="advisor_20260301", model=fx.ADVISOR_MODEL, max_uses=2)
    return Request.from_prompt(
        "Fix the failing test in utils.py",
        max_tokens=2048,
        tools=[advisor],
        headers={"anthropic-beta": fx.ADVISOR_BETA},
    )


async def test_advisor_iterations_cost_exactly(settings: Settings) -> None:
    assert Decimal("0.11192") == ADVISOR_EXCHANGE_COST
    fake = FakeAnthropic().reply_message(fx.advisor_message())
    async with _engine(settings, fake) as engine:
        result = await engine.complete(_advisor_request(), "fixed:anthropic:claude-sonnet-4-6")
    assert result.cost_usd == ADVISOR_EXCHANGE_COST
    assert fake.last_request.headers["anthropic-beta"] == fx.ADVISOR_BETA
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
    assert call.cost_usd == ADVISOR_EXCHANGE_COST
    # the ledger keeps billed totals over all three iterations, not the top-level figures
    assert (call.input_tokens, call.output_tokens) == (1200 + 9400 + 1905, 85 + 620 + 240)
    assert (call.cache_write_5m_tokens, call.cache_write_1h_tokens) == (600, 2800)
    assert call.cache_read_tokens == 8000 + 8600
    assert [it["kind"] for it in call.iterations] == ["message", "advisor_message", "message"]


async def test_streamed_advisor_exchange_costs_the_same(settings: Settings) -> None:
    fake = FakeAnthropic().reply_message(fx.advisor_message())
    async with _engine(settings, fake) as engine:
        response = await collect(
            engine.stream(_advisor_request(), "fixed:anthropic:claude-sonnet-4-6")
        )
    assert [b.type for b in response.content][1:3] == ["server_tool_use", "advisor_tool_result"]
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
    assert call.stream and call.cost_usd == ADVISOR_EXCHANGE_COST


async def test_cache_write_and_read_without_iterations(settings: Settings) -> None:
    usage = fx.usage(50, 400, cache_read=30000, cache_write_5m=1000, cache_write_1h=4000)
    fake = FakeAnthropic().reply_message(fx.text_message("done", usage_=usage))
    async with _engine(settings, fake) as engine:
        result = await engine.complete(
            Request.from_prompt("summarise", max_tokens=500), "fixed:anthropic:claude-haiku-4-5"
        )
    # Haiku 4.5: 50*$1 + 400*$5 + 30000*$0.10 + 1000*$1.25 + 4000*$2 = 14300 per million
    assert result.cost_usd == Decimal("0.0143")
