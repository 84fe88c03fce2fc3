"""``tierwise keys limits NAME`` and ``tierwise keys usage NAME``: a key's budgets and rate
limits, and what it has spent against them (read from the configured budget store)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tierwise.budgets.factory import open_budget_gate
from tierwise.budgets.limits import Limits
from tierwise.cli.state import CliState
from tierwise.errors import InvalidRequestError
from tierwise.gateway.keys import KeyStore
from tierwise.ledger.store import Ledger

out = Console()
err = Console(stderr=True)

Usd = Annotated[str | None, typer.Option(help="Dollars, e.g. 5 or 0.25.", show_default=False)]
Count = Annotated[int | None, typer.Option(show_default=False)]


def _limits(current: Limits | None, given: dict[str, Any]) -> Limits:
    merged = (current or Limits()).model_dump(exclude_none=True) | {
        k: v for k, v in given.items() if v is not None
    }
    try:
        return Limits.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(f"--{where.replace('_', '-')}: {first['msg']}") from None


def keys_limits(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name or id.")],
    *,
    usd_per_day: Usd = None,
    usd_per_month: Usd = None,
    usd_total: Usd = None,
    usd_per_request: Usd = None,
    tokens_per_day: Count = None,
    tokens_per_month: Count = None,
    tokens_total: Count = None,
    requests_per_minute: Annotated[int | None, typer.Option("--rpm", show_default=False)] = None,
    tokens_per_minute: Annotated[int | None, typer.Option("--tpm", show_default=False)] = None,
    clear: Annotated[bool, typer.Option(help="Remove the key's own limits first.")] = False,
) -> None:
    """Set a key's budgets and rate limits; options not given keep their value."""
    given = {
        k: v for k, v in locals().items() if k in Limits.model_fields and isinstance(v, (str, int))
    }
    state = ctx.ensure_object(CliState)
    with Ledger.open(state.settings.resolved_ledger_url()) as ledger:
        store = KeyStore(ledger)
        found = next((k for k in store.list_keys() if name in (k.name, k.id)), None)
        if found is None:
            raise InvalidRequestError(f"no key named {name!r}")
        limits = _limits(None if clear else found.limits, given)
        store.set_limits(found.id, limits if limits != Limits() else None)
    shown = limits.model_dump(exclude_none=True)
    text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "none (the [gateway.limits] defaults)"
    out.print(f"key {found.name!r} limits: {text}", highlight=False, markup=False)


async def _usage(state: CliState, name: str, limits: Limits) -> Table:
    config = state.settings.gateway
    with Ledger.open(state.settings.resolved_ledger_url()) as ledger:
        gate = await asyncio.to_thread(
            open_budget_gate,
            budget_store=config.budget_store,
            rate_limit_store="memory",
            settings=config.budgets,
            defaults=config.limits,
            ledger=ledger,
            catalog=state.catalog(),
        )
        table = Table(title=f"budgets of key {name!r} ({gate.store_name})", title_justify="left")
        for column in ("scope", "spent $", "spent tokens", "reserved $", "limit", "resets (UTC)"):
            table.add_column(column)
        try:
            for scope in limits.over(config.limits).scopes(name, datetime.now(UTC)):
                counter = await gate.store.counter(scope.key) if gate.store else None
                if counter is None:
                    continue
                limit = [f"${scope.limit_nanousd / 1e9:g}" if scope.limit_nanousd else ""]
                limit += [f"{scope.limit_tokens} tokens" if scope.limit_tokens else ""]
                resets = f"{scope.resets_at:%Y-%m-%d %H:%M}" if scope.resets_at else "never"
                table.add_row(
                    scope.key,
                    f"{counter.spent.usd:.6f}",
                    str(counter.spent.tokens),
                    f"{counter.reserved.usd:.6f}",
                    " / ".join(x for x in limit if x),
                    resets,
                )
        finally:
            await gate.aclose()
    return table


def keys_usage(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name or id.")]
) -> None:
    """What a key has spent and holds against each of its budgets now."""
    state = ctx.ensure_object(CliState)
    with Ledger.open(state.settings.resolved_ledger_url()) as ledger:
        found = next((k for k in KeyStore(ledger).list_keys() if name in (k.name, k.id)), None)
    if found is None:
        raise InvalidRequestError(f"no key named {name!r}")
    out.print(asyncio.run(_usage(state, found.name, found.limits or Limits())))


def register(keys: typer.Typer) -> None:
    """Add ``limits`` and ``usage`` to the ``tierwise keys`` group."""
    keys.command("limits")(keys_limits)
    keys.command("usage")(keys_usage)
