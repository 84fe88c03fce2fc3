"""Choosing among candidates by capability: requirements, the cheapest model that meets one,
and router parameter parsing shared by the routers of this package."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tierwise.catalog import ModelSpec
from tierwise.catalog.spec import SKILLS
from tierwise.cost import MILLION
from tierwise.errors import PolicyError
from tierwise.messages import Request, TokenCounts
from tierwise.routing.base import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    CandidateScore,
    RouteContext,
    expected_tokens,
)
from tierwise.routing.signals import Signals


class Requirement(BaseModel):
    """A capability profile a model must meet: a minimum tier and minimum skill levels,
    plus hard needs (tool calling, vision, a context window that fits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: int = Field(default=1, ge=1, le=10)
    skills: dict[str, int] = Field(default_factory=dict)
    tools: bool = False
    vision: bool = False
    context_tokens: int = Field(default=0, ge=0)

    @field_validator("skills")
    @classmethod
    def _known_skills(cls, skills: dict[str, int]) -> dict[str, int]:
        for name, level in skills.items():
            if name not in SKILLS:
                raise ValueError(f"unknown skill {name!r} (known: {', '.join(SKILLS)})")
            if not 1 <= level <= 5:
                raise ValueError(f"skill {name} must be 1 to 5, got {level}")
        return skills

    def merged(self, other: Requirement) -> Requirement:
        """The stricter of both, need by need."""
        skills = dict(self.skills)
        for name, level in other.skills.items():
            skills[name] = max(level, skills.get(name, 0))
        return Requirement(
            tier=max(self.tier, other.tier),
            skills=skills,
            tools=self.tools or other.tools,
            vision=self.vision or other.vision,
            context_tokens=max(self.context_tokens, other.context_tokens),
        )

    def gaps(self, spec: ModelSpec) -> list[str]:
        """What ``spec`` lacks to meet this requirement (empty: it meets it)."""
        profile, caps = spec.profile, spec.capabilities
        gaps = [f"tier {profile.tier}"] if profile.tier < self.tier else []
        gaps += [f"{n} {profile.skill(n)}" for n, v in self.skills.items() if profile.skill(n) < v]
        gaps += ["no tool calling"] if self.tools and not caps.tools else []
        gaps += ["no vision"] if self.vision and not caps.vision else []
        window = spec.context_window
        too_small = window is not None and window < self.context_tokens
        return gaps + ([f"context window {window:,}"] if too_small else [])

    def describe(self) -> str:
        """E.g. ``tier>=4, long_context>=5, tool calling``."""
        parts = [f"tier>={self.tier}"]
        parts += [f"{name}>={level}" for name, level in sorted(self.skills.items())]
        parts += ["tool calling"] if self.tools else []
        parts += ["vision"] if self.vision else []
        parts += [f"{self.context_tokens:,}-token context"] if self.context_tokens else []
        return ", ".join(parts)


def hard_needs(signals: Signals, request: Request) -> Requirement:
    """What any model must have for this request at all: tools, vision, a big enough window."""
    output = request.max_tokens or 0
    return Requirement(
        tools=signals.tools > 0,
        vision=signals.images > 0,
        context_tokens=signals.context_tokens + output,
    )


@dataclass(frozen=True)
class Pick:
    """A chosen candidate, every candidate's score, and how the choice was made."""

    spec: ModelSpec
    scores: list[CandidateScore]
    how: str


def _cost(tokens: TokenCounts, spec: ModelSpec) -> Decimal | None:
    """:func:`tierwise.cost.price_tokens` for predicted tokens (input and output only),
    without building a breakdown: this runs for every candidate of every decision."""
    inp, out = spec.prices.input, spec.prices.output
    if (inp is None and tokens.input_tokens) or (out is None and tokens.output_tokens):
        return None
    return (tokens.input_tokens * (inp or 0) + tokens.output_tokens * (out or 0)) / MILLION


def tokens_with_input(request: Request, input_tokens: int) -> TokenCounts:
    """:func:`~tierwise.routing.base.expected_tokens` with the input already counted (the
    signals count every message, tool results included)."""
    cap = request.max_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
    output = min(cap, DEFAULT_EXPECTED_OUTPUT_TOKENS)
    return TokenCounts(input_tokens=input_tokens, output_tokens=output)


def priced(
    request: Request, candidates: Sequence[ModelSpec], tokens: TokenCounts | None = None
) -> list[tuple[ModelSpec, Decimal | None]]:
    """Candidates with their predicted cost, cheapest first, unpriced last (the order of
    :func:`tierwise.routing.base.by_cost`, with the request's tokens counted once)."""
    if not candidates:
        raise PolicyError("no candidate models to route between")
    tokens = tokens or expected_tokens(request)
    costed = [(spec, _cost(tokens, spec)) for spec in candidates]
    return sorted(costed, key=lambda sc: (sc[1] is None, sc[1] or Decimal(0), sc[0].profile.tier))


def score(spec: ModelSpec, cost: Decimal | None, quality: float | None) -> CandidateScore:
    latency = spec.typical_latency_ms
    return CandidateScore(
        model=spec.id,
        predicted_quality=quality,
        predicted_cost=cost,
        predicted_latency_ms=None if latency is None else float(latency),
    )


def _sticky(context: RouteContext, meeting: list[ModelSpec]) -> ModelSpec | None:
    if context.sticky_model is None:
        return None
    sticky = context.catalog.find(context.sticky_model)
    return next((spec for spec in meeting if sticky is not None and spec.id == sticky.id), None)


def _fastest(meeting: list[ModelSpec]) -> ModelSpec:
    return min(meeting, key=lambda s: s.typical_latency_ms or 10**9)  # stable: cheapest on ties


def pick(
    request: Request,
    candidates: Sequence[ModelSpec],
    context: RouteContext,
    requirement: Requirement,
    tokens: TokenCounts | None = None,
) -> Pick:
    """The cheapest candidate that meets ``requirement``; the conversation's own model when
    it meets it too (its prompt cache is warm); the strongest candidate when none does."""
    ordered = priced(request, candidates, tokens)
    meets = {spec.id: not requirement.gaps(spec) for spec, _ in ordered}
    meeting = [spec for spec, _ in ordered if meets[spec.id]]
    scores = [score(spec, cost, float(meets[spec.id])) for spec, cost in ordered]
    if sticky := _sticky(context, meeting):
        return Pick(sticky, scores, "the conversation's model (prompt cache warm), which meets it")
    if meeting and context.prefer_speed:
        return Pick(_fastest(meeting), scores, "the fastest candidate that meets it")
    if meeting:
        return Pick(meeting[0], scores, "the cheapest candidate that meets it")
    strongest = context.catalog.strongest([spec for spec, _ in ordered])
    assert strongest is not None  # priced() refused an empty list
    return Pick(strongest, scores, "the strongest candidate, as none meets it")


# --- router parameters ----------------------------------------------------------------------


def check_params(router: str, params: Mapping[str, str], known: Sequence[str]) -> None:
    """PolicyError for a parameter ``router`` does not take."""
    for key in params:
        if key not in known:
            takes = ", ".join(known) if known else "no parameters"
            raise PolicyError(f"router {router!r} does not take {key!r} (takes: {takes})")


def float_param(
    router: str, params: Mapping[str, str], key: str, *, default: float, low: float, high: float
) -> float:
    """``params[key]`` as a number in ``[low, high]``; PolicyError otherwise."""
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise PolicyError(
            f"router {router!r}: {key} must be a number from {low} to {high}, got {raw!r}"
        )
    return value


def int_param(router: str, params: Mapping[str, str], key: str, *, default: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise PolicyError(f"router {router!r}: {key} must be an integer, got {raw!r}") from None
