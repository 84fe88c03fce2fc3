"""Exact cost of a response, in Decimal dollars.

Rules, in the order that bugs usually break them:

* all four axes count: input, output, cache writes (5-minute and 1-hour TTL priced apart)
  and cache reads;
* when ``usage.iterations`` is present it is the billing truth: every iteration (executor
  ``message``, ``advisor_message``, ``compaction``, ``fallback_message``) is billed at its own
  model's prices, and the top-level figures are not added again;
* a price that is needed and not known, or usage the upstream did not report, makes the
  whole cost ``None`` — never 0.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from pydantic import BaseModel

from tierwise.catalog import ModelSpec, Prices
from tierwise.messages import TokenCounts, Usage

MILLION = Decimal(1_000_000)

SpecLookup = Callable[[str], ModelSpec | None]
"""Finds the spec of an iteration's upstream model name (``None`` when unknown)."""


class CostBreakdown(BaseModel):
    """Dollars per axis; ``total`` is their exact sum."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_write: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.input + self.output + self.cache_write + self.cache_read

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            input=self.input + other.input,
            output=self.output + other.output,
            cache_write=self.cache_write + other.cache_write,
            cache_read=self.cache_read + other.cache_read,
        )


def _axis(tokens: int, price: Decimal | None) -> Decimal | None:
    if tokens == 0:
        return Decimal(0)
    if price is None:
        return None
    return Decimal(tokens) * price / MILLION


def price_tokens(tokens: TokenCounts, prices: Prices) -> CostBreakdown | None:
    """The cost of one set of token counts at ``prices``, or ``None`` if a price is missing."""
    parts = (
        _axis(tokens.input_tokens, prices.input),
        _axis(tokens.output_tokens, prices.output),
        _axis(tokens.cache_write_5m_tokens, prices.cache_write_5m),
        _axis(tokens.cache_write_1h_tokens, prices.cache_write_1h),
        _axis(tokens.cache_read_tokens, prices.cache_read),
    )
    if any(part is None for part in parts):
        return None
    inp, out, write_5m, write_1h, read = (p or Decimal(0) for p in parts)
    return CostBreakdown(input=inp, output=out, cache_write=write_5m + write_1h, cache_read=read)


def price_usage(usage: Usage, spec: ModelSpec, lookup: SpecLookup) -> CostBreakdown | None:
    """The cost of a response by ``spec``'s model; iterations are billed per model."""
    if usage.unreported:
        return None
    if not usage.iterations:
        return price_tokens(usage, spec.prices)
    total = CostBreakdown()
    for iteration in usage.iterations:
        iteration_spec = spec if iteration.model is None else lookup(iteration.model)
        if iteration_spec is None:
            return None
        part = price_tokens(iteration, iteration_spec.prices)
        if part is None:
            return None
        total = total + part
    return total


def reprice(usage: Usage, spec: ModelSpec) -> CostBreakdown | None:
    """What the same tokens would have cost on ``spec`` (for savings counterfactuals)."""
    return price_tokens(billed_tokens(usage), spec.prices)


def billed_tokens(usage: Usage) -> TokenCounts:
    """Tokens billed on each axis: the iterations' sum when present, else the top level."""
    if not usage.iterations:
        return TokenCounts.model_validate(usage.model_dump(include=set(TokenCounts.model_fields)))
    totals = TokenCounts()
    for it in usage.iterations:
        totals = TokenCounts(
            input_tokens=totals.input_tokens + it.input_tokens,
            output_tokens=totals.output_tokens + it.output_tokens,
            cache_write_5m_tokens=totals.cache_write_5m_tokens + it.cache_write_5m_tokens,
            cache_write_1h_tokens=totals.cache_write_1h_tokens + it.cache_write_1h_tokens,
            cache_read_tokens=totals.cache_read_tokens + it.cache_read_tokens,
        )
    return totals
