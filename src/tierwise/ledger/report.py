"""What was spent, where, and what it saved against running everything on the strongest model.

All money is exact ``Decimal``. A call whose cost is unknown is counted in
``unknown_cost_calls`` and adds nothing to any cost figure — it is never priced as 0, and it is
left out of the counterfactual too, so that savings compare like with like.

The counterfactual reprices each call's own token counts (all four axes, as stored) at the
strongest model's prices: ``savings_usd = counterfactual_cost_usd - total_cost_usd``. It is
``None`` when there is no strongest model or one of its needed prices is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, Field

from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import price_tokens
from tierwise.ledger.records import CallRecord
from tierwise.ledger.store import Ledger
from tierwise.messages import TokenCounts

K = TypeVar("K", bound=Hashable)


class SpendLine(BaseModel):
    """Calls, tokens and known cost of a group of calls."""

    calls: int = 0
    unknown_cost_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    """The sum of the known costs."""
    tokens: TokenCounts = Field(default_factory=TokenCounts)


class SpendReport(BaseModel):
    """Spend over the calls created at or after ``since`` (all calls when ``None``)."""

    since: datetime | None = None
    calls: int
    unknown_cost_calls: int
    total_cost_usd: Decimal
    """The sum of the known costs."""
    tokens: TokenCounts
    by_model: dict[str, SpendLine]
    by_role: dict[str, SpendLine]
    by_day: dict[date, SpendLine]
    """Keyed by the UTC date of each call."""
    strongest_model: str | None
    counterfactual_cost_usd: Decimal | None
    """The calls of known cost, repriced at the strongest model's prices."""
    savings_usd: Decimal | None
    savings_pct: Decimal | None
    """``savings_usd`` as a percentage of the counterfactual (``None`` when that is 0)."""


def spend_report(
    ledger: Ledger,
    catalog: Catalog,
    since: datetime | None = None,
    *,
    strongest: str | None = None,
) -> SpendReport:
    """Spend since ``since``; savings against ``strongest`` (default: the catalog's strongest)."""
    calls = ledger.calls(since=since)
    total = _line(calls)
    spec = catalog.get(strongest) if strongest is not None else catalog.strongest()
    counterfactual = _counterfactual(calls, spec)
    savings = None if counterfactual is None else counterfactual - total.cost_usd
    return SpendReport(
        since=since,
        calls=total.calls,
        unknown_cost_calls=total.unknown_cost_calls,
        total_cost_usd=total.cost_usd,
        tokens=total.tokens,
        by_model=_grouped(calls, lambda call: call.model),
        by_role=_grouped(calls, lambda call: call.role),
        by_day=_grouped(calls, lambda call: call.created_at.astimezone(UTC).date()),
        strongest_model=None if spec is None else spec.id,
        counterfactual_cost_usd=counterfactual,
        savings_usd=savings,
        savings_pct=_percent(savings, counterfactual),
    )


def call_tokens(call: CallRecord) -> TokenCounts:
    """The token counts a call record stores, on all four axes."""
    return TokenCounts(
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cache_write_5m_tokens=call.cache_write_5m_tokens,
        cache_write_1h_tokens=call.cache_write_1h_tokens,
        cache_read_tokens=call.cache_read_tokens,
    )


def _line(calls: Iterable[CallRecord]) -> SpendLine:
    line = SpendLine()
    for call in calls:
        line.calls += 1
        line.tokens = _add_tokens(line.tokens, call_tokens(call))
        if call.cost_usd is None:
            line.unknown_cost_calls += 1
        else:
            line.cost_usd += call.cost_usd
    return line


def _grouped(calls: Iterable[CallRecord], key: Callable[[CallRecord], K]) -> dict[K, SpendLine]:
    groups: dict[K, list[CallRecord]] = {}
    for call in calls:
        groups.setdefault(key(call), []).append(call)
    ordered = sorted(groups.items(), key=lambda item: str(item[0]))
    return {name: _line(members) for name, members in ordered}


def _add_tokens(a: TokenCounts, b: TokenCounts) -> TokenCounts:
    return TokenCounts(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cache_write_5m_tokens=a.cache_write_5m_tokens + b.cache_write_5m_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
    )


def _counterfactual(calls: Iterable[CallRecord], spec: ModelSpec | None) -> Decimal | None:
    """The known-cost calls' tokens at ``spec``'s prices; ``None`` if a price is missing."""
    if spec is None:
        return None
    total = Decimal(0)
    for call in calls:
        if call.cost_usd is None:
            continue
        cost = price_tokens(call_tokens(call), spec.prices)
        if cost is None:
            return None
        total += cost.total
    return total


def _percent(part: Decimal | None, whole: Decimal | None) -> Decimal | None:
    if part is None or not whole:
        return None
    return part / whole * 100
