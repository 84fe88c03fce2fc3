"""What a key may spend: :class:`Limits`, and the budget scopes they become for a request.

A scope is one counter row: a key's spend in one period (``key:ci:day:2026-11-22``,
``key:ci:month:2026-11``, ``key:ci:total``), with a dollar and a token limit. A new period
is a new row, so budgets reset without any job. Money is counted in integer nano-dollars
(rounded up), which keeps ``spent + reserved + amount <= limit`` exact in SQL and in Lua.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tierwise.errors import InvalidRequestError

Period = Literal["day", "month", "total"]
NANO = Decimal(1_000_000_000)
MAX_NANOUSD = 2**53 - 1
"""Counters stay exact in Lua's doubles below this (about $9 million)."""
MAX_TOKENS = 2**53 - 1
"""The same bound for token counters (both fit the stores' BIGINT columns)."""


def to_nanousd(usd: Decimal) -> int:
    """``usd`` in nano-dollars, rounded up (a budget never undercounts)."""
    return int((usd * NANO).to_integral_value(rounding=ROUND_CEILING))


def to_usd(nanousd: int) -> Decimal:
    return Decimal(nanousd) / NANO


@dataclass(frozen=True)
class Amount:
    """Money and tokens: what a request reserves or spent."""

    nanousd: int = 0
    tokens: int = 0

    @property
    def usd(self) -> Decimal:
        return to_usd(self.nanousd)


def bounded(amount: Amount) -> Amount:
    """``amount`` if a budget can count it: neither negative nor past :data:`MAX_NANOUSD` /
    :data:`MAX_TOKENS`. Otherwise the request is refused (400), never taken for a store
    failure (a counter overflowing its column) and never admitted by ``fail_open``."""
    if 0 <= amount.nanousd <= MAX_NANOUSD and 0 <= amount.tokens <= MAX_TOKENS:
        return amount
    raise InvalidRequestError(
        f"this request may cost up to ${amount.usd:.6f} ({amount.tokens} tokens), which no "
        "budget can count; lower max_tokens or shorten the input",
        param="max_tokens",
    )


class Limits(BaseModel):
    """A key's limits; ``None`` means no limit (or, on a key, the ``[gateway.limits]`` default)."""

    model_config = ConfigDict(extra="forbid")

    usd_per_day: Decimal | None = Field(default=None, ge=0, le=to_usd(MAX_NANOUSD))
    usd_per_month: Decimal | None = Field(default=None, ge=0, le=to_usd(MAX_NANOUSD))
    usd_total: Decimal | None = Field(default=None, ge=0, le=to_usd(MAX_NANOUSD))
    tokens_per_day: int | None = Field(default=None, ge=0)
    tokens_per_month: int | None = Field(default=None, ge=0)
    tokens_total: int | None = Field(default=None, ge=0)
    usd_per_request: Decimal | None = Field(default=None, ge=0)
    """The most one request may cost at worst (its reservation)."""
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)

    def over(self, defaults: Limits) -> Limits:
        """These limits, each unset one taken from ``defaults``."""
        return defaults.model_copy(update=self.model_dump(exclude_none=True))

    @property
    def has_budget(self) -> bool:
        """Whether any period budget (dollars or tokens) is set."""
        return any(self._period(p) != (None, None) for p in ("day", "month", "total"))

    @property
    def has_rate(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def _period(self, period: Period) -> tuple[Decimal | None, int | None]:
        usd = {"day": self.usd_per_day, "month": self.usd_per_month, "total": self.usd_total}
        tokens = {
            "day": self.tokens_per_day,
            "month": self.tokens_per_month,
            "total": self.tokens_total,
        }
        return usd[period], tokens[period]

    def scopes(self, key: str, now: datetime) -> list[Scope]:
        """The budget scopes of key ``key`` at ``now``, sorted (the order locks are taken in)."""
        found = []
        for period in ("day", "month", "total"):
            usd, tokens = self._period(period)
            if usd is None and tokens is None:
                continue
            bucket, resets = _bucket(period, now)
            found.append(
                Scope(
                    key=f"key:{key}:{bucket}",
                    owner=key,
                    limit_nanousd=None if usd is None else to_nanousd(usd),
                    limit_tokens=tokens,
                    period=period,
                    resets_at=resets,
                )
            )
        return sorted(found, key=lambda s: s.key)


@dataclass(frozen=True)
class Scope:
    """One budget counter and its limits for this request."""

    key: str
    limit_nanousd: int | None
    limit_tokens: int | None
    owner: str = ""
    period: Period = "total"
    resets_at: datetime | None = None

    def describe(self) -> str:
        period = {"day": "daily", "month": "monthly", "total": "total"}[self.period]
        return f"the {period} budget of key {self.owner or self.key!r}"


def _bucket(period: Period, now: datetime) -> tuple[str, datetime | None]:
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"day:{start:%Y-%m-%d}", start + timedelta(days=1)
    if period == "month":
        year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
        return f"month:{now:%Y-%m}", datetime(year, month, 1, tzinfo=UTC)
    return "total", None
