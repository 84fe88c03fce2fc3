"""Policy names -> strategies.

A policy is ``kind[:argument][?key=value&...]``, e.g. ``fixed:anthropic:claude-haiku-4-5``
or ``route:learned?target=0.95``; a bare name is looked up in the config's ``[policies]``
table first. Each kind registers one factory here, which gets the policy and a
:class:`~tierwise.routing.registry.RouterEnv` (settings, catalog, router artifacts); later
rungs of the ladder (cascade, advisor, plan/execute) add theirs.

``route:<router>?candidates=a,b&<router params>`` routes among ``candidates`` (default:
``routing.candidates``, else every model whose provider has a key) with any router of
:data:`tierwise.routing.registry.ROUTERS`: ``route:rules``, ``route:random?p=0.2&seed=1``,
``route:classifier?model=openai:gpt-5-nano``, ``route:learned?artifact=gsm8k&target=0.95``.

``plan:<planner>?executors=a,b&replan_after=2`` plans with one model and runs each step on
the cheapest capable executor; ``decompose:<orchestrator>?executors=a,b`` splits a request
into sub-tasks run concurrently (see :mod:`tierwise.workflows.execute`).

Any policy takes ``fallback=a,b``: the models its calls fail over to (see
:mod:`tierwise.failover`), e.g. ``fixed:anthropic:claude-sonnet-4-6?fallback=openai:gpt-5``.

``cascade:a,b,c?gates=python,command:pytest -q&max_escalations=2`` tries the cheapest
capable tier, gates its answer and climbs a tier on failure; ``cascade`` alone uses the
config's ``[cascade]`` ladder (see :mod:`tierwise.strategies.cascade`).

Any policy takes ``budget_usd=0.05`` and/or ``budget_tokens=20000``: one budget over every
call of the task (see :mod:`tierwise.budget`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, Field

from tierwise.budget import BUDGET_PARAMS, TaskBudget
from tierwise.errors import PolicyError
from tierwise.routing.registry import RouterEnv
from tierwise.strategies.base import Strategy
from tierwise.strategies.budgeted import Budgeted
from tierwise.strategies.fallback import WithFallbacks
from tierwise.strategies.fixed import FixedStrategy


class PolicySpec(BaseModel):
    kind: str
    argument: str = ""
    params: dict[str, str] = Field(default_factory=dict)


Factory = Callable[[PolicySpec, RouterEnv], Strategy]


def parse_policy(text: str) -> PolicySpec:
    head, _, query = text.strip().partition("?")
    kind, _, argument = head.partition(":")
    if not kind:
        raise PolicyError(f"empty policy name in {text!r}")
    return PolicySpec(kind=kind, argument=argument, params=dict(parse_qsl(query)))


def _fixed(spec: PolicySpec, env: RouterEnv) -> Strategy:
    if not spec.argument:
        raise PolicyError("policy 'fixed' needs a model: fixed:<provider:model>")
    if spec.params:
        unknown = ", ".join(sorted(spec.params))
        raise PolicyError(
            f"policy 'fixed' has no parameter {unknown} (any policy takes fallback=, "
            "budget_usd=, budget_tokens=)"
        )
    return FixedStrategy(env.catalog.get(spec.argument))


def _route(spec: PolicySpec, env: RouterEnv) -> Strategy:
    from tierwise.strategies.route import build_route_strategy  # noqa: PLC0415

    return build_route_strategy(spec.argument, spec.params, env)


def _plan(spec: PolicySpec, env: RouterEnv) -> Strategy:
    from tierwise.workflows.execute import build_plan_strategy  # noqa: PLC0415

    return build_plan_strategy("plan", spec.argument, spec.params, env)


def _decompose(spec: PolicySpec, env: RouterEnv) -> Strategy:
    from tierwise.workflows.execute import build_plan_strategy  # noqa: PLC0415

    return build_plan_strategy("decompose", spec.argument, spec.params, env)


def _cascade(spec: PolicySpec, env: RouterEnv) -> Strategy:
    from tierwise.strategies.cascade import build_cascade_strategy  # noqa: PLC0415

    return build_cascade_strategy(spec.argument, spec.params, env)


def _advisor(spec: PolicySpec, env: RouterEnv) -> Strategy:
    from tierwise.strategies.advisor import build_advisor_strategy  # noqa: PLC0415

    return build_advisor_strategy(spec.argument, spec.params, env)


def policy_text(spec: PolicySpec) -> str:
    """``spec`` written back as ``kind[:argument][?key=value&...]``."""
    head = f"{spec.kind}:{spec.argument}" if spec.argument else spec.kind
    return f"{head}?{urlencode(spec.params)}" if spec.params else head


FACTORIES: dict[str, Factory] = {
    "fixed": _fixed,
    "route": _route,
    "cascade": _cascade,
    "plan": _plan,
    "decompose": _decompose,
    "advisor": _advisor,
}


def resolve_policy(
    name: str, env: RouterEnv, named: Mapping[str, str] | None = None, depth: int = 0
) -> Strategy:
    """The strategy for ``name``: a named policy (default: the settings' ``[policies]``)
    or ``kind:arg?params``."""
    table = env.settings.policies if named is None else named
    if name in table:
        if depth > 8:
            raise PolicyError(f"named policy {name!r} refers to itself")
        return resolve_policy(table[name], env, table, depth + 1)
    spec = parse_policy(name)
    budget = TaskBudget.from_params(spec.params)
    if budget is not None:  # the task's budget wraps whatever the rest of the policy builds
        rest = {k: v for k, v in spec.params.items() if k not in BUDGET_PARAMS}
        inner = policy_text(spec.model_copy(update={"params": rest}))
        return Budgeted(resolve_policy(inner, env, table, depth + 1), budget, name)
    factory = FACTORIES.get(spec.kind)
    if factory is None:
        known = ", ".join(sorted([*FACTORIES, *table]))
        raise PolicyError(f"unknown policy {name!r} (known kinds and names: {known})")
    fallback = spec.params.pop("fallback", None)
    strategy = factory(spec, env)
    if fallback is None:
        return strategy
    models = [env.catalog.get(m.strip()) for m in fallback.split(",") if m.strip()]
    return WithFallbacks(strategy, models)
