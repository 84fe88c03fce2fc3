"""``tierwise demo``: real recorded prompts through the engine, with no API key.

RouteLLM's GSM8K recordings (1,319 grade-school maths questions, each answered by GPT-4
Turbo and by Mixtral 8x7B, with the real answers and whether they were right) are replayed
through the engine under one policy per model. Every call lands in the ledger with its
exact cost at catalog prices (token counts estimated from the recorded text, since the
recording has none), the recorded correctness lands as the task's outcome, and the spend
report reads it all back.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from tierwise.config import Settings
from tierwise.datasets import RecordedOutcome, dataset_file, get_dataset
from tierwise.datasets.fetch import Progress
from tierwise.engine import Engine, Result
from tierwise.ledger.records import OutcomeRecord
from tierwise.messages import Request
from tierwise.providers.replay import ReplayProvider

DATASET = "routellm-gsm8k"

Tick = Callable[[], None]


class PolicyOutcome(BaseModel):
    """How one policy did over the demo's prompts."""

    policy: str
    tasks: int = 0
    correct: int = 0
    cost_usd: Decimal | None = Decimal(0)

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks if self.tasks else 0.0

    def add(self, result: Result, correct: bool | None) -> None:
        self.tasks += 1
        self.correct += int(bool(correct))
        if self.cost_usd is not None and result.cost_usd is not None:
            self.cost_usd += result.cost_usd
        else:
            self.cost_usd = None


class DemoRun(BaseModel):
    dataset: str
    started_at: datetime
    prompts: int
    outcomes: list[PolicyOutcome]
    strongest_model: str


def sample_prompts(outcomes: Sequence[RecordedOutcome], limit: int, seed: int = 0) -> list[str]:
    """``limit`` distinct prompts, the same ones every run (seeded)."""
    prompts = sorted({o.prompt for o in outcomes})
    rng = random.Random(seed)
    return prompts if limit >= len(prompts) else rng.sample(prompts, limit)


def demo_policies(models: Sequence[str]) -> list[str]:
    return [f"fixed:{model}" for model in models]


async def _run_one(engine: Engine, prompt: str, policy: str, tally: PolicyOutcome) -> None:
    result = await engine.complete(
        Request.from_prompt(prompt, max_tokens=1024), policy, source="demo"
    )
    correct = (
        result.response.model_extra.get("recorded_correct") if result.response.model_extra else None
    )
    await engine.record(
        OutcomeRecord(
            task_id=result.task_id,
            outcome="success" if correct else "failure",
            correct=correct,
            source="dataset",
            detail=f"recorded correctness in {DATASET}",
        )
    )
    tally.add(result, correct)


async def run_demo(
    settings: Settings,
    *,
    data_dir: Path | None,
    limit: int,
    on_download: Progress | None = None,
    on_task: Tick | None = None,
) -> DemoRun:
    """Replay ``limit`` recorded prompts under every model's fixed policy."""
    source = get_dataset(DATASET)
    path = dataset_file(
        source, data_dir=data_dir, cache_dir=settings.cache_dir, progress=on_download
    )
    outcomes = source.load(path)
    replay = ReplayProvider("replay", outcomes)
    models = sorted(source.models.values())
    providers = {model.partition(":")[0]: replay for model in models}
    started = datetime.now(UTC)
    prompts = sample_prompts(outcomes, limit)
    tallies = [PolicyOutcome(policy=p) for p in demo_policies(models)]
    async with Engine(settings, providers=providers) as engine:
        strongest = engine.catalog.strongest([engine.catalog.get(m) for m in models])
        for prompt in prompts:
            for tally in tallies:
                await _run_one(engine, prompt, tally.policy, tally)
            if on_task:
                on_task()
    return DemoRun(
        dataset=source.name,
        started_at=started,
        prompts=len(prompts),
        outcomes=tallies,
        strongest_model=strongest.id if strongest else models[-1],
    )
