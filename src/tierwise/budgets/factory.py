"""Build the gateway's budget gate from ``[gateway]``: which stores, by name or URL.

``budget_store``: ``ledger`` (default: the ledger's own database — SQLite for one instance,
PostgreSQL when the ledger is), ``memory`` (this process only), a SQL URL (``sqlite:///…``,
``postgresql://…``) or ``redis://…``. ``rate_limit_store``: ``memory`` or ``redis://…``;
unset, it follows a Redis budget store and is memory otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from tierwise.budgets.config import BudgetSettings
from tierwise.budgets.gate import BudgetGate
from tierwise.budgets.limits import Limits
from tierwise.budgets.rate import MemoryRateLimiter, RateLimiter
from tierwise.budgets.redis_store import RedisBudgetStore, RedisRateLimiter
from tierwise.budgets.sql import SqlBudgetStore
from tierwise.budgets.store import BudgetStore, MemoryBudgetStore
from tierwise.catalog import Catalog
from tierwise.errors import ConfigError
from tierwise.ledger.store import Ledger, mask_password

log = logging.getLogger("tierwise.budgets")
_REDIS = ("redis://", "rediss://", "unix://")
_SQL = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")


def _store(name: str, ledger: Ledger, settings: BudgetSettings) -> BudgetStore:
    if name == "memory":
        return MemoryBudgetStore()
    if name == "ledger":
        return SqlBudgetStore(ledger)
    if name.startswith(_REDIS):
        return RedisBudgetStore(name, prefix=settings.redis_prefix)
    if name.startswith(_SQL):
        return SqlBudgetStore(Ledger.open(name), owned=True)
    raise ConfigError(
        f"gateway.budget_store {mask_password(name)!r}: expected ledger, memory, a SQL URL "
        "(sqlite:///…, postgresql://…) or redis://…"
    )


def _rates(name: str | None, budget_store: str, settings: BudgetSettings) -> RateLimiter:
    name = name or (budget_store if budget_store.startswith(_REDIS) else "memory")
    if name == "memory":
        return MemoryRateLimiter()
    if name.startswith(_REDIS):
        return RedisRateLimiter(name, prefix=settings.redis_prefix)
    raise ConfigError(
        f"gateway.rate_limit_store {mask_password(name)!r}: expected memory or redis://…"
    )


def open_budget_gate(
    *,
    budget_store: str,
    rate_limit_store: str | None,
    settings: BudgetSettings,
    defaults: Limits,
    ledger: Ledger,
    catalog: Catalog,
    processes: int = 1,
    failover_chains: Mapping[str, Sequence[str]] | None = None,
) -> BudgetGate:
    """The gate with its stores opened (a SQL URL is connected and migrated: blocking);
    ``processes``: how many serve the same port (``tierwise serve --workers``)."""
    if processes > 1 and budget_store == "memory":
        raise ConfigError(
            f"gateway.budget_store = 'memory' keeps budgets per process, and {processes} "
            "workers would each spend the whole budget: use 'ledger', a SQL URL or redis://"
        )
    rates = _rates(rate_limit_store, budget_store, settings)
    if processes > 1 and isinstance(rates, MemoryRateLimiter):
        log.warning(
            "per-minute limits are counted per process (%d workers): set "
            "gateway.rate_limit_store = 'redis://…' to share them",
            processes,
        )
    store = _store(budget_store, ledger, settings)
    return BudgetGate(
        settings,
        defaults,
        store,
        rates,
        store_name=mask_password(budget_store),
        catalog=catalog,
        failover_chains=failover_chains,
    )
