"""The datasets tierwise knows, each pinned by source commit and sha256."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tierwise.errors import DatasetError


class RecordedOutcome(BaseModel):
    """One prompt answered by one model, as recorded: the replay provider's unit."""

    model_config = ConfigDict(frozen=True)

    row_id: str
    prompt: str
    model: str
    """Catalog id of the model that answered."""
    response_text: str | None = None
    correct: bool | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Decimal | None = None


Loader = Callable[["DatasetSource", Path], Iterator[RecordedOutcome]]


class DatasetSource(BaseModel):
    """Where a dataset comes from and how its columns map to catalog models."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    url: str
    sha256: str
    local_path: str
    """The file's path inside a local copy of the data folder (``--data-dir``)."""
    models: dict[str, str]
    """Dataset model name -> catalog id."""
    loader: Loader

    def load(self, path: Path) -> list[RecordedOutcome]:
        try:
            return list(self.loader(self, path))
        except (KeyError, ValueError, csv.Error) as exc:
            raise DatasetError(
                f"dataset {self.name} at {path} is not in the expected format: {exc}"
            ) from None


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"true", "1", "1.0"}


def _load_routellm_gsm8k(source: DatasetSource, path: Path) -> Iterator[RecordedOutcome]:
    with path.open(newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            for column, model_id in source.models.items():
                yield RecordedOutcome(
                    row_id=f"gsm8k-{index}",
                    prompt=row["prompt"],
                    model=model_id,
                    response_text=row[f"{column}_response"],
                    correct=_truthy(row[column]),
                )


_ROUTELLM_COMMIT = "0b64fdafe049e596a3f5657c219329f24af24198"

ROUTELLM_GSM8K = DatasetSource(
    name="routellm-gsm8k",
    description="GSM8K test set (1,319 prompts) answered by GPT-4 Turbo and Mixtral 8x7B, "
    "with correctness and full response text (lm-sys/RouteLLM, Apache-2.0)",
    url="https://raw.githubusercontent.com/lm-sys/RouteLLM/"
    f"{_ROUTELLM_COMMIT}/routellm/evals/gsm8k/gsm8k_responses.csv",
    sha256="1f38ed03db354a020f71e92022383dc3cf37bbf2694dea4daaeea7b6c43fe57b",
    local_path="routellm_eval/gsm8k/gsm8k_responses.csv",
    models={
        "gpt-4-1106-preview": "openai:gpt-4-1106-preview",
        "mistralai/Mixtral-8x7B-Instruct-v0.1": "together:mistralai/Mixtral-8x7B-Instruct-v0.1",
    },
    loader=_load_routellm_gsm8k,
)

DATASETS: dict[str, DatasetSource] = {ROUTELLM_GSM8K.name: ROUTELLM_GSM8K}


def get_dataset(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]
