"""Labels -> traces in tierwise's trace format (``tierwise export``, schema 1), one line per
labelled call, which ``tierwise calibrate`` and ``tierwise eval`` read.

Calibration needs every prompt labelled for every model. A cascade labels only the tiers it
climbed, so gaps are filled, when asked, by the *monotone* assumption: a model of a higher
tier than one that answered a prompt right would answer it right too, and one of a lower tier
than a model that failed would fail. An imputed cell is costed at its own model's catalog
prices for the tokens the labelled call used (unknown when a price is), and says
``"imputed": true`` in its metadata. A prompt whose labels contradict the assumption gets no
imputed cells.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import price_tokens
from tierwise.learning.kinds import TaskKind
from tierwise.learning.labels import Label
from tierwise.ledger.export import SCHEMA_VERSION
from tierwise.ledger.records import CallRecord, OutcomeRecord, new_id
from tierwise.messages import TokenCounts

KindOf = Callable[[str], TaskKind]


@dataclass(frozen=True)
class Cell:
    """A label that goes into the traces, observed or imputed."""

    label: Label
    imputed: bool = False


def _tier(catalog: Catalog, model: str) -> int | None:
    spec = catalog.find(model)
    return None if spec is None else spec.profile.tier


def _imputed_verdict(labels: Sequence[Label], tier: int, catalog: Catalog) -> bool | None:
    below_passed = any(
        label.correct and (_tier(catalog, label.model) or tier) < tier for label in labels
    )
    above_failed = any(
        not label.correct and (_tier(catalog, label.model) or tier) > tier for label in labels
    )
    if below_passed == above_failed:  # neither, or a contradiction
        return None
    return below_passed


def _priced_like(call: CallRecord, spec: ModelSpec) -> Decimal | None:
    tokens = TokenCounts(
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cache_write_5m_tokens=call.cache_write_5m_tokens,
        cache_write_1h_tokens=call.cache_write_1h_tokens,
        cache_read_tokens=call.cache_read_tokens,
    )
    cost = price_tokens(tokens, spec.prices)
    return None if cost is None else cost.total


def _imputed_label(template: Label, spec: ModelSpec, correct: bool) -> Label:
    call = CallRecord(
        task_id=template.task_id,
        provider=spec.provider,
        model=spec.id,
        input_tokens=template.call.input_tokens,
        output_tokens=template.call.output_tokens,
        cache_write_5m_tokens=template.call.cache_write_5m_tokens,
        cache_write_1h_tokens=template.call.cache_write_1h_tokens,
        cache_read_tokens=template.call.cache_read_tokens,
        tokens_estimated=True,
        cost_usd=_priced_like(template.call, spec),
    )
    return Label(template.task_id, template.prompt, call, correct, "imputed")


def _fill(labels: Sequence[Label], models: Sequence[str], catalog: Catalog) -> list[Cell]:
    cells = [Cell(label) for label in labels]
    have = {label.model for label in labels}
    for model in models:
        spec = catalog.find(model)
        if model in have or spec is None:
            continue
        verdict = _imputed_verdict(labels, spec.profile.tier, catalog)
        if verdict is not None:
            cells.append(Cell(_imputed_label(labels[0], spec, verdict), imputed=True))
    return cells


def cells_for(labels: Iterable[Label], catalog: Catalog, *, impute: bool) -> list[Cell]:
    """Every label as a cell, and (``impute``) the monotone fills of each prompt's gaps."""
    by_prompt: dict[str, list[Label]] = defaultdict(list)
    for label in labels:
        by_prompt[label.prompt].append(label)
    models = sorted({label.model for group in by_prompt.values() for label in group})
    cells: list[Cell] = []
    for group in by_prompt.values():
        cells += _fill(group, models, catalog) if impute else [Cell(label) for label in group]
    return cells


def trace_line(cell: Cell, kind: TaskKind) -> dict[str, Any]:
    """One labelled call as a schema-1 trace line of its own."""
    label, line_id = cell.label, new_id()
    call = label.call.model_copy(update={"task_id": line_id, "parent_id": None})
    outcome = OutcomeRecord(
        task_id=line_id,
        outcome="success" if label.correct else "failure",
        correct=label.correct,
        source=label.source,
    )
    metadata = {
        "category": kind.rule,
        "task_kind": kind.words,
        "label_source": label.source,
        "from_task": label.task_id,
        "imputed": cell.imputed,
    }
    return {
        "schema": SCHEMA_VERSION,
        "id": line_id,
        "created_at": label.call.created_at.isoformat(),
        "parent_id": None,
        "policy": None,
        "source": "learn",
        "prompt_text": label.prompt,
        "metadata": metadata,
        "calls": [call.model_dump(mode="json")],
        "decisions": [],
        "escalations": [],
        "gate_results": [],
        "outcomes": [outcome.model_dump(mode="json")],
    }


def write_traces(path: Path, cells: Iterable[Cell], kind_of: KindOf) -> int:
    """Write ``cells`` to ``path`` as JSON lines; the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for cell in cells:
            handle.write(json.dumps(trace_line(cell, kind_of(cell.label.prompt))) + "\n")
            count += 1
    return count
