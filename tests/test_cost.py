"""Exact cost: four axes, TTL-split cache writes, per-iteration billing, unknown is None."""

from __future__ import annotations

from decimal import Decimal

from tierwise.catalog import Catalog, ModelSpec, Prices
from tierwise.cost import price_tokens, price_usage, reprice
from tierwise.messages import TokenCounts, Usage, UsageIteration


def _lookup(catalog: Catalog, provider: str = "anthropic"):
    return lambda name: catalog.find_upstream(provider, name)


def test_four_axes_with_ttl_split(catalog: Catalog) -> None:
    haiku = catalog.get("anthropic:claude-haiku-4-5")
    usage = Usage(
        input_tokens=1200,
        output_tokens=150,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=1000,
        cache_read_tokens=10000,
    )
    cost = price_usage(usage, haiku, _lookup(catalog))
    assert cost is not None
    # 1200*$1 + 150*$5 + 2000*$1.25 + 1000*$2 + 10000*$0.10 = 7450 per million tokens
    assert cost.total == Decimal("0.00745")
    assert cost.cache_write == Decimal("0.0045")
    assert cost.cache_read == Decimal("0.001")


def test_iterations_bill_each_model_and_ignore_top_level(catalog: Catalog) -> None:
    haiku = catalog.get("anthropic:claude-haiku-4-5")
    usage = Usage(
        # top level covers only the first executor iteration: must not be added again
        input_tokens=1200,
        output_tokens=850,
        cache_write_5m_tokens=2000,
        cache_write_1h_tokens=1000,
        cache_read_tokens=10000,
        iterations=[
            UsageIteration(
                kind="message",
                input_tokens=1200,
                output_tokens=150,
                cache_write_5m_tokens=2000,
                cache_write_1h_tokens=1000,
                cache_read_tokens=10000,
            ),
            UsageIteration(
                kind="advisor_message",
                model="claude-opus-4-7",
                input_tokens=14500,
                output_tokens=1600,
            ),
            UsageIteration(
                kind="message", input_tokens=2100, output_tokens=700, cache_read_tokens=13000
            ),
        ],
    )
    cost = price_usage(usage, haiku, _lookup(catalog))
    assert cost is not None
    # executor 7450 + advisor (14500*5 + 1600*25 = 112500) + executor 6900 = 126850 per million
    assert cost.total == Decimal("0.12685")


def test_unknown_iteration_model_makes_cost_unknown(catalog: Catalog) -> None:
    haiku = catalog.get("anthropic:claude-haiku-4-5")
    usage = Usage(
        iterations=[
            UsageIteration(kind="advisor_message", model="claude-mystery-9", input_tokens=10)
        ]
    )
    assert price_usage(usage, haiku, _lookup(catalog)) is None


def test_missing_price_is_none_never_zero() -> None:
    spec = ModelSpec(id="ollama:llama3.1:8b", prices=Prices())
    assert price_tokens(TokenCounts(input_tokens=10), spec.prices) is None
    assert price_tokens(TokenCounts(), spec.prices) is not None  # no tokens, nothing unknown


def test_openai_cached_tokens_priced_at_cache_read(catalog: Catalog) -> None:
    mini = catalog.get("openai:gpt-4.1-mini")
    usage = Usage(input_tokens=500, cache_read_tokens=1500, output_tokens=300)
    cost = price_usage(usage, mini, _lookup(catalog, "openai"))
    assert cost is not None
    # 500*$0.40 + 1500*$0.10 + 300*$1.60 = 830 per million
    assert cost.total == Decimal("0.00083")


def test_reprice_flattens_iterations(catalog: Catalog) -> None:
    opus = catalog.get("anthropic:claude-opus-4-7")
    usage = Usage(
        iterations=[
            UsageIteration(input_tokens=100, output_tokens=10),
            UsageIteration(
                kind="advisor_message", model="claude-opus-4-7", input_tokens=200, output_tokens=20
            ),
        ]
    )
    cost = reprice(usage, opus)
    assert cost is not None
    assert cost.total == Decimal(300 * 5 + 30 * 25) / Decimal(1_000_000)
