"""What a request can cost at most before it runs, and what it did cost after.

The worst case is a sum over the policy's possible calls (*slots*), each priced at the
dearest model that may take it: one slot for a pinned model or a router's pick among its
candidates (plus its classifier's call; a policy's ``fallback=`` models and the config's
``[failover.fallbacks]`` chains join every slot); for a cascade one per tier and try, each
with its gates' calls (a judge, an agreement gate's extra samples, a confidence question);
for an advisor ``max_uses`` consults, each an advisor call and one more executor turn (an
advisor tool in the request counts the same under any policy); for a plan every plan and
re-plan and, per step, an executor and the judge; and for a strategy that says nothing, one
slot open to the whole catalog. Each call is priced at ``input estimate x
margin`` input tokens (at the dearest of the input and cache-write prices) plus
``max_tokens`` output tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from tierwise.advisor.tool import MAX_USES
from tierwise.budgets.limits import Amount, to_nanousd
from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import InvalidRequestError
from tierwise.gateway.counting import estimate_request_tokens
from tierwise.ledger.records import CallRecord
from tierwise.messages import Request

MILLION = Decimal(1_000_000)


def _specs(value: object) -> list[ModelSpec] | None:
    if isinstance(value, ModelSpec):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(s, ModelSpec) for s in value):
        return list(value)
    return None


def call_slots(
    strategy: object,
    catalog: Catalog,
    chains: Mapping[str, Sequence[str]] | None = None,
    request: Request | None = None,
) -> list[list[ModelSpec]]:
    """The calls ``strategy`` may make, each as the models that may take it; ``chains``: the
    config's failover chains (model id -> the models tried next), which any call may follow;
    ``request``: its advisor tool's consults count too (under any policy)."""
    slots = _policy_slots(strategy, catalog)
    if request is not None:
        slots += _request_advisor_slots(request, catalog)
    if not chains:
        return slots
    return [_with_chains(slot, chains, catalog) for slot in slots]


def _with_chains(
    slot: list[ModelSpec], chains: Mapping[str, Sequence[str]], catalog: Catalog
) -> list[ModelSpec]:
    found = [catalog.find(name) for spec in slot for name in chains.get(spec.id, ())]
    extra = {spec.id: spec for spec in found if spec is not None}
    return [*slot, *(spec for model, spec in extra.items() if model not in {s.id for s in slot})]


def _policy_slots(strategy: object, catalog: Catalog) -> list[list[ModelSpec]]:
    inner, fallbacks = getattr(strategy, "inner", None), getattr(strategy, "fallbacks", None)
    if inner is not None and isinstance(fallbacks, list):  # a failed call may move on to these
        extra = [spec for name in fallbacks if (spec := catalog.find(str(name))) is not None]
        return [[*slot, *extra] for slot in _policy_slots(inner, catalog)]
    wrapped = getattr(strategy, "strategy", None)
    if wrapped is not None:  # a policy's own task budget around the real strategy
        return _policy_slots(wrapped, catalog)
    return _own_slots(strategy, catalog)


def _own_slots(strategy: object, catalog: Catalog) -> list[list[ModelSpec]]:
    tiers = _specs(getattr(strategy, "tiers", None))
    if tiers is not None:
        return _cascade_slots(strategy, tiers)
    executor = _specs(getattr(strategy, "executor", None))
    advisor = _specs(getattr(strategy, "advisor", None))
    if executor is not None and advisor is not None:
        return _consult_slots(executor, advisor, _max_uses(getattr(strategy, "tool", None)))
    planner = _specs(getattr(getattr(strategy, "planner", None), "spec", None))
    if planner is not None:
        return _plan_slots(strategy, planner)
    candidates = _specs(getattr(strategy, "candidates", None))
    if candidates is not None:
        return [*_classifier_slots(strategy), candidates]
    pinned = _specs(getattr(strategy, "spec", None))
    return [pinned] if pinned is not None else [list(catalog)]


def _cascade_slots(strategy: object, tiers: list[ModelSpec]) -> list[list[ModelSpec]]:
    """Every tier, each tried 1 + retries times, each try with its gates' own calls."""
    options = getattr(strategy, "options", None)
    retries = getattr(options, "retries", 0)
    tries = 1 + (retries if isinstance(retries, int) and retries > 0 else 0)
    gates = getattr(strategy, "gates", None) or []
    start = _classifier_slots(getattr(strategy, "starter", None))
    per_try = [[[tier], *_gate_slots(gates, tier)] for tier in tiers]
    return start + [slot for slots in per_try for _ in range(tries) for slot in slots]


def _gate_slots(gates: Sequence[object], tier: ModelSpec) -> list[list[ModelSpec]]:
    """The calls checking one answer of ``tier`` may make: a judge asks its model, an
    agreement gate draws ``k - 1`` more samples, a confidence gate may ask the tier."""
    slots: list[list[ModelSpec]] = []
    for gate in gates:
        judge = _specs(getattr(gate, "model", None))
        samples = getattr(gate, "k", None)
        if judge is not None:
            slots.append(judge)
        elif isinstance(samples, int):
            slots += [[tier] for _ in range(max(samples - 1, 0))]
        elif isinstance(getattr(gate, "threshold", None), float):
            slots.append([tier])
    return slots


def _classifier_slots(strategy: object) -> list[list[ModelSpec]]:
    spec = _specs(getattr(getattr(strategy, "classifier", None), "spec", None))
    return [spec] if spec is not None else []


DEFAULT_CONSULTS = 3
"""Consults counted for an advisor tool that sets no ``max_uses`` (the ``[advisor]`` default)."""


def _max_uses(tool: object) -> int:
    uses = getattr(tool, "max_uses", None)
    if uses is None and isinstance(extra := getattr(tool, "model_extra", None), dict):
        uses = extra.get("max_uses")
    return uses if isinstance(uses, int) and uses >= 0 else DEFAULT_CONSULTS


def _consult_slots(
    executor: list[ModelSpec], advisor: list[ModelSpec], uses: int
) -> list[list[ModelSpec]]:
    """An executor that consults ``uses`` times: each consult one advisor call and one more
    executor turn."""
    return [executor] * (uses + 1) + [advisor] * uses


def _request_advisor_slots(request: Request, catalog: Catalog) -> list[list[ModelSpec]]:
    """The consults of an advisor tool the request itself carries (the advisor hook runs it
    under any policy): ``max_uses`` advisor calls and as many more executor turns."""
    slots: list[list[ModelSpec]] = []
    for tool in request.tools:
        if not (tool.type or "").startswith("advisor_"):
            continue
        model = (tool.model_extra or {}).get("model")
        found = catalog.find(str(model)) or catalog.find_upstream("anthropic", str(model))
        uses = _max_uses(tool)
        if uses > MAX_USES:  # the client's own number, a slot each: bounded before listing
            raise InvalidRequestError(
                f"an advisor tool allows at most {MAX_USES} uses", param="tools"
            )
        if found is not None:
            slots += [[found]] * uses
    return slots


def _plan_slots(strategy: object, planner: list[ModelSpec]) -> list[list[ModelSpec]]:
    """A plan and each re-plan, then every step on an executor with its judge."""
    options = getattr(strategy, "options", None)
    replans = getattr(options, "max_replans", 0)
    steps = getattr(options, "max_steps", 1)
    executors = _specs(getattr(strategy, "executors", None)) or []
    judge = _specs(getattr(strategy, "judge", None)) or planner
    plans = 1 + (replans if isinstance(replans, int) else 0)
    step_count = steps if isinstance(steps, int) else 1
    return [planner] * plans + [executors, judge] * step_count * plans


def _call_price(spec: ModelSpec, input_tokens: int, output_tokens: int) -> Decimal | None:
    prices = spec.prices
    if prices.input is None or prices.output is None:
        return None
    inputs = [p for p in (prices.input, prices.cache_write_5m, prices.cache_write_1h) if p]
    dearest = max(inputs, default=Decimal(0))
    return (input_tokens * dearest + output_tokens * prices.output) / MILLION


def _limit_name(request: Request) -> str:
    """The body field the client gave its token limit in."""
    return "max_completion_tokens" if "max_completion_tokens" in request.extra else "max_tokens"


@dataclass(frozen=True)
class OutputLimit:
    """The most ``max_tokens`` a policy's calls take, and which model(s) say so."""

    tokens: int
    models: str


def output_limit(slots: Sequence[Sequence[ModelSpec]], unknown: int) -> OutputLimit:
    """The largest ``max_output_tokens`` of the models of ``slots`` (``unknown`` for a model
    whose catalog entry gives none)."""
    tokens = max((s.max_output_tokens or unknown for slot in slots for s in slot), default=unknown)
    models = sorted({spec.id for slot in slots for spec in slot})
    return OutputLimit(
        tokens, models[0] if len(models) == 1 else f"the largest of {len(models)} models"
    )


def check_max_tokens(request: Request, limit: OutputLimit) -> None:
    """Refuse (400) a ``max_tokens`` over the output limit of every model the policy may call."""
    if request.max_tokens is not None and request.max_tokens > limit.tokens:
        name = _limit_name(request)
        raise InvalidRequestError(
            f"{name} is {request.max_tokens}, over the output limit of {limit.models} "
            f"({limit.tokens})",
            param=name,
        )


def worst_case(
    request: Request, slots: Sequence[Sequence[ModelSpec]], margin: float
) -> tuple[Amount, list[str]]:
    """What ``request`` can cost at most over ``slots``, and the models of unknown price.

    A ``max_tokens`` below 1 is refused (400): it would make the worst case smaller than
    the input alone, or negative, and let other requests past a budget."""
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidRequestError(
            f"{_limit_name(request)} must be at least 1, not {request.max_tokens}",
            param=_limit_name(request),
        )
    input_tokens = math.ceil(estimate_request_tokens(request) * margin)
    output_tokens = request.max_tokens or 0
    usd, unknown = Decimal(0), []
    for slot in slots:
        priced = {s.id: _call_price(s, input_tokens, output_tokens) for s in slot}
        unknown += [model for model, price in priced.items() if price is None]
        usd += max((p for p in priced.values() if p is not None), default=Decimal(0))
    tokens = (input_tokens + output_tokens) * len(slots)
    return Amount(to_nanousd(usd), tokens), sorted(set(unknown))


def spent(calls: Sequence[CallRecord], reserved: Amount) -> Amount:
    """What ``calls`` cost; a call of unknown cost counts as the whole reservation."""
    if not calls:
        return Amount()
    tokens = sum(
        c.input_tokens
        + c.output_tokens
        + c.cache_write_5m_tokens
        + c.cache_write_1h_tokens
        + c.cache_read_tokens
        for c in calls
    )
    costs = [c.cost_usd for c in calls]
    if any(cost is None for cost in costs):
        return Amount(reserved.nanousd, max(tokens, reserved.tokens))
    return Amount(to_nanousd(sum((c for c in costs if c is not None), Decimal(0))), tokens)
