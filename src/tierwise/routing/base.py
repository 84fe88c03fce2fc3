"""The router seam.

A router is pure: ``select(request, candidates, context) -> Decision``. It reads the request
and the catalog, never the network or the disk (artifacts are loaded before, when the router
is built). The :class:`Decision` says who was chosen, what every candidate was predicted to
score and cost, the threshold in force, and why — in words a user can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import price_tokens
from tierwise.ledger.records import DecisionRecord
from tierwise.messages import Request, TokenCounts
from tierwise.tokens import estimate_tokens

DEFAULT_EXPECTED_OUTPUT_TOKENS = 500


class CandidateScore(BaseModel):
    """One candidate as the router saw it (``None``: the router did not predict it)."""

    model: str
    predicted_quality: float | None = None
    predicted_cost: Decimal | None = None
    predicted_latency_ms: float | None = None


class Decision(BaseModel):
    router: str
    chosen: str
    """Catalog id of the chosen model."""
    scores: list[CandidateScore] = Field(default_factory=list)
    threshold: float | None = None
    reason: str
    signals: dict[str, Any] = Field(default_factory=dict)
    """The task signals the router read (and, for rules, which fired)."""

    def record(self, task_id: str) -> DecisionRecord:
        return DecisionRecord(
            task_id=task_id,
            router=self.router,
            chosen_model=self.chosen,
            candidates=[score.model_dump(mode="json") for score in self.scores],
            threshold=self.threshold,
            reason=self.reason,
        )


class RouteContext(BaseModel):
    """What a router may know besides the request."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    catalog: Catalog
    sticky_model: str | None = None
    """The model this conversation already runs on (its prompt cache is warm)."""
    prefer_speed: bool = False
    hints: dict[str, Any] = Field(default_factory=dict)
    """What the strategy learned before routing, e.g. a classifier model's answer under
    ``"classification"`` (routers stay pure: the strategy makes such calls)."""


class Router(Protocol):
    name: str

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision: ...


@runtime_checkable
class PreparedRouter(Protocol):
    """A router with slow work per request (the learned router's embedding) that it can do
    ahead of :meth:`Router.select` and keep; the strategy runs :meth:`prepare` in a thread
    so that the event loop never waits on it, and ``select`` stays pure and quick."""

    def ready(self, request: Request) -> bool:
        """``select`` would find the work done (cheap to ask, no I/O)."""
        ...

    def prepare(self, request: Request) -> None: ...


def expected_tokens(request: Request) -> TokenCounts:
    """A request's likely tokens: its text now, and a typical answer capped by max_tokens."""
    text = "".join(b.text for b in request.system) + "".join(m.text() for m in request.messages)
    cap = request.max_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
    return TokenCounts(
        input_tokens=estimate_tokens(text),
        output_tokens=min(cap, DEFAULT_EXPECTED_OUTPUT_TOKENS),
    )


def predicted_cost(request: Request, spec: ModelSpec) -> Decimal | None:
    """The estimated dollar cost of sending ``request`` to ``spec`` (``None``: unpriced)."""
    cost = price_tokens(expected_tokens(request), spec.prices)
    return None if cost is None else cost.total


def by_cost(request: Request, candidates: Sequence[ModelSpec]) -> list[ModelSpec]:
    """Candidates cheapest first; unpriced ones last (their cost is unknown, not zero)."""

    def key(spec: ModelSpec) -> tuple[int, Decimal, int]:
        cost = predicted_cost(request, spec)
        return (cost is None, cost or Decimal(0), spec.profile.tier)

    return sorted(candidates, key=key)
