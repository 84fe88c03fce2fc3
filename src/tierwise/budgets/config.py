"""``[gateway.budgets]``: how budgets are enforced (the stores are ``[gateway] budget_store``
and ``rate_limit_store``; default limits for every key are ``[gateway.limits]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tierwise.budgets.redis_store import DEFAULT_PREFIX


class BudgetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_open: bool = False
    """When the budget store is down: refuse requests with a 503 (default), or admit them and
    keep their spend in memory until the store is back (nothing is lost while running)."""
    reservation_ttl_s: float = Field(default=120.0, gt=0)
    """A reservation whose holder vanished (a crashed instance) is given back after this; a
    running request's reservation is renewed every ``sweep_s``, however long it streams."""
    sweep_s: float = Field(default=5.0, gt=0)
    """How often expired reservations are reclaimed and buffered spend is retried."""
    redis_prefix: str = DEFAULT_PREFIX
    """Prefix of every Redis key (several deployments may share one Redis)."""
    default_max_tokens: int = Field(default=4096, gt=0)
    """Sent as ``max_tokens`` on a budgeted request that has none, so that its reservation
    bounds what it can cost."""
    input_margin: float = Field(default=1.1, ge=1.0)
    """The input token estimate is multiplied by this before it is priced and reserved."""

    @model_validator(mode="after")
    def _renewed_in_time(self) -> BudgetSettings:
        if self.sweep_s * 2 > self.reservation_ttl_s:
            raise ValueError("sweep_s must be at most half of reservation_ttl_s")
        return self
