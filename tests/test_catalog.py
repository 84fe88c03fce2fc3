from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tierwise.catalog import Catalog, load_catalog
from tierwise.errors import ConfigError, UnknownModelError


def test_shipped_catalog_has_claude_tiers_at_list_prices(catalog: Catalog) -> None:
    expected = {
        "anthropic:claude-haiku-4-5": ("1", "5", "1.25", "2", "0.1"),
        "anthropic:claude-sonnet-4-6": ("3", "15", "3.75", "6", "0.3"),
        "anthropic:claude-opus-4-7": ("5", "25", "6.25", "10", "0.5"),
    }
    for model_id, prices in expected.items():
        p = catalog.get(model_id).prices
        actual = (p.input, p.output, p.cache_write_5m, p.cache_write_1h, p.cache_read)
        assert actual == tuple(Decimal(x) for x in prices)
    tiers = [catalog.get(m).profile.tier for m in expected]
    assert tiers == sorted(tiers) and len(set(tiers)) == 3


def test_prices_are_exact_decimals(catalog: Catalog) -> None:
    assert catalog.get("openai:gpt-5-nano").prices.cache_read == Decimal("0.005")


def test_alias_and_suggestions(catalog: Catalog) -> None:
    assert catalog.get("anthropic:claude-haiku-4-5-20251001").id == "anthropic:claude-haiku-4-5"
    with pytest.raises(UnknownModelError) as info:
        catalog.get("anthropic:claude-hiaku-4-5")
    assert "anthropic:claude-haiku-4-5" in info.value.suggestions
    assert "did you mean" in str(info.value)


def test_unpriced_model_has_unknown_price(catalog: Catalog) -> None:
    assert catalog.get("ollama:llama3.1:8b").prices.input is None


def test_user_models_add_and_override(tmp_path: Path) -> None:
    extra = tmp_path / "models.toml"
    extra.write_text(
        '[[models]]\nid = "ollama:llama3.1:8b"\nprices = { input = 0, output = 0 }\n'
        "profile = { tier = 1 }\n"
    )
    catalog = load_catalog([extra], [{"id": "vllm:my-model", "profile": {"tier": 2}}])
    assert catalog.get("ollama:llama3.1:8b").prices.input == Decimal(0)
    assert catalog.get("vllm:my-model").profile.tier == 2


def test_bad_model_row_is_one_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="model bad-id: id"):
        load_catalog(extra_models=[{"id": "bad-id"}])
    with pytest.raises(ConfigError, match=r"prices\.input"):
        load_catalog(extra_models=[{"id": "x:y", "prices": {"input": "cheap"}}])


def test_strongest_is_highest_tier(catalog: Catalog) -> None:
    strongest = catalog.strongest()
    assert strongest is not None and strongest.id == "anthropic:claude-opus-4-7"
