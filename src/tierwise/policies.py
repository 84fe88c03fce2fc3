"""Policy names -> strategies.

A policy is ``kind[:argument][?key=value&...]``, e.g. ``fixed:anthropic:claude-haiku-4-5``
or ``route:learned?target=0.95``; a bare name is looked up in the config's ``[policies]``
table first. Each kind registers one factory here; later rungs of the ladder (routing,
cascade, advisor, plan/execute) add theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field

from tierwise.catalog import Catalog
from tierwise.errors import PolicyError
from tierwise.strategies.base import Strategy
from tierwise.strategies.fixed import FixedStrategy


class PolicySpec(BaseModel):
    kind: str
    argument: str = ""
    params: dict[str, str] = Field(default_factory=dict)


Factory = Callable[[PolicySpec, Catalog], Strategy]


def parse_policy(text: str) -> PolicySpec:
    head, _, query = text.strip().partition("?")
    kind, _, argument = head.partition(":")
    if not kind:
        raise PolicyError(f"empty policy name in {text!r}")
    return PolicySpec(kind=kind, argument=argument, params=dict(parse_qsl(query)))


def _fixed(spec: PolicySpec, catalog: Catalog) -> Strategy:
    if not spec.argument:
        raise PolicyError("policy 'fixed' needs a model: fixed:<provider:model>")
    return FixedStrategy(catalog.get(spec.argument))


FACTORIES: dict[str, Factory] = {"fixed": _fixed}


def resolve_policy(
    name: str, catalog: Catalog, named: Mapping[str, str] = {}, depth: int = 0
) -> Strategy:
    """The strategy for ``name`` (a named policy from the config, or ``kind:arg?params``)."""
    if name in named:
        if depth > 8:
            raise PolicyError(f"named policy {name!r} refers to itself")
        return resolve_policy(named[name], catalog, named, depth + 1)
    spec = parse_policy(name)
    factory = FACTORIES.get(spec.kind)
    if factory is None:
        known = ", ".join(sorted([*FACTORIES, *named]))
        raise PolicyError(f"unknown policy {name!r} (known kinds and names: {known})")
    return factory(spec, catalog)
