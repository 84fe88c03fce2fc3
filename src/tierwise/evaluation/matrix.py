"""Recorded outcomes as one matrix: prompts by models, quality and dollar cost per cell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tierwise.errors import DatasetError

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class OutcomeMatrix:
    """``quality[i, j]`` and ``cost[i, j]`` (USD) of model ``j`` on prompt ``i``.

    ``models`` are catalog ids where the catalog knows the model, else the dataset's names.
    ``given_split`` is the dataset's own train/test split when it has one.
    """

    name: str
    ids: list[str]
    prompts: list[str]
    models: list[str]
    quality: FloatArray
    cost: FloatArray
    categories: list[str]
    responses: list[list[str | None]] | None = None
    given_split: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    """How the matrix was built (e.g. "costs estimated from token counts at catalog prices")."""

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        if self.quality.shape != (n, m) or self.cost.shape != (n, m):
            raise DatasetError(f"{self.name}: quality/cost matrices are not {n} x {m}")
        if n == 0:
            raise DatasetError(f"{self.name}: no prompts")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: Sequence[int] | IndexArray) -> OutcomeMatrix:
        index = np.asarray(rows, dtype=np.int64)
        if index.size == 0:
            raise DatasetError(f"{self.name}: empty split")
        pick = [int(i) for i in index]
        return OutcomeMatrix(
            name=self.name,
            ids=[self.ids[i] for i in pick],
            prompts=[self.prompts[i] for i in pick],
            models=self.models,
            quality=self.quality[index],
            cost=self.cost[index],
            categories=[self.categories[i] for i in pick],
            responses=None if self.responses is None else [self.responses[i] for i in pick],
            given_split=None if self.given_split is None else [self.given_split[i] for i in pick],
            notes=self.notes,
        )

    @staticmethod
    def concat(parts: Sequence[OutcomeMatrix]) -> OutcomeMatrix:
        """The rows of ``parts`` (one dataset's splits, same models) as one matrix."""
        if not parts:
            raise DatasetError("nothing to concatenate")
        first = parts[0]
        if any(p.models != first.models for p in parts):
            raise DatasetError(f"{first.name}: cannot join splits over different models")
        responses = [p.responses for p in parts]
        splits = [p.given_split for p in parts]
        with_responses = all(r is not None for r in responses)
        with_splits = all(g is not None for g in splits)
        return OutcomeMatrix(
            name=first.name,
            ids=[i for p in parts for i in p.ids],
            prompts=[t for p in parts for t in p.prompts],
            models=first.models,
            quality=np.vstack([p.quality for p in parts]),
            cost=np.vstack([p.cost for p in parts]),
            categories=[c for p in parts for c in p.categories],
            responses=[r for rs in responses for r in rs or []] if with_responses else None,
            given_split=[g for gs in splits for g in gs or []] if with_splits else None,
            notes=first.notes,
        )

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise DatasetError(f"{self.name}: no model {model!r} (has {self.models})") from None

    def strongest(self) -> int:
        """The model with the highest mean quality (ties: the dearer one)."""
        order = np.lexsort((self.cost.mean(axis=0), self.quality.mean(axis=0)))
        return int(order[-1])

    def splits(
        self, seed: int, fractions: tuple[float, float] = (0.6, 0.2)
    ) -> tuple[OutcomeMatrix, OutcomeMatrix, OutcomeMatrix]:
        """Train / validation / test. With a given split its test part is the test set and the
        rest is divided into train and validation; otherwise a seeded random split."""
        rng = np.random.default_rng(seed)
        if self.given_split is not None:
            test = np.flatnonzero(np.array(self.given_split) == "test")
            rest = rng.permutation(np.flatnonzero(np.array(self.given_split) != "test"))
            cut = int(len(rest) * fractions[0] / (fractions[0] + fractions[1]))
            return self.subset(rest[:cut]), self.subset(rest[cut:]), self.subset(test)
        order = rng.permutation(len(self))
        a = int(len(order) * fractions[0])
        b = a + int(len(order) * fractions[1])
        return self.subset(order[:a]), self.subset(order[a:b]), self.subset(order[b:])
