"""What a request can cost at most before it runs, and what it did cost after.

The worst case is a sum over the policy's possible calls (*slots*), each priced at the
dearest model that may take it: one slot for a pinned model or a router's pick among its
candidates (a policy's ``fallback=`` models and the config's ``[failover.fallbacks]`` chains
join every slot), one per tier and try for a
cascade, the executor and the advisor for an advisor policy, and for a strategy that says
nothing, one slot open to the whole catalog. Each call is priced at ``input estimate x
margin`` input tokens (at the dearest of the input and cache-write prices) plus
``max_tokens`` output tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal

from tierwise.budgets.limits import Amount, to_nanousd
from tierwise.catalog import Catalog, ModelSpec
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
    strategy: object, catalog: Catalog, chains: Mapping[str, Sequence[str]] | None = None
) -> list[list[ModelSpec]]:
    """The calls ``strategy`` may make, each as the models that may take it; ``chains``: the
    config's failover chains (model id -> the models tried next), which any call may follow."""
    slots = _policy_slots(strategy, catalog)
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
    tiers = _specs(getattr(strategy, "tiers", None))
    if tiers is not None:  # a cascade: every tier, each tried 1 + retries times
        options = getattr(strategy, "options", None)
        retries = getattr(options, "retries", 0)
        tries = 1 + (retries if isinstance(retries, int) and retries > 0 else 0)
        return [[tier] for tier in tiers for _ in range(tries)]
    executor = _specs(getattr(strategy, "executor", None))
    advisor = _specs(getattr(strategy, "advisor", None))
    if executor is not None and advisor is not None:
        return [executor, advisor]
    candidates = _specs(getattr(strategy, "candidates", None))
    if candidates is not None:
        return [candidates]
    pinned = _specs(getattr(strategy, "spec", None))
    return [pinned] if pinned is not None else [list(catalog)]


def _call_price(spec: ModelSpec, input_tokens: int, output_tokens: int) -> Decimal | None:
    prices = spec.prices
    if prices.input is None or prices.output is None:
        return None
    inputs = [p for p in (prices.input, prices.cache_write_5m, prices.cache_write_1h) if p]
    dearest = max(inputs, default=Decimal(0))
    return (input_tokens * dearest + output_tokens * prices.output) / MILLION


def worst_case(
    request: Request, slots: Sequence[Sequence[ModelSpec]], margin: float
) -> tuple[Amount, list[str]]:
    """What ``request`` can cost at most over ``slots``, and the models of unknown price."""
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
