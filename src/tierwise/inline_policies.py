"""The safe subset of the policy language: what a client may send as an inline expression.

The policy language has two trust levels. The operator's configuration (``[policies]``,
``default_policy``, ``[cascade]``) may use all of it, including the parts that run a
process, read a file or name a directory: ``command:`` and ``json_schema:`` gates,
``workspace=``, ``answer_file=``, ``gate_timeout=``, a learned router's ``artifact=`` (it
loads files from the gateway's disk), and ``regex:`` gates (a pattern runs on the gateway's
CPU, so a hostile one can stall it). A client of the gateway sends a model
id or a named policy; only a key allowed inline expressions (``keys create
--inline-policies``) may send ``tierwise/<expression>``, and then only this subset:

- kinds ``fixed``, ``route``, ``cascade``, ``advisor``, ``plan``, ``decompose``;
- model lists (``candidates=``, ``fallback=``, tiers, executors, judges, advisors);
- numeric knobs within the ranges below, router names (a learned router through a named
  policy of the operator's);
- gates without side effects: ``python``, ``json``, ``confidence>=x``, ``judge:<model>``,
  ``agree:<n>``, and the answer checks.

Every parameter is checked: an unknown one is an error (never ignored), an operator-only
one a refusal naming it. The check runs on the text before any strategy is built, so a
refused expression never loads, opens or starts anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tierwise.errors import InvalidRequestError, PolicyNotAllowedError
from tierwise.gates.base import GATE_ERROR_POLICIES
from tierwise.gates.registry import split_gate_specs
from tierwise.policies import parse_policy
from tierwise.routing.registry import ROUTERS

MAX_EXPRESSION_CHARS = 2000
MAX_MODELS = 16
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,199}$")
_GATE = re.compile(r"^([a-z_]+)\s*(?:(:|>=)\s*(.*))?$", re.DOTALL)
_OPERATOR_PARAMS = frozenset({"workspace", "answer_file", "gate_timeout", "artifact", "version"})
_OPERATOR_GATES = frozenset({"command", "json_schema", "regex"})
_NO_ARGUMENT_GATES = frozenset({"python", "json", "answer", "arithmetic", "consistency"})

Check = Callable[[str, str], None]
"""Validates one parameter's value (its name first, for the message)."""


def _bad(name: str, value: str, wanted: str) -> InvalidRequestError:
    return InvalidRequestError(f"policy parameter {name}={value[:60]!r}: {wanted}")


def models(name: str, value: str) -> None:
    ids = [part.strip() for part in value.split(",")]
    if not 0 < len(ids) <= MAX_MODELS or not all(_MODEL_ID.match(i) for i in ids):
        raise _bad(name, value, f"a comma-separated list of up to {MAX_MODELS} model ids")


def model(name: str, value: str) -> None:
    if not _MODEL_ID.match(value.strip()):
        raise _bad(name, value, "a model id")


def number(low: float, high: float) -> Check:
    def check(name: str, value: str) -> None:
        try:
            parsed = float(value)
        except ValueError:
            parsed = math.nan
        if not (math.isfinite(parsed) and low <= parsed <= high):
            raise _bad(name, value, f"a number from {low:g} to {high:g}")

    return check


def integer(low: int, high: int) -> Check:
    def check(name: str, value: str) -> None:
        text = value.strip()
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise _bad(name, value, f"a whole number from {low} to {high}")

    return check


def choice(*options: str) -> Check:
    def check(name: str, value: str) -> None:
        if value not in options:
            raise _bad(name, value, f"one of {', '.join(options)}")

    return check


def gates(name: str, value: str) -> None:
    for spec in split_gate_specs(value):
        _gate(spec)


def _gate(spec: str) -> None:
    found = _GATE.fullmatch(spec.strip())
    gate, argument = (found.group(1), (found.group(3) or "").strip()) if found else (spec, "")
    if gate in _OPERATOR_GATES:
        raise PolicyNotAllowedError(
            f"gate {gate!r} is for the operator's config only: name a policy in [policies]"
        )
    if gate in _NO_ARGUMENT_GATES and not argument:
        return
    if gate == "confidence" and found and found.group(2) == ">=":
        number(0, 1)("confidence", argument)
        return
    if gate == "judge":
        model("judge", argument)
        return
    if gate == "agree":
        integer(2, 5)("agree", argument or "3")
        return
    raise InvalidRequestError(f"gate {spec.strip()[:60]!r} is not one a client may send")


def route_start(name: str, value: str) -> None:
    kind, _, router = value.partition(":")
    if kind != "route" or router not in ROUTER_PARAMS or ROUTER_PARAMS[router]:
        routers = ", ".join(r for r, params in ROUTER_PARAMS.items() if not params)
        raise _bad(name, value, f"route:<router> for a router without parameters ({routers})")


COMMON: dict[str, Check] = {
    "fallback": models,
    "budget_usd": number(1e-9, 10_000),
    "budget_tokens": integer(1, 100_000_000),
}
"""Parameters every kind takes."""

ROUTER_PARAMS: dict[str, dict[str, Check]] = {
    "rules": {},
    "random": {"p": number(0, 1), "seed": integer(0, 2**31)},
    "cheapest": {},
    "strongest": {},
    "classifier": {"model": model},
    "learned": {  # its artifact= and version= are the operator's: a named policy
        "target": number(0, 1),
        "lambda": number(0, 1e6),
        "mu": number(0, 1e6),
    },
}
"""The parameters of each router a client may choose (``route:<router>?...``)."""


@dataclass(frozen=True)
class Kind:
    """A policy kind as a client may send it: its argument and its parameters."""

    argument: Check | None
    params: Mapping[str, Check] = field(default_factory=dict)
    needs_argument: bool = True


_PLAN_PARAMS: dict[str, Check] = {
    "executors": models,
    "judge": model,
    "on_gate_error": choice(*GATE_ERROR_POLICIES),
    "replan_after": integer(1, 20),
    "max_replans": integer(0, 10),
    "concurrency": integer(1, 32),
    "max_steps": integer(1, 32),
    "step_tokens": integer(16, 200_000),
}

KINDS: dict[str, Kind] = {
    "fixed": Kind(model),
    "route": Kind(None),  # the router's own table: ROUTER_PARAMS
    "cascade": Kind(
        models,
        {
            "gates": gates,
            "max_escalations": integer(0, 8),
            "retries": integer(0, 3),
            "retry_pass_rate": number(0, 1),
            "feedback": choice("true", "false", "1", "0", "yes", "no"),
            "on_gate_error": choice(*GATE_ERROR_POLICIES),
            "start": route_start,
        },
        needs_argument=False,
    ),
    "advisor": Kind(
        model,
        {
            "advisor": model,
            "max_uses": integer(0, 10),
            "max_tokens": integer(1, 64_000),
            "caching": choice("5m", "1h", "off"),
        },
        needs_argument=False,
    ),
    "plan": Kind(model, _PLAN_PARAMS),
    "decompose": Kind(model, _PLAN_PARAMS),
}


def check_inline_policy(text: str) -> None:
    """Refuse ``text`` unless it is in the safe subset: PolicyNotAllowedError (403) for an
    operator-only part, InvalidRequestError (400) for anything else it may not say."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise InvalidRequestError(f"a policy expression is at most {MAX_EXPRESSION_CHARS} chars")
    spec = parse_policy(text)
    kind = KINDS.get(spec.kind)
    if kind is None:
        known = ", ".join(KINDS)
        raise InvalidRequestError(f"unknown policy kind {spec.kind!r} (a client may send {known})")
    params = ROUTER_PARAMS.get(spec.argument) if spec.kind == "route" else kind.params
    if params is None:
        raise InvalidRequestError(f"unknown router {spec.argument!r} (known: {', '.join(ROUTERS)})")
    if spec.kind == "route":
        params = {"candidates": models, **params}
    if kind.argument is not None and (spec.argument or kind.needs_argument):
        kind.argument(spec.kind, spec.argument)
    for name, value in spec.params.items():
        _param(spec.kind, name, value, {**COMMON, **params})


def _param(kind: str, name: str, value: str, known: Mapping[str, Check]) -> None:
    if name in _OPERATOR_PARAMS:
        raise PolicyNotAllowedError(
            f"policy parameter {name!r} is for the operator's config only: name a policy in "
            "[policies]"
        )
    check = known.get(name)
    if check is None:
        takes = ", ".join(sorted(known))
        raise InvalidRequestError(f"policy {kind!r} has no parameter {name!r} (takes: {takes})")
    check(name, value)
