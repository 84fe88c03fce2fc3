"""An outcome matrix from tierwise's own traces (``tierwise export``: one task a line).

A task counts when it is a top-level task with a known ``correct`` outcome and an executor
call that succeeded: its cell is (prompt, model of the last executor call), its quality the
last known ``correct`` label and its cost the sum of the task's call costs (every call, the
advisor's included). Repeated cells are averaged. Only prompts labelled for every model seen
are kept — the matrix must be complete for counterfactual routing.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierwise.errors import DatasetError, LedgerError
from tierwise.evaluation.builder import MatrixBuilder, Row
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.ledger.export import read_traces

Cell = tuple[float, float | None, str | None]
"""(quality, cost in USD or None when unknown, response text)."""


def read_trace_files(name: str, paths: Sequence[Path]) -> OutcomeMatrix:
    cells: dict[str, dict[str, list[Cell]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, tuple[str, str]] = {}
    seen = 0
    for path in paths:
        for trace in _traces(path):
            seen += 1
            if (found := _checked_cell(path, trace, seen)) is not None:
                prompt, model, cell = found
                cells[prompt][model].append(cell)
                meta.setdefault(prompt, _identity(trace, prompt))
    return _matrix(name, cells, meta, seen)


def _traces(path: Path) -> Iterable[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as handle:
            yield from read_traces(handle)
    except LedgerError as exc:
        raise DatasetError(f"{path}: {exc.message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read traces from {path}: {exc}") from None


def _checked_cell(path: Path, trace: dict[str, Any], number: int) -> tuple[str, str, Cell] | None:
    try:
        return _cell(trace)
    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as exc:
        raise DatasetError(f"{path}: trace {number} is malformed ({exc!r})") from None


def _cell(trace: dict[str, Any]) -> tuple[str, str, Cell] | None:
    if trace.get("parent_id"):
        return None
    labels = [o["correct"] for o in trace.get("outcomes", []) if o.get("correct") is not None]
    calls = trace.get("calls", [])
    executors = [c for c in calls if c.get("role") == "executor" and c.get("status") == "ok"]
    prompt = trace.get("prompt_text") or (calls[0].get("prompt_text") if calls else None)
    if not labels or not executors or not prompt:
        return None
    last = executors[-1]
    quality = 1.0 if labels[-1] else 0.0
    return prompt, str(last["model"]), (quality, _cost(calls), last.get("response_text"))


def _cost(calls: Sequence[dict[str, Any]]) -> float | None:
    costs = [call.get("cost_usd") for call in calls]
    if any(cost is None for cost in costs):
        return None
    return float(sum((Decimal(str(cost)) for cost in costs), Decimal(0)))


def _identity(trace: dict[str, Any], prompt: str) -> tuple[str, str]:
    metadata = trace.get("metadata") or {}
    row_id = metadata.get("row_id") or hashlib.sha256(prompt.encode()).hexdigest()[:12]
    return str(row_id), str(metadata.get("category") or trace.get("source") or "all")


def _matrix(
    name: str,
    cells: dict[str, dict[str, list[Cell]]],
    meta: dict[str, tuple[str, str]],
    seen: int,
) -> OutcomeMatrix:
    models = sorted({model for by_model in cells.values() for model in by_model})
    builder = MatrixBuilder(name, models)
    incomplete = unknown = 0
    for prompt, by_model in cells.items():
        if set(by_model) != set(models):
            incomplete += 1
        elif (row := _row(prompt, by_model, models, meta[prompt])) is None:
            unknown += 1
        else:
            builder.add(row)
    if not builder.rows:
        raise DatasetError(
            f"{name}: no prompt has a correctness label for every model "
            f"({seen} traces, {len(models)} models)"
        )
    builder.notes.append(
        f"from {seen} traces: {len(builder.rows)} prompts labelled for all {len(models)} "
        f"models; {incomplete} prompts lacking a model and {unknown} of unknown cost left out"
    )
    builder.notes.append("costs: the recorded cost of each task's calls (ledger prices)")
    builder.clean()
    return builder.build()


def _row(
    prompt: str, by_model: dict[str, list[Cell]], models: Sequence[str], ident: tuple[str, str]
) -> Row | None:
    quality, cost, responses = [], [], []
    for model in models:
        repeats = by_model[model]
        costs = [c for _, c, _ in repeats]
        if any(c is None for c in costs):
            return None
        quality.append(sum(q for q, _, _ in repeats) / len(repeats))
        cost.append(sum(c for c in costs if c is not None) / len(repeats))
        responses.append(repeats[-1][2])
    return Row(
        id=ident[0],
        prompt=prompt,
        category=ident[1],
        quality=quality,
        cost=cost,
        responses=responses,
    )
