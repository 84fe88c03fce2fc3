"""Readers for the recorded-outcome formats: RouteLLM CSVs, RouterBench CSVs, RouterDC JSON.

Each reader takes local files (already verified when they come from a pinned dataset) and
returns a cleaned :class:`OutcomeMatrix`; every choice made on the way is in ``notes``.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from tierwise.catalog import Catalog
from tierwise.cost import price_tokens
from tierwise.errors import DatasetError
from tierwise.evaluation.builder import MatrixBuilder, Row
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.messages import TokenCounts
from tierwise.tokens import estimate_tokens

NOMINAL_PRICE = Decimal("1.00")
"""USD per million tokens, for every model, where a dataset has no costs and no prices."""
MMLU_OUTPUT_TOKENS = 1
"""RouteLLM generated MMLU answers with ``max_new_tokens=1`` (one letter)."""

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_BOOL = {"true": 1.0, "1": 1.0, "1.0": 1.0, "false": 0.0, "0": 0.0, "0.0": 0.0}


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Format problems in ``path`` become one DatasetError line."""
    try:
        yield
    except (KeyError, ValueError, TypeError, SyntaxError, csv.Error, OSError) as exc:
        detail = f"missing column {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DatasetError(f"{path} is not in a format tierwise reads: {detail}") from None


def csv_rows(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(max(csv.field_size_limit(), sys.maxsize >> 32))
    with reading(path), path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def contaminated_prompts(path: Path | None) -> list[str]:
    """RouteLLM's ``eval_prompt`` list (prompts too close to its router-training data)."""
    if path is None:
        return []
    with reading(path), path.open(encoding="utf-8") as handle:
        return [json.loads(line)["eval_prompt"] for line in handle if line.strip()]


def gsm8k_bucket(prompt: str) -> str:
    """A coarse difficulty bucket from the question alone: how many numbers it gives."""
    count = len(_NUMBER.findall(prompt))
    return "<=2 numbers" if count <= 2 else "3-4 numbers" if count <= 4 else "5+ numbers"


class Pricer:
    """Dollar cost of estimated token counts at catalog prices (nominal where unknown)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.nominal: set[str] = set()

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        spec = self.catalog.find(model)
        tokens = TokenCounts(input_tokens=input_tokens, output_tokens=output_tokens)
        priced = price_tokens(tokens, spec.prices) if spec else None
        if priced is None:
            self.nominal.add(model)
            return float(Decimal(input_tokens + output_tokens) * NOMINAL_PRICE / 1_000_000)
        return float(priced.total)

    def note(self) -> list[str]:
        if not self.nominal:
            return []
        names = ", ".join(sorted(self.nominal))
        return [f"no catalog prices for {names}: costed at a nominal ${NOMINAL_PRICE}/M tokens"]


# RouteLLM: prompt, one bool column per model, optional <model>_response columns.


def read_routellm(
    name: str,
    files: Sequence[tuple[Path, str]],
    *,
    contaminated: Path | None,
    models: Mapping[str, str],
    catalog: Catalog,
) -> OutcomeMatrix:
    """RouteLLM response CSVs; ``files`` pairs each path with its category ('' = bucket)."""
    tables = [(path, category, csv_rows(path)) for path, category in files]
    columns = _routellm_models(tables[0][0], tables[0][2])
    builder = MatrixBuilder(name, [models.get(c, c) for c in columns])
    pricer = Pricer(catalog)
    for path, category, rows in tables:
        with reading(path):
            for index, row in enumerate(rows):
                row_id = f"{path.stem.removesuffix('_responses')}-{index}"
                builder.add(
                    _routellm_row(
                        row_id, row, category, columns, models=builder.models, pricer=pricer
                    )
                )
    builder.drop_prompts(contaminated_prompts(contaminated), "contaminated prompts (RouteLLM)")
    builder.clean()
    builder.notes += _routellm_cost_notes(tables[0][2], columns) + pricer.note()
    return builder.build()


def _routellm_models(path: Path, rows: list[dict[str, str]]) -> list[str]:
    if not rows:
        raise DatasetError(f"{path} has no rows")
    header = list(rows[0])
    if "prompt" not in header:
        raise DatasetError(f"{path} is not in a format tierwise reads: no 'prompt' column")
    return [c for c in header if c != "prompt" and not c.endswith("_response")]


def _routellm_row(
    row_id: str,
    row: dict[str, str],
    category: str,
    columns: Sequence[str],
    *,
    models: Sequence[str],
    pricer: Pricer,
) -> Row:
    prompt = row["prompt"]
    responses: list[str | None] = [row.get(f"{c}_response") for c in columns]
    prompt_tokens = estimate_tokens(prompt)
    cost = [
        pricer.cost(
            model,
            prompt_tokens,
            MMLU_OUTPUT_TOKENS if text is None else estimate_tokens(text),
        )
        for model, text in zip(models, responses, strict=True)
    ]
    return Row(
        id=row_id,
        prompt=prompt,
        category=category or gsm8k_bucket(prompt),
        quality=[_bool(row[c]) for c in columns],
        cost=cost,
        responses=None if all(r is None for r in responses) else responses,
    )


def _bool(text: str) -> float:
    if (value := _BOOL.get(text.strip().lower())) is None:
        raise ValueError(f"{text!r} is not a correctness flag (True/False)")
    return value


def _routellm_cost_notes(rows: list[dict[str, str]], columns: Sequence[str]) -> list[str]:
    if f"{columns[0]}_response" in rows[0]:
        return ["costs: estimated tokens of the prompt and the recorded response x catalog prices"]
    return [
        "costs: estimated prompt tokens + an assumed 1 output token (RouteLLM asked for one "
        "letter, max_new_tokens=1) x catalog prices; the 5-shot examples RouteLLM also sent "
        "are not in the file and not counted"
    ]


# RouterBench: sample_id, prompt (a stringified list), eval_name, <model>, <model>|total_cost,
# <model>|model_response.


def read_routerbench(
    name: str, paths: Sequence[Path], *, models: Mapping[str, str]
) -> OutcomeMatrix:
    tables = [(path, csv_rows(path)) for path in paths]
    columns = _routerbench_models(tables[0][0], tables[0][1])
    builder = MatrixBuilder(name, [models.get(c, c) for c in columns])
    rows: list[Row] = []
    for path, table in tables:
        split = _split_of(path)
        with reading(path):
            rows += [_routerbench_row(raw, columns, split) for raw in table]
    merged, nan_cells = _merge_by_id(rows)
    builder.rows = merged
    if dropped := len(rows) - len(merged):
        builder.notes.append(
            f"merged {dropped} rows repeating a sample_id (each copy scored some models)"
        )
    if nan_cells:
        builder.notes.append(f"{nan_cells} missing (NaN) scores counted as 0")
    builder.clean()
    builder.notes.append("costs: RouterBench's recorded USD per call (<model>|total_cost)")
    return builder.build()


def _routerbench_models(path: Path, rows: list[dict[str, str]]) -> list[str]:
    if not rows or "sample_id" not in rows[0]:
        raise DatasetError(f"{path} is not in a format tierwise reads: no 'sample_id' column")
    return [c.removesuffix("|total_cost") for c in rows[0] if c.endswith("|total_cost")]


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    if stem.endswith(("_test", "-test")):
        return "test"
    if stem.endswith(("_train", "-train")):
        return "train"
    return None


def _listed(text: str) -> str:
    value = ast.literal_eval(text) if text.startswith("[") else text
    return "\n\n".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _score(text: str) -> float:
    return math.nan if text.strip().lower() in {"", "nan"} else float(text)


def _routerbench_row(raw: dict[str, str], columns: Sequence[str], split: str | None) -> Row:
    return Row(
        id=raw["sample_id"],
        prompt=_listed(raw["prompt"]),
        category=raw["eval_name"],
        quality=[_score(raw[c]) for c in columns],
        cost=[float(raw[f"{c}|total_cost"]) for c in columns],
        responses=[_response(raw.get(f"{c}|model_response")) for c in columns],
        split=split,
    )


def _response(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    try:
        return _listed(text)
    except (ValueError, SyntaxError):
        return text


def _merge_by_id(rows: list[Row]) -> tuple[list[Row], int]:
    """One row per id: the copy with most scores, its missing scores filled from the others;
    scores still missing count as 0. Returns the rows and the count of such cells."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.id, []).append(row)
    merged = [_merge(group) for group in groups.values()]
    nan_cells = sum(math.isnan(q) for row in merged for q in row.quality)
    for row in merged:
        row.quality = [0.0 if math.isnan(q) else q for q in row.quality]
    return merged, nan_cells


def _merge(group: list[Row]) -> Row:
    group = sorted(group, key=lambda row: sum(math.isnan(q) for q in row.quality))
    first = group[0]
    for other in group[1:]:
        first.quality = [
            o if math.isnan(q) else q for q, o in zip(first.quality, other.quality, strict=True)
        ]
    if any(row.split == "test" for row in group):
        first.split = "test"
    return first


# RouterDC: a JSON list of {"question", "scores": {model: float}}.

_MULTIPLE_CHOICE = ("mmlu", "arc")


def read_routerdc(name: str, paths: Sequence[Path]) -> OutcomeMatrix:
    tables = [(path, _json_list(path)) for path in paths]
    models = _routerdc_models(tables)
    builder = MatrixBuilder(name, models)
    for path, items in tables:
        with reading(path):
            for index, item in enumerate(items):
                builder.add(_routerdc_row(path, index, item, models))
    builder.clean()
    builder.notes += [
        "quality: multiple choice (MMLU, ARC) correct when score > 0; GSM8K, HumanEval, MBPP "
        "and JavaScript keep the pass fraction of 10 samples; MATH 0/1",
        f"costs: none recorded; nominal = estimated prompt tokens x ${NOMINAL_PRICE}/M tokens, "
        "the same for every model (cost curves compare call counts only)",
        "split: *_train files are train, *_test files and the out-of-distribution sets test",
    ]
    return builder.build()


def _json_list(path: Path) -> list[dict[str, Any]]:
    with reading(path), path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path} is not in a format tierwise reads: expected a JSON list")
    return data


def _routerdc_models(tables: Sequence[tuple[Path, list[dict[str, Any]]]]) -> list[str]:
    path, items = tables[0]
    with reading(path):
        return list(items[0]["scores"])


def _routerdc_task(path: Path) -> str:
    stem = path.stem
    for suffix in ("_train", "_test", "-train", "-test"):
        stem = stem.removesuffix(suffix)
    return stem


def _routerdc_row(path: Path, index: int, item: dict[str, Any], models: Sequence[str]) -> Row:
    task = _routerdc_task(path)
    scores = [float(item["scores"][m]) for m in models]
    if task.lower().startswith(_MULTIPLE_CHOICE):
        scores = [1.0 if s > 0 else 0.0 for s in scores]
    prompt = str(item["question"])
    cost = float(Decimal(estimate_tokens(prompt)) * NOMINAL_PRICE / 1_000_000)
    return Row(
        id=f"{path.stem}-{index}",
        prompt=prompt,
        category=task,
        quality=scores,
        cost=[cost] * len(models),
        split=_split_of(path) or "test",
    )
