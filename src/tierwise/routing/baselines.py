"""Baseline routers every learned router must beat: always cheapest, always strongest, and
random (a share ``p`` of tasks to the strongest candidate, the rest to the cheapest).

The random router is pure: its draw is a hash of the seed and the prompt, so the same task
goes the same way on every run, and over many tasks the share sent strong approaches ``p``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from tierwise.catalog import ModelSpec
from tierwise.messages import Request
from tierwise.routing.base import CandidateScore, Decision, RouteContext
from tierwise.routing.choose import check_params, float_param, int_param, priced, score
from tierwise.routing.registry import RouterEnv

_SCALE = float(2**64)


def _ranked(
    request: Request, candidates: Sequence[ModelSpec]
) -> tuple[ModelSpec, list[CandidateScore]]:
    """The cheapest candidate, and every candidate's cost (no quality predicted)."""
    ordered = priced(request, candidates)
    return ordered[0][0], [score(spec, cost, None) for spec, cost in ordered]


def _strongest(context: RouteContext, candidates: Sequence[ModelSpec]) -> ModelSpec:
    strongest = context.catalog.strongest(candidates)
    assert strongest is not None  # priced() refuses an empty candidate list first
    return strongest


class CheapestRouter:
    """Always the cheapest candidate for the request."""

    name = "cheapest"

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        chosen, scores = _ranked(request, candidates)
        reason = f"baseline: always the cheapest candidate -> {chosen.id}"
        return Decision(router=self.name, chosen=chosen.id, scores=scores, reason=reason)


class StrongestRouter:
    """Always the strongest candidate (highest tier, then highest output price)."""

    name = "strongest"

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        _, scores = _ranked(request, candidates)
        chosen = _strongest(context, candidates)
        reason = f"baseline: always the strongest candidate -> {chosen.id}"
        return Decision(router=self.name, chosen=chosen.id, scores=scores, reason=reason)


class RandomRouter:
    """A share ``p`` of tasks to the strongest candidate, the rest to the cheapest."""

    name = "random"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        self.p = p
        self.seed = seed

    def draw(self, request: Request) -> float:
        """A uniform number in [0, 1) fixed by the seed and the prompt."""
        text = f"{self.seed}\x00{request.prompt_text()}".encode()
        return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") / _SCALE

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        cheapest, scores = _ranked(request, candidates)
        draw = self.draw(request)
        strong = draw < self.p
        chosen = _strongest(context, candidates) if strong else cheapest
        side = "<" if strong else ">="
        which = "strongest" if strong else "cheapest"
        reason = (
            f"baseline: draw {draw:.3f} {side} p={self.p:g} -> the {which} candidate {chosen.id}"
        )
        return Decision(
            router=self.name,
            chosen=chosen.id,
            scores=scores,
            threshold=self.p,
            reason=reason,
            signals={"draw": round(draw, 6)},
        )


def build_random(params: Mapping[str, str], env: RouterEnv) -> RandomRouter:
    """``route:random?p=0.2&seed=1``: share ``p`` (default 0.5) to the strongest."""
    check_params("random", params, ("p", "seed"))
    p = float_param("random", params, "p", default=0.5, low=0.0, high=1.0)
    return RandomRouter(p=p, seed=int_param("random", params, "seed", default=0))


def build_cheapest(params: Mapping[str, str], env: RouterEnv) -> CheapestRouter:
    check_params("cheapest", params, ())
    return CheapestRouter()


def build_strongest(params: Mapping[str, str], env: RouterEnv) -> StrongestRouter:
    check_params("strongest", params, ())
    return StrongestRouter()
