"""``tierwise serve`` and ``tierwise keys create | list | revoke``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tierwise.catalog import load_catalog
from tierwise.cli import budget_cmd
from tierwise.cli.state import CliState
from tierwise.config import Settings
from tierwise.errors import ConfigError
from tierwise.gateway.keys import ApiKey, KeyStore
from tierwise.ledger.journal import check_writable
from tierwise.ledger.store import Ledger

out = Console()
err = Console(stderr=True)


@contextmanager
def _keys(ctx: typer.Context) -> Iterator[KeyStore]:
    state = ctx.ensure_object(CliState)
    ledger = Ledger.open(state.settings.resolved_ledger_url())
    try:
        yield KeyStore(ledger)
    finally:
        ledger.close()


def _serve_settings(
    settings: Settings, host: str | None, port: int | None, workers: int | None = None
) -> Settings:
    flags = (("host", host), ("port", port), ("workers", workers))
    changes = {k: v for k, v in flags if v is not None}
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=changes)})


def _check_ledger(settings: Settings) -> None:
    """Open (and migrate) the ledger once before serving: one clear error if it cannot be,
    not a traceback from every worker's startup; the workers find it migrated. Warns when
    auth is on and no key could pass it."""
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        if not settings.gateway.auth or settings.admin_key is not None:
            return
        if any(key.active for key in KeyStore(ledger).list_keys()):
            return
    err.print(
        "[yellow]warning:[/] auth is on and no key exists: set TIERWISE_ADMIN_KEY "
        "or run `tierwise keys create NAME`",
        highlight=False,
    )


def _check_journal(settings: Settings) -> None:
    """With the journal on, its folder must be writable: one clear error before serving."""
    gateway = settings.gateway
    if gateway.write_behind and gateway.journal:
        check_writable(gateway.journal_dir or settings.resolved_ledger_spill_dir())


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8787].")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes sharing the port [1].", show_default=False)
    ] = None,
) -> None:
    """Serve the OpenAI- and Anthropic-compatible gateway (point your SDK's base URL here)."""
    try:
        import uvicorn  # noqa: F401, PLC0415 (optional dependency)

        from tierwise.gateway import serving  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(f"the gateway needs: pip install 'tierwise[gateway]' ({exc})") from None
    state = ctx.ensure_object(CliState)
    settings = _serve_settings(state.settings, host, port, workers)
    _check_ledger(settings)
    _check_journal(settings)
    serving.run(
        settings,
        config_path=state.config_path,
        ledger_url=state.ledger_url,
        access_log=access_log,
        drain_s=settings.gateway.drain_s,
    )


def _keys_table(keys: list[ApiKey]) -> Table:
    table = Table(title="gateway API keys", title_justify="left")
    for column in ("name", "id", "models", "created (UTC)", "status"):
        table.add_column(column)
    for key in keys:
        status = "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        created = f"{key.created_at:%Y-%m-%d %H:%M}"
        models = (", ".join(key.models) or "all") + (" +inline" if key.inline_policies else "")
        table.add_row(key.name, key.id, models, created, status)
    return table


def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the key (unique).")],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            "-m",
            help="Allowed model ids (globs, e.g. 'anthropic:*haiku*'); repeatable. Checked "
            "against every model a request's policy may call.",
        ),
    ] = None,
    inline_policies: Annotated[
        bool,
        typer.Option(
            "--inline-policies",
            help="Let the key send policy expressions (tierwise/<policy>, the safe subset).",
        ),
    ] = False,
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    patterns = models or []
    _warn_unmatched(ctx.ensure_object(CliState).settings, patterns)
    with _keys(ctx) as store:
        created = store.create(name, patterns, inline_policies=inline_policies)
    out.print(created.token, markup=False, highlight=False)
    allowed = ", ".join(created.key.models) or "every model"
    inline = "; inline policies allowed" if inline_policies else ""
    err.print(f"key {name!r} created for {allowed}{inline}; it is not shown again", highlight=False)


def _warn_unmatched(settings: Settings, patterns: list[str]) -> None:
    """A pattern that matches no catalog id would allow nothing: say so (ids, not names)."""
    ids = [spec.id for spec in load_catalog(extra_models=settings.models)]
    for pattern in patterns:
        if not any(fnmatchcase(model_id, pattern) for model_id in ids):
            err.print(
                f"[yellow]warning:[/] {pattern!r} matches no model id of the catalog "
                "(ids look like anthropic:claude-haiku-4-5; globs such as '*haiku*' work)",
                highlight=False,
            )


def keys_list(ctx: typer.Context) -> None:
    """List keys (never their secrets)."""
    with _keys(ctx) as store:
        out.print(_keys_table(store.list_keys()))


def keys_revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name or id.")]
) -> None:
    """Revoke a key; a running gateway stops accepting it within its key cache time."""
    with _keys(ctx) as store:
        key = store.revoke(name)
    out.print(f"revoked key {key.name!r} ({key.id})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``keys`` group to the ``tierwise`` app."""
    app.command()(serve)
    keys = typer.Typer(help="Manage the gateway's API keys.", no_args_is_help=True)
    keys.command("create")(keys_create)
    keys.command("list")(keys_list)
    keys.command("revoke")(keys_revoke)
    budget_cmd.register(keys)  # keys limits, keys usage
    app.add_typer(keys, name="keys")
