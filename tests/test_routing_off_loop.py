"""The learned router's embedding is computed off the event loop: while a slow embedder
works, other coroutines run; ``select`` then finds the embedding in memory."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from tests.test_learned_router import POEM_PROMPT, STRONG, WEAK, synthetic
from tierwise.catalog import Catalog, ModelSpec
from tierwise.ledger.records import DecisionRecord, LedgerRecord
from tierwise.messages import Request
from tierwise.providers.base import Provider
from tierwise.routing.embeddings import CachedEmbedder, HashingEmbedder, Progress, Vectors
from tierwise.routing.learned import LearnedRouter, QualityPredictor, Rule, make_predictor
from tierwise.strategies.base import TaskContext
from tierwise.strategies.route import RoutingStrategy

WAIT_S = 10.0
"""Only a guard against hanging: a blocked loop shows as ``released == [False]``."""


class BlockingEmbedder(HashingEmbedder):
    """The hashing embedder that, once armed, holds each call until the test releases it."""

    def __init__(self) -> None:
        super().__init__(dim=64, n_features=2**12)
        self.armed = False
        self.started = threading.Event()
        self.release = threading.Event()
        self.released: list[bool] = []
        """One entry per held call: whether the release came while it waited."""

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors:
        if self.armed:
            self.started.set()
            self.released.append(self.release.wait(WAIT_S))
        return super().embed(texts, progress)


def _router(embedder: BlockingEmbedder) -> LearnedRouter:
    matrix = synthetic(200)
    train, validation, _ = matrix.splits(0)
    estimator = make_predictor(matrix.models, estimator="logreg", embedder="hashing").estimator
    predictor = QualityPredictor(
        matrix.models, estimator, CachedEmbedder(embedder, None), "platt", refit=False
    )
    predictor.fit(train, validation)
    embedder.armed = True
    return LearnedRouter(predictor, Rule(kind="target", threshold=0.7))


def _task(catalog: Catalog, records: list[LedgerRecord]) -> TaskContext:
    async def record(item: LedgerRecord) -> None:
        records.append(item)

    def no_provider(spec: ModelSpec) -> Provider:
        raise AssertionError(f"routing must not call {spec.id}")

    return TaskContext("task-1", catalog=catalog, provider_for=no_provider, record=record)


async def test_the_embedding_runs_off_the_event_loop(catalog: Catalog) -> None:
    embedder = BlockingEmbedder()
    strategy = RoutingStrategy(_router(embedder), [catalog.get(WEAK), catalog.get(STRONG)])
    records: list[LedgerRecord] = []
    request = Request.from_prompt(POEM_PROMPT)
    choosing = asyncio.create_task(strategy.choose(request, _task(catalog, records)))
    await asyncio.to_thread(embedder.started.wait, WAIT_S)
    embedder.release.set()  # this coroutine ran while the embedder worked
    chosen = await choosing
    assert embedder.released == [True]
    assert chosen.id == WEAK  # poems: the cheap model clears the target
    (decision,) = records
    assert isinstance(decision, DecisionRecord) and decision.chosen_model == WEAK


async def test_a_prompt_in_memory_is_routed_without_embedding_again(catalog: Catalog) -> None:
    embedder = BlockingEmbedder()
    router = _router(embedder)
    strategy = RoutingStrategy(router, [catalog.get(WEAK), catalog.get(STRONG)])
    request = Request.from_prompt(POEM_PROMPT)
    embedder.release.set()
    await strategy.choose(request, _task(catalog, []))
    assert router.ready(request) and len(embedder.released) == 1
    await strategy.choose(request, _task(catalog, []))
    assert len(embedder.released) == 1  # the second decision read the vector from memory
