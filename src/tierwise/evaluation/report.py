"""An :class:`EvalReport` as rich tables, JSON, and a self-contained HTML page with the
cost-quality plot (matplotlib, drawn without pyplot's global state, embedded as SVG)."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table

from tierwise.evaluation.harness import EvalReport, RouterResult, Stat

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_ORDER = {"router": 0, "random": 1, "oracle": 2, "model": 3}
COLUMNS = (
    "router",
    "quality",
    "cost $",
    "calls per model",
    "APGR",
    "CPT50 %",
    "CPT80 %",
    "CPT95 %",
    "AIQ",
    "saved @95%",
    "strong calls @95% %",
    "oracle gap",
)


def short(model: str) -> str:
    """``openai:gpt-4-1106-preview`` -> ``gpt-4-1106-preview``; ``a/b`` -> ``b``."""
    return model.rpartition(":")[2].rpartition("/")[2]


def stat(value: Stat | None, places: int = 3, pct: bool = False, spread: bool = True) -> str:
    """``mean±sd`` (sd only over 2+ seeds); percentages without the % sign when ``pct``."""
    if value is None:
        return "-"
    scale, digits = (100.0, 1) if pct else (1.0, places)
    text = f"{value.mean * scale:.{digits}f}"
    return text if value.n < 2 or not spread else f"{text}±{value.sd * scale:.{digits}f}"


def shares_text(result: RouterResult, limit: int = 3) -> str:
    ranked = sorted(result.shares.items(), key=lambda kv: -kv[1].mean)
    parts = [f"{short(model)[:18]} {s.mean:.0%}" for model, s in ranked[:limit] if s.mean >= 0.005]
    return "\n".join(parts)


def saved_text(result: RouterResult) -> str:
    if result.savings_usd is None or result.savings_fraction is None:
        return "not reached"
    share = stat(result.savings_fraction, pct=True, spread=False)
    return f"${result.savings_usd.mean:,.4f} ({share}%)"


def ordered(report: EvalReport) -> list[RouterResult]:
    return sorted(report.results, key=lambda r: (_ORDER[r.kind], r.cost_usd.mean))


def row(result: RouterResult) -> list[str]:
    name = result.name if result.kind != "model" else short(result.name)
    return [
        name,
        stat(result.quality),
        f"${result.cost_usd.mean:,.4f}",
        shares_text(result),
        stat(result.apgr),
        stat(result.cpt.get("50"), pct=True),
        stat(result.cpt.get("80"), pct=True),
        stat(result.cpt.get("95"), pct=True),
        stat(result.aiq),
        saved_text(result),
        stat(result.strong_share_at_target, pct=True),
        stat(result.oracle_gap),
    ]


def summary_table(report: EvalReport) -> Table:
    title = (
        f"{report.dataset}: {report.prompts:,} prompts, {report.test_prompts:,.0f} test prompts "
        f"per seed, {len(report.seeds)} seeds (mean ± sd)"
    )
    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        table.add_column(
            column, justify="left" if column in ("router", "calls per model") else "right"
        )
    for result in ordered(report):
        table.add_row(*row(result))
    table.caption = (
        f"quality, cost and calls at the cheapest point reaching {report.target:.0%} of "
        f"{short(report.strongest)}'s quality; cost = total $ over the test prompts; "
        "APGR/CPT on the share of calls to the strongest model (RouteLLM); AIQ over the "
        "single models' cost range (RouterBench); name@lambda: the lambda rule on the same "
        "predictions; a cascade calls the cheap model first, so its calls add up to over 100%"
    )
    return table


def failures_table(report: EvalReport, router: str, limit: int = 10) -> Table:
    table = Table(
        title=f"{router}: confidently wrong (sent to a model that did worse than a stronger one)",
        title_justify="left",
    )
    for column in ("category", "confidently wrong", "prompts", "rate"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for shape in [s for s in report.failures.get(router, []) if s.confidently_wrong][:limit]:
        table.add_row(
            shape.category, str(shape.confidently_wrong), str(shape.prompts), f"{shape.rate:.1%}"
        )
    return table


def render(report: EvalReport) -> RenderableType:
    """The summary table, the failure shapes of every router, and the dataset notes."""
    parts: list[RenderableType] = [summary_table(report)]
    parts += [
        failures_table(report, name)
        for name, shapes in report.failures.items()
        if any(shape.confidently_wrong for shape in shapes)
    ]
    parts += [f"[dim]note: {escape(note)}[/]" for note in report.notes]
    return Group(*parts)


def write_json(report: EvalReport, path: Path) -> None:
    path.write_text(report.model_dump_json(indent=2), encoding="utf-8")


# HTML


def plot_svg(report: EvalReport) -> str:
    """Cost-quality (left) and quality vs strong-call share (right), as an inline <svg>."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(12, 5), layout="constrained")
    cost_axes, share_axes = figure.subplots(1, 2)
    for index, result in enumerate(r for r in ordered(report) if r.curves):
        _plot_curves(cost_axes, share_axes, result, f"C{index}")
    for result in report.results:
        if result.kind in ("model", "oracle"):
            _plot_point(cost_axes, result)
    _label(cost_axes, share_axes, report)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _plot_curves(cost_axes: Axes, share_axes: Axes, result: RouterResult, color: str) -> None:
    style = "--" if result.kind == "random" else "-"
    for index, curve in enumerate(result.curves):
        label = result.name if index == 0 else None
        alpha = 0.9 if index == 0 else 0.3
        cost_axes.plot(
            curve.cost_usd,
            curve.quality,
            style,
            color=color,
            alpha=alpha,
            label=label,
            linewidth=1.2,
        )
        order = sorted(range(len(curve.quality)), key=lambda i: curve.strong_share[i])
        share_axes.plot(
            [curve.strong_share[i] * 100 for i in order],
            [curve.quality[i] for i in order],
            style,
            color=color,
            alpha=alpha,
            label=label,
            linewidth=1.2,
        )


def _plot_point(axes: Axes, result: RouterResult) -> None:
    oracle = result.kind == "oracle"
    axes.scatter(
        [result.cost_usd.mean],
        [result.quality.mean],
        marker="*" if oracle else "o",
        s=120 if oracle else 30,
        color="black" if oracle else "grey",
        zorder=3,
    )
    axes.annotate(
        short(result.name),
        (result.cost_usd.mean, result.quality.mean),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=7,
    )


def _label(cost_axes: Axes, share_axes: Axes, report: EvalReport) -> None:
    costs = [r.cost_usd.mean for r in report.results if r.kind == "model"]
    if min(costs) > 0 and max(costs) / min(costs) > 20:
        cost_axes.set_xscale("log")
    cost_axes.set(
        xlabel="total cost of the test prompts (USD)",
        ylabel="quality",
        title=f"{report.dataset}: cost vs quality",
    )
    share_axes.set(
        xlabel=f"calls to {short(report.strongest)} (%)",
        ylabel="quality",
        title="quality vs strong-model calls (RouteLLM)",
    )
    for axes in (cost_axes, share_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")


def html_report(report: EvalReport) -> str:
    """A self-contained HTML page: the plot, the summary table, failure shapes, notes."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row(r)) + "</tr>"
        for r in ordered(report)
    )
    failures = "".join(
        _failures_html(report, name)
        for name, shapes in report.failures.items()
        if any(shape.confidently_wrong for shape in shapes)
    )
    notes = "".join(f"<li>{e(note)}</li>" for note in report.notes)
    return _PAGE.format(
        title=e(f"tierwise eval: {report.dataset}"),
        summary=e(
            f"{report.prompts:,} prompts · {report.test_prompts:,.0f} test prompts per seed · "
            f"seeds {', '.join(map(str, report.seeds))} · strongest {report.strongest} · "
            f"cheapest {report.cheapest}"
        ),
        plot=plot_svg(report),
        head=head,
        rows=rows,
        failures=failures,
        notes=notes,
    )


def _failures_html(report: EvalReport, router: str, limit: int = 10) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(s.category)}</td><td>{s.confidently_wrong}</td><td>{s.prompts}</td>"
        f"<td>{s.rate:.1%}</td></tr>"
        for s in [s for s in report.failures[router] if s.confidently_wrong][:limit]
    )
    return (
        f"<h3>{e(router)}: confidently wrong, by category</h3><table><tr><th>category</th>"
        f"<th>confidently wrong</th><th>prompts</th><th>rate</th></tr>{rows}</table>"
    )


def write_html(report: EvalReport, path: Path) -> None:
    path.write_text(html_report(report), encoding="utf-8")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>{title}</h1><p>{summary}</p>
{plot}
<h2>Routers, baselines and single models</h2>
<table><tr>{head}</tr>{rows}</table>
<p>Quality, cost and calls at the cheapest point reaching 95% of the strongest model's
quality; APGR and CPT over the share of calls to the strongest model (RouteLLM); AIQ over the
single models' cost range (RouterBench); oracle gap = oracle quality minus the curve's best;
<code>name@lambda</code>: the same predictions under the lambda rule (quality - lambda x relative
cost); a cascade pays the cheap call before escalating, so its calls add up to over 100%.</p>
<h2>Failure shapes</h2>{failures}
<h2>How the data was read</h2><ul>{notes}</ul>
</body></html>
"""
