"""What the routes share: settings, metrics, and — while running — the engine and key store.

:class:`Gateway` is built by ``create_app`` without any I/O; the app's lifespan calls
:meth:`Gateway.start` (engine, ledger opened and migrated, keys) and :meth:`Gateway.stop`.
An engine handed in by the caller is used as it is and left for the caller to close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from starlette.types import Scope

from tierwise.budgets.factory import open_budget_gate
from tierwise.budgets.gate import BudgetGate
from tierwise.budgets.metrics import BudgetCollector
from tierwise.catalog import Catalog
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.gateway.auth import Authenticator
from tierwise.gateway.clients import TrustedProxies
from tierwise.gateway.config import GatewayConfig
from tierwise.gateway.gc_tuning import tune_gc
from tierwise.gateway.keys import KeyStore
from tierwise.gateway.metrics import GatewayMetrics
from tierwise.gateway.models import ModelResolver
from tierwise.gateway.throttle import FailureThrottle
from tierwise.gateway.throttle_redis import shared_failures
from tierwise.ledger.journal import JournalOptions
from tierwise.ledger.store import Ledger
from tierwise.ledger.writebehind import WriteBehindOptions
from tierwise.providers.factory import direct_by_default
from tierwise.redaction import install_log_filter

log = logging.getLogger("tierwise.gateway")


@dataclass(frozen=True)
class Running:
    """The parts that exist between start-up and shutdown."""

    engine: Engine
    ledger: Ledger
    keys: KeyStore
    auth: Authenticator
    models: ModelResolver
    budgets: BudgetGate


def _resolver(engine: Engine) -> ModelResolver:
    settings = engine.settings
    return ModelResolver(
        engine.catalog,
        default_policy=settings.default_policy,
        policies=settings.policies,
        provider_kinds={name: row.kind for name, row in settings.providers.items()},
    )


def warn_unmatched_patterns(keys: KeyStore, catalog: Catalog) -> None:
    """Log each active key's allow-list pattern that matches no catalog model id: patterns
    match ids only, so a key made with a bare name or a policy name now allows nothing."""
    ids = [spec.id for spec in catalog]
    for key in keys.list_keys():
        for pattern in key.models if key.active else ():
            if not any(fnmatchcase(model_id, pattern) for model_id in ids):
                log.warning(
                    "key %r: allow-list pattern %r matches no model id (patterns match ids "
                    "such as anthropic:claude-haiku-4-5), so it allows nothing",
                    key.name,
                    pattern,
                )


class Gateway:
    """The gateway's state, owned by one app."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.config: GatewayConfig = settings.gateway
        self.metrics = GatewayMetrics()
        self.proxies = TrustedProxies(self.config.trusted_proxies)
        self._given_engine = engine
        self._running: Running | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._undo_gc: Callable[[], None] | None = None
        self._undo_log_filter: Callable[[], None] | None = None
        gate = lambda: self._running.budgets if self._running else None  # noqa: E731
        self.metrics.registry.register(BudgetCollector(gate))

    @property
    def running(self) -> Running:
        if self._running is None:
            raise RuntimeError("the gateway is not started (serve it through its lifespan)")
        return self._running

    def client_address(self, scope: Scope) -> str:
        """The address a request comes from (a trusted proxy's ``X-Forwarded-For`` believed)."""
        return self.proxies.of_scope(scope)

    def on_stop(self, close: Callable[[], Awaitable[None]]) -> None:
        """Have ``close`` awaited at shutdown (a store a middleware opened on first use)."""
        self._on_stop.append(close)

    async def start(self) -> None:
        """Build the engine (unless given), open and migrate the ledger, load the keys."""
        engine = self._given_engine or Engine(direct_by_default(self.settings))
        self._undo_log_filter = install_log_filter(engine.redactor.merged(self.settings.redactor()))
        ledger = await asyncio.to_thread(lambda: engine.ledger)
        if self.config.write_behind:  # spilled and journaled records imported first
            spill_dir = self.settings.resolved_ledger_spill_dir()
            options = WriteBehindOptions(close_timeout_s=self.config.ledger_close_timeout_s)
            await asyncio.to_thread(
                ledger.start_write_behind,
                options,
                spill_dir=spill_dir,
                journal_options=self._journal_options(spill_dir),
            )
            behind = ledger.write_behind
            self.metrics.ledger_pending.set_function(lambda: behind.pending if behind else 0)
        keys = KeyStore(ledger)
        await asyncio.to_thread(warn_unmatched_patterns, keys, engine.catalog)
        budgets = await asyncio.to_thread(self._budget_gate, engine, ledger)
        admin = self.settings.admin_key
        auth = Authenticator(
            enabled=self.config.auth,
            admin_key=admin.get_secret_value() if admin else None,
            keys=keys,
            cache_s=self.config.key_cache_s,
            throttle=FailureThrottle(self.config.auth_failures, self.config.auth_failure_window_s),
            shared=shared_failures(self.config),
        )
        self._sweeper = asyncio.create_task(budgets.run_sweeper())
        self._running = Running(engine, ledger, keys, auth, _resolver(engine), budgets)
        if self.config.gc_freeze:  # everything long-lived is loaded now
            self._undo_gc = tune_gc(self.config.gc_gen0_threshold)

    def _journal_options(self, spill_dir: Path) -> JournalOptions | None:
        config = self.config
        if not config.journal:
            return None
        return JournalOptions(
            config.journal_dir or spill_dir,
            sync_interval_s=config.journal_sync_ms / 1000,
            segment_bytes=config.journal_segment_bytes,
            wait_fsync=config.journal_fsync,
        )

    def _budget_gate(self, engine: Engine, ledger: Ledger) -> BudgetGate:
        return open_budget_gate(
            budget_store=self.config.budget_store,
            rate_limit_store=self.config.rate_limit_store,
            settings=self.config.budgets,
            defaults=self.config.limits,
            ledger=ledger,
            catalog=engine.catalog,
            processes=self.config.workers,
            failover_chains=engine.settings.failover.fallbacks,
        )

    async def stop(self) -> None:
        running, self._running = self._running, None
        if self._undo_gc is not None:
            self._undo_gc()
            self._undo_gc = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if running is not None:
            await running.budgets.aclose()  # settle what is in flight, write buffered spend
            await running.auth.aclose()
        closers, self._on_stop = self._on_stop, []
        for close in closers:
            await close()
        if running is not None:
            await asyncio.to_thread(running.ledger.stop_write_behind)  # write what is queued
        if running is not None and self._given_engine is None:
            await running.engine.aclose()
        if self._undo_log_filter is not None:  # the last records of the shutdown filtered too
            self._undo_log_filter()
            self._undo_log_filter = None
