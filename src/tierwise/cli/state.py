"""What the CLI commands share: settings loaded once, and the work behind each command."""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn

from tierwise.catalog import Catalog, load_catalog
from tierwise.config import Settings, load_settings
from tierwise.demo import DemoRun, run_demo
from tierwise.engine import Engine, Result
from tierwise.errors import TierwiseError
from tierwise.ledger.export import export_traces
from tierwise.ledger.report import SpendReport, spend_report
from tierwise.ledger.store import Ledger
from tierwise.messages import Request


class CheckLine(BaseModel):
    item: str
    ok: bool
    detail: str


class ConfigReport(BaseModel):
    lines: list[CheckLine]

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)


class CliState:
    def __init__(self, config_path: Path | None, ledger_url: str | None) -> None:
        self.config_path = config_path
        self.ledger_url = ledger_url

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path, ledger_url=self.ledger_url)

    def catalog(self) -> Catalog:
        return load_catalog(extra_models=self.settings.models)

    async def ask(self, prompt: str, policy: str | None, max_tokens: int) -> Result:
        async with Engine(self.settings) as engine:
            request = Request.from_prompt(prompt, max_tokens=max_tokens)
            return await engine.complete(request, policy, source="cli")

    def _ledger(self) -> Ledger:
        return Ledger.open(self.settings.resolved_ledger_url())

    def spend_report(self, *, since: datetime | None, strongest: str | None) -> SpendReport:
        ledger = self._ledger()
        try:
            return spend_report(ledger, self.catalog(), since=since, strongest=strongest)
        finally:
            ledger.close()

    def export(self, path: Path, *, since: datetime | None) -> int:
        ledger = self._ledger()
        try:
            with path.open("w", encoding="utf-8") as handle:
                return export_traces(ledger, handle, since=since, redact=self.settings.redactor())
        finally:
            ledger.close()

    def demo(
        self, *, data_dir: Path | None, limit: int, embedder: str, console: Console
    ) -> DemoRun:
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
        with Progress(*columns, DownloadColumn(), console=console, transient=True) as bar:
            download = bar.add_task("downloading dataset", total=None, visible=False)
            replay = bar.add_task("replaying recorded prompts", total=limit)

            def on_download(done: int, total: int | None) -> None:
                bar.update(download, completed=done, total=total, visible=True)

            return asyncio.run(
                run_demo(
                    self.settings,
                    data_dir=data_dir or self.settings.data_dir,
                    limit=limit,
                    embedder=embedder,
                    on_download=on_download,
                    on_task=lambda: bar.advance(replay),
                )
            )

    def check_config(self) -> ConfigReport:
        lines = [CheckLine(item="config file", ok=True, detail=str(self.config_path or "defaults"))]
        settings = self.settings
        catalog = self.catalog()
        lines.append(CheckLine(item="catalog", ok=True, detail=f"{len(catalog)} models"))
        lines += self._check_policies(settings, catalog)
        lines += self._check_keys(settings, catalog)
        lines.append(self._check_ledger(settings))
        return ConfigReport(lines=lines)

    @staticmethod
    def _check(item: str, action: object) -> CheckLine:
        try:
            detail = action() if callable(action) else str(action)
        except TierwiseError as exc:
            return CheckLine(item=item, ok=False, detail=str(exc))
        return CheckLine(item=item, ok=True, detail=str(detail))

    def _check_policies(self, settings: Settings, catalog: Catalog) -> list[CheckLine]:
        from tierwise.policies import resolve_policy  # noqa: PLC0415
        from tierwise.routing.registry import RouterEnv  # noqa: PLC0415

        env = RouterEnv.for_settings(settings, catalog)
        names = {"default_policy": settings.default_policy} | {
            f"policies.{k}": k for k in settings.policies
        }
        return [
            self._check(
                item,
                lambda n=name: resolve_policy(n, env).name,
            )
            for item, name in names.items()
        ]

    def _check_keys(self, settings: Settings, catalog: Catalog) -> list[CheckLine]:
        used = {spec.provider for spec in catalog} & set(settings.providers)
        default_provider = self._default_provider(settings, catalog)
        lines = []
        for name in sorted(used):
            line = self._check(f"provider {name}", lambda n=name: self._key_detail(settings, n))
            if not line.ok and name != default_provider:
                line = CheckLine(item=line.item, ok=True, detail=f"not set (unused): {line.detail}")
            lines.append(line)
        return lines

    @staticmethod
    def _key_detail(settings: Settings, name: str) -> str:
        key = settings.api_key(name)
        row = settings.provider(name)
        where = row.base_url or "vendor default URL"
        return f"{row.kind} · {where} · key {'set' if key else 'not needed'}"

    @staticmethod
    def _default_provider(settings: Settings, catalog: Catalog) -> str | None:
        from tierwise.policies import parse_policy  # noqa: PLC0415

        spec = parse_policy(settings.default_policy)
        found = catalog.find(spec.argument) if spec.kind == "fixed" else None
        return found.provider if found else None

    def _check_ledger(self, settings: Settings) -> CheckLine:
        def open_and_close() -> str:
            Ledger.open(settings.resolved_ledger_url()).close()
            return settings.resolved_ledger_url()

        return self._check("ledger", open_and_close)
