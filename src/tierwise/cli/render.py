"""Rich renderings of catalog, results and reports (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table

from tierwise.catalog import ModelSpec
from tierwise.catalog.spec import SKILLS
from tierwise.engine import Result

if TYPE_CHECKING:
    from tierwise.cli.state import ConfigReport
    from tierwise.demo import DemoRun
    from tierwise.ledger.report import SpendLine, SpendReport

UNKNOWN = "[dim]unknown[/]"


def price(value: Decimal | None) -> str:
    return UNKNOWN if value is None else f"${value:,.3f}".rstrip("0").rstrip(".")


def dollars(value: Decimal | None, places: int = 4) -> str:
    return UNKNOWN if value is None else f"${value:,.{places}f}"


def _skills(spec: ModelSpec) -> str:
    return " ".join(f"{name[:4]}{spec.profile.skill(name)}" for name in SKILLS)


def models_table(specs: Iterable[ModelSpec]) -> Table:
    table = Table(title="Model catalog (USD per million tokens)", title_justify="left")
    for column in ("model", "tier", "input", "output", "cache write 5m", "cache write 1h"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for column in ("cache read", "context", "skills (1-5)"):
        table.add_column(column, justify="right" if column != "skills (1-5)" else "left")
    for spec in sorted(specs, key=lambda s: (s.provider, s.profile.tier, s.id)):
        p = spec.prices
        table.add_row(
            spec.id,
            str(spec.profile.tier),
            price(p.input),
            price(p.output),
            price(p.cache_write_5m),
            price(p.cache_write_1h),
            price(p.cache_read),
            f"{spec.context_window:,}" if spec.context_window else "?",
            _skills(spec),
        )
    return table


def explain_panel(result: Result) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_row("task", result.task_id)
    table.add_row("policy", result.policy)
    for decision in result.decisions:
        table.add_row("decision", f"{decision.chosen_model} — {decision.reason}")
    for call in result.calls:
        tokens = (
            f"in {call.input_tokens} · out {call.output_tokens} · cache write "
            f"{call.cache_write_5m_tokens + call.cache_write_1h_tokens} · cache read "
            f"{call.cache_read_tokens}"
        )
        table.add_row(f"{call.role} call", f"{call.model} · {tokens} · {call.latency_ms:.0f} ms")
    table.add_row("cost", dollars(result.cost_usd, 6))
    return Panel(table, title="explain", title_align="left")


def _breakdown(title: str, rows: Mapping[str, SpendLine], label: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (label, "calls", "input", "output", "cache write", "cache read", "cost"):
        table.add_column(column, justify="left" if column == label else "right", no_wrap=True)
    for key, line in rows.items():
        t = line.tokens
        unknown = f" + {line.unknown_cost_calls} unknown" if line.unknown_cost_calls else ""
        table.add_row(
            key,
            f"{line.calls:,}",
            f"{t.input_tokens:,}",
            f"{t.output_tokens:,}",
            f"{t.cache_write_tokens:,}",
            f"{t.cache_read_tokens:,}",
            dollars(line.cost_usd) + unknown,
        )
    return table


def spend_report(report: SpendReport) -> RenderableType:
    summary = Table.grid(padding=(0, 2))
    summary.add_row("calls", f"{report.calls:,}")
    summary.add_row("spend", dollars(report.total_cost_usd))
    if report.unknown_cost_calls:
        summary.add_row(
            "calls of unknown cost", f"{report.unknown_cost_calls:,} (not in the total)"
        )
    summary.add_row(
        f"same tokens all on {report.strongest_model}", dollars(report.counterfactual_cost_usd)
    )
    pct = "" if report.savings_pct is None else f" ({report.savings_pct:.1f}%)"
    summary.add_row("saved", f"{dollars(report.savings_usd)}{pct}")
    return Group(
        Panel(summary, title="spend", title_align="left"),
        _breakdown("by model", report.by_model, "model"),
        _breakdown("by role", report.by_role, "role"),
        _breakdown("by day (UTC)", {str(k): v for k, v in report.by_day.items()}, "day"),
    )


def demo_summary(run: DemoRun) -> Table:
    strong = next(o for o in run.outcomes if o.strong_share == 1.0 and o.tasks)
    table = Table(
        title=f"{run.prompts} recorded {run.dataset} prompts replayed under each policy "
        f"(learned router calibrated on the other {run.calibration_prompts}, "
        f"{run.embedder} embeddings)",
        title_justify="left",
    )
    for column in ("policy", "accuracy", "to strong", "cost", "vs strong-only"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for outcome in [*run.outcomes, run.oracle]:
        ratio = _ratio(outcome.cost_usd, strong.cost_usd)
        table.add_row(
            f"{outcome.label}\n[dim]{outcome.policy}[/]",
            f"{outcome.accuracy:.1%}",
            f"{outcome.strong_share:.0%}",
            dollars(outcome.cost_usd),
            ratio,
        )
    table.caption = (
        "accuracy = the recorded correctness of the answers served; token counts estimated "
        "from the recorded text, prices from the catalog"
    )
    return table


def _ratio(cost: Decimal | None, reference: Decimal | None) -> str:
    if cost is None or not reference:
        return UNKNOWN
    return f"{cost / reference:.0%} of the cost"


def config_report(report: ConfigReport) -> Table:
    table = Table(title="config check", title_justify="left")
    table.add_column("")
    table.add_column("item")
    table.add_column("detail")
    for line in report.lines:
        table.add_row("[green]ok[/]" if line.ok else "[red]fail[/]", line.item, line.detail)
    return table
