"""``tierwise demo``: routing at work on real recorded outcomes, with no API key.

RouteLLM's GSM8K recordings (grade-school maths questions, each answered by GPT-4 Turbo and
by Mixtral 8x7B, with the real answers and whether they were right) are replayed through the
engine. A learned router is first calibrated on the questions the demo will *not* ask; then
every demo question runs under each policy — both single models, the capability rules, a
random router and the learned router — and the oracle (hindsight, not a policy) is computed
from the recording. Every call lands in the ledger with its exact cost at catalog prices
(token counts estimated from the recorded text), the recorded correctness lands as each
task's outcome, and the spend report reads it all back.
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
from tierwise.evaluation.loaders import load_matrix
from tierwise.evaluation.matrix import OutcomeMatrix
from tierwise.ledger.records import OutcomeRecord
from tierwise.messages import Request
from tierwise.providers.replay import ReplayProvider

DATASET = "routellm-gsm8k"
ROUTER_NAME = "demo-gsm8k"
TARGET_QUALITY = 0.95

Tick = Callable[[], None]


class PolicyOutcome(BaseModel):
    """How one policy did over the demo's prompts."""

    policy: str
    label: str
    tasks: int = 0
    correct: int = 0
    strong_calls: int = 0
    cost_usd: Decimal | None = Decimal(0)

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks if self.tasks else 0.0

    @property
    def strong_share(self) -> float:
        return self.strong_calls / self.tasks if self.tasks else 0.0

    def add(self, result: Result, correct: bool | None, strong_model: str) -> None:
        self.tasks += 1
        self.correct += int(bool(correct))
        self.strong_calls += int(result.response.model == strong_model)
        if self.cost_usd is not None and result.cost_usd is not None:
            self.cost_usd += result.cost_usd
        else:
            self.cost_usd = None


class DemoRun(BaseModel):
    dataset: str
    started_at: datetime
    prompts: int
    calibration_prompts: int
    embedder: str
    outcomes: list[PolicyOutcome]
    oracle: PolicyOutcome
    strongest_model: str


def sample_prompts(outcomes: Sequence[RecordedOutcome], limit: int, seed: int = 0) -> list[str]:
    """``limit`` distinct prompts, the same ones every run (seeded)."""
    prompts = sorted({o.prompt for o in outcomes})
    rng = random.Random(seed)
    return prompts if limit >= len(prompts) else rng.sample(prompts, limit)


def _policies(weak: str, strong: str) -> list[tuple[str, str]]:
    pair = f"candidates={weak},{strong}"
    return [
        (f"fixed:{weak}", "cheap model only"),
        (f"fixed:{strong}", "strong model only"),
        (f"route:rules?{pair}", "capability rules"),
        (f"route:random?p=0.5&{pair}", "random, half to strong"),
        (f"route:learned?artifact={ROUTER_NAME}&{pair}", "learned router (calibrated)"),
    ]


def _calibrate(
    matrix: OutcomeMatrix, asked: set[str], artifacts: Path, cache: Path, embedder: str
) -> tuple[int, str]:
    """Fit the learned router on the prompts the demo will not ask: (how many, embedder).

    MiniLM sentence embeddings when the ``embed`` extra is installed, else hashed n-grams."""
    from tierwise.routing.calibrate import Objective, calibrate  # noqa: PLC0415

    rest = [i for i, prompt in enumerate(matrix.prompts) if prompt not in asked]
    report = calibrate(
        matrix.subset(rest),
        Objective(kind="target-quality", value=TARGET_QUALITY),
        name=ROUTER_NAME,
        artifacts_dir=artifacts,
        cache_dir=cache,
        embedder=embedder,
        resamples=200,
    )
    return len(rest), report.meta.embedder


def _oracle(
    outcomes: Sequence[RecordedOutcome],
    prompts: Sequence[str],
    models: tuple[str, str],
    costs: dict[tuple[str, str], Decimal | None],
) -> PolicyOutcome:
    """Hindsight: the cheap model unless only the strong one was right."""
    weak, strong = models
    right = {(o.model, o.prompt): bool(o.correct) for o in outcomes}
    oracle = PolicyOutcome(policy="oracle", label="oracle (hindsight, not a policy)")
    for prompt in prompts:
        pick = strong if right[(strong, prompt)] and not right[(weak, prompt)] else weak
        cost = costs.get((pick, prompt))
        oracle.tasks += 1
        oracle.correct += int(right[(pick, prompt)])
        oracle.strong_calls += int(pick == strong)
        oracle.cost_usd = (
            None if cost is None or oracle.cost_usd is None else oracle.cost_usd + cost
        )
    return oracle


async def _run_one(engine: Engine, prompt: str, tally: PolicyOutcome, strong: str) -> Result:
    request = Request.from_prompt(prompt, max_tokens=1024)
    result = await engine.complete(request, tally.policy, source="demo")
    extra = result.response.model_extra or {}
    correct = extra.get("recorded_correct")
    await engine.record(
        OutcomeRecord(
            task_id=result.task_id,
            outcome="success" if correct else "failure",
            correct=correct,
            source="dataset",
            detail=f"recorded correctness in {DATASET}",
        )
    )
    tally.add(result, correct, strong)
    return result


async def run_demo(
    settings: Settings,
    *,
    data_dir: Path | None,
    limit: int,
    embedder: str = "auto",
    on_download: Progress | None = None,
    on_task: Tick | None = None,
) -> DemoRun:
    """Calibrate on the rest of the dataset, then replay ``limit`` prompts under each policy."""
    source = get_dataset(DATASET)
    path = dataset_file(
        source, data_dir=data_dir, cache_dir=settings.cache_dir, progress=on_download
    )
    outcomes = source.load(path)
    weak = source.models["mistralai/Mixtral-8x7B-Instruct-v0.1"]
    strong = source.models["gpt-4-1106-preview"]
    prompts = sample_prompts(outcomes, limit)
    matrix = load_matrix(DATASET, data_dir=data_dir, cache_dir=settings.cache_dir)
    artifacts = settings.cache_dir / "demo" / "routers"
    fitted_on, used = _calibrate(matrix, set(prompts), artifacts, settings.cache_dir, embedder)
    routing = settings.routing.model_copy(update={"artifacts_dir": artifacts})
    demo_settings = settings.model_copy(update={"routing": routing})
    replay = ReplayProvider("replay", outcomes)
    providers = {model.partition(":")[0]: replay for model in (weak, strong)}
    tallies = [PolicyOutcome(policy=p, label=label) for p, label in _policies(weak, strong)]
    started = datetime.now(UTC)
    costs: dict[tuple[str, str], Decimal | None] = {}
    async with Engine(demo_settings, providers=providers) as engine:
        for prompt in prompts:
            for tally in tallies:
                result = await _run_one(engine, prompt, tally, strong)
                costs[(result.response.model, prompt)] = result.cost_usd
            if on_task:
                on_task()
    return DemoRun(
        dataset=source.name,
        started_at=started,
        prompts=len(prompts),
        calibration_prompts=fitted_on,
        embedder=used,
        outcomes=tallies,
        oracle=_oracle(outcomes, prompts, (weak, strong), costs),
        strongest_model=strong,
    )
