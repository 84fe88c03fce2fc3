"""Rows gathered one at a time, cleaned (contaminated and duplicate prompts dropped) and
turned into an :class:`OutcomeMatrix`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tierwise.evaluation.matrix import FloatArray, OutcomeMatrix


@dataclass
class Row:
    """One prompt: its quality and USD cost per model, in the builder's model order."""

    id: str
    prompt: str
    category: str
    quality: list[float]
    cost: list[float]
    responses: list[str | None] | None = None
    split: str | None = None


@dataclass
class MatrixBuilder:
    name: str
    models: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def drop_prompts(self, prompts: Iterable[str], why: str) -> None:
        """Drop rows whose prompt text is in ``prompts``; say how many in the notes."""
        banned = set(prompts)
        kept = [row for row in self.rows if row.prompt not in banned]
        if dropped := len(self.rows) - len(kept):
            self.notes.append(f"dropped {dropped} {why}")
        self.rows = kept

    def dedupe(self, key: Callable[[Row], str], what: str) -> None:
        """Keep one row per ``key`` (the test-split copy if any, else the first)."""
        chosen: dict[str, Row] = {}
        for row in self.rows:
            k = key(row)
            if k not in chosen or (row.split == "test" and chosen[k].split != "test"):
                chosen[k] = row
        kept = {id(row) for row in chosen.values()}
        if dropped := len(self.rows) - len(kept):
            self.notes.append(f"dropped {dropped} rows with a duplicate {what}")
        self.rows = [row for row in self.rows if id(row) in kept]

    def clean(self) -> None:
        """Duplicate ids, then duplicate prompts."""
        self.dedupe(lambda row: row.id, "id")
        self.dedupe(lambda row: row.prompt, "prompt")

    def build(self) -> OutcomeMatrix:
        rows = self.rows
        return OutcomeMatrix(
            name=self.name,
            ids=[row.id for row in rows],
            prompts=[row.prompt for row in rows],
            models=list(self.models),
            quality=_array([row.quality for row in rows], len(self.models)),
            cost=_array([row.cost for row in rows], len(self.models)),
            categories=[row.category for row in rows],
            responses=_responses(rows),
            given_split=_splits(rows),
            notes=list(self.notes),
        )


def _array(values: Sequence[Sequence[float]], width: int) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(len(values), width)


def _responses(rows: Sequence[Row]) -> list[list[str | None]] | None:
    if not rows or all(row.responses is None for row in rows):
        return None
    width = len(rows[0].quality)
    return [row.responses if row.responses is not None else [None] * width for row in rows]


def _splits(rows: Sequence[Row]) -> list[str] | None:
    if not rows or all(row.split is None for row in rows):
        return None
    return [row.split or "train" for row in rows]
