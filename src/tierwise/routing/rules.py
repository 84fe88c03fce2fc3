"""The rules router: capability rules as data, the cheapest candidate that meets them.

The rule set ships as ``default_rules.toml`` (its header documents the format); users extend
or replace it under ``[routing.rules]`` in their config. Rules are compiled once, when the
router is built; ``select`` extracts the task's signals, walks the rules (first deciding
match wins), and picks the cheapest candidate whose capability profile meets the result.
"""

from __future__ import annotations

import functools
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.catalog import ModelSpec
from tierwise.errors import ConfigError
from tierwise.messages import Request
from tierwise.routing.base import Decision, RouteContext
from tierwise.routing.choose import (
    Requirement,
    check_params,
    hard_needs,
    pick,
    tokens_with_input,
)
from tierwise.routing.registry import RouterEnv
from tierwise.routing.signals import Lexicon, Signals, extract_signals

ROUTER_NAME = "rules"
SIGNAL_NAMES = tuple(name for name in Signals.model_fields if name != "text")
_TEXT_SIGNALS = frozenset({"task_kind"})
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_CONDITION = re.compile(r"^(not\s+)?([a-z_]+)(?:\s*(>=|<=|==|!=|>|<)\s*([\w.-]+))?$")


# --- the rule file, as data -------------------------------------------------------------------


class WhenSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list[str] = Field(default_factory=list)
    any: list[str] = Field(default_factory=list)
    words: list[str] = Field(default_factory=list)


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = ""
    when: WhenSpec = Field(default_factory=WhenSpec)
    require: Requirement = Field(default_factory=Requirement)
    continue_: bool = Field(default=False, alias="continue")


class RuleFile(BaseModel):
    """A rule file (``default_rules.toml``) or the ``[routing.rules]`` table of a config."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["extend", "replace"] = "extend"
    default: Requirement | None = None
    rule: list[RuleSpec] = Field(default_factory=list)


# --- compiled rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One compiled condition on a signal."""

    source: str
    signal: str
    test: Callable[[Any], bool]
    negate: bool

    def holds(self, signals: Signals) -> bool:
        return self.test(getattr(signals, self.signal)) != self.negate

    def describe(self, signals: Signals) -> str:
        return self.source if self.negate else signals.describe(self.signal)


def _comparison(op: str, expected: int | str) -> Callable[[Any], bool]:
    compare = _OPS[op]

    def test(value: Any) -> bool:
        if value is None:
            return False
        return compare(len(value) if isinstance(value, tuple) else value, expected)

    return test


def _value(signal: str, op: str, raw: str) -> int | str:
    if signal in _TEXT_SIGNALS:
        if op not in ("==", "!="):
            raise ValueError(f"{signal} is text: compare it with == or !=")
        return raw
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{signal} is a number: {raw!r} is not an integer") from None


def compile_condition(source: str) -> Condition:
    """``"files_affected >= 6"`` -> a :class:`Condition`; ValueError when malformed."""
    match = _CONDITION.match(source.strip())
    if match is None:
        raise ValueError(f"cannot read condition {source!r} (e.g. 'files_affected >= 6')")
    negate, signal, op, raw = match.groups()
    if signal not in SIGNAL_NAMES:
        raise ValueError(f"unknown signal {signal!r} (known: {', '.join(SIGNAL_NAMES)})")
    test: Callable[[Any], bool] = bool
    if op is not None:
        test = _comparison(op, _value(signal, op, raw))
    return Condition(source.strip(), signal, test, negate is not None)


@dataclass(frozen=True)
class Rule:
    name: str
    all: tuple[Condition, ...]
    any: tuple[Condition, ...]
    words: Lexicon | None
    requirement: Requirement
    final: bool

    def fires(self, signals: Signals) -> list[str] | None:
        """What made the rule fire (for the reason), or ``None`` when it does not."""
        if not all(condition.holds(signals) for condition in self.all):
            return None
        hits = [condition for condition in self.any if condition.holds(signals)]
        words = self.words.find(signals.text) if self.words else ()
        if (self.any or self.words) and not (hits or words):
            return None
        why = dict.fromkeys(condition.describe(signals) for condition in [*self.all, *hits])
        return [*why, *([f"words: {', '.join(words)}"] if words else [])]


def _compile_rule(spec: RuleSpec) -> Rule:
    try:
        all_ = tuple(compile_condition(c) for c in spec.when.all)
        any_ = tuple(compile_condition(c) for c in spec.when.any)
    except ValueError as exc:
        raise ConfigError(f"routing rule {spec.name!r}: {exc}") from None
    words = Lexicon(spec.when.words) if spec.when.words else None
    return Rule(spec.name, all_, any_, words, spec.require, final=not spec.continue_)


@dataclass(frozen=True)
class Verdict:
    """What the rules require of a task, and which rules said so."""

    requirement: Requirement
    fired: list[tuple[str, list[str]]]
    decided_by: str | None

    def explain(self) -> str:
        parts = [f"'{name}'" + (f" ({'; '.join(why)})" if why else "") for name, why in self.fired]
        if len(parts) == 1:
            name, _, why = parts[0].partition(" ")
            said = f"rule {name} fired" + (f" {why}" if why else "")
        else:
            said = f"rules fired: {', '.join(parts)}"
        if self.decided_by is not None:
            return said
        default = "no deciding rule fired, so the default applies"
        return f"{said}; {default}" if parts else default


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    default: Requirement

    def evaluate(self, signals: Signals) -> Verdict:
        """Walk the rules: ``continue`` rules add up, the first deciding rule ends the walk."""
        requirement = Requirement()
        fired: list[tuple[str, list[str]]] = []
        for rule in self.rules:
            why = rule.fires(signals)
            if why is None:
                continue
            fired.append((rule.name, why))
            requirement = requirement.merged(rule.requirement)
            if rule.final:
                return Verdict(requirement, fired, rule.name)
        return Verdict(requirement.merged(self.default), fired, None)


# --- loading ----------------------------------------------------------------------------------


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


def parse_rule_file(data: Mapping[str, Any], origin: str) -> RuleFile:
    """A validated rule table; ConfigError naming ``origin`` and the bad field otherwise."""
    try:
        return RuleFile.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {_first_error(exc)}") from None


@functools.cache
def shipped_rules() -> RuleFile:
    text = resources.files("tierwise.routing").joinpath("default_rules.toml").read_text("utf-8")
    return parse_rule_file(tomllib.loads(text), "shipped routing rules")


def _combined(user: RuleFile) -> list[RuleSpec]:
    """``replace``: the user's rules only. ``extend``: a user rule named like a shipped one
    takes its place; the others go first."""
    if user.mode == "replace":
        return list(user.rule)
    mine = {rule.name: rule for rule in user.rule}
    shipped = [mine.pop(rule.name, rule) for rule in shipped_rules().rule]
    return [*mine.values(), *shipped]


def compile_rules(overrides: Mapping[str, Any] | None = None) -> RuleSet:
    """The shipped rules with the config's ``[routing.rules]`` table applied."""
    user = parse_rule_file(overrides or {}, "config routing.rules")
    specs = _combined(user)
    names = [spec.name for spec in specs]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise ConfigError(f"config routing.rules: two rules are named {duplicate!r}")
    default = user.default or shipped_rules().default or Requirement()
    return RuleSet(tuple(_compile_rule(spec) for spec in specs), default)


# --- the router -------------------------------------------------------------------------------


class RulesRouter:
    """Signals -> rules -> requirement -> the cheapest candidate that meets it."""

    name = ROUTER_NAME

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or compile_rules()

    def verdict(self, request: Request) -> tuple[Signals, Verdict]:
        signals = extract_signals(request)
        return signals, self.rules.evaluate(signals)

    def select(
        self, request: Request, candidates: Sequence[ModelSpec], context: RouteContext
    ) -> Decision:
        signals, verdict = self.verdict(request)
        why = verdict.explain()
        return decide(
            self.name, request, candidates, context, signals=signals, verdict=verdict, why=why
        )


def decide(
    router: str,
    request: Request,
    candidates: Sequence[ModelSpec],
    context: RouteContext,
    *,
    signals: Signals,
    verdict: Verdict,
    why: str,
) -> Decision:
    """The decision for ``verdict``'s requirement (plus the request's hard needs)."""
    needed = verdict.requirement
    tokens = tokens_with_input(request, signals.context_tokens)
    chosen = pick(request, candidates, context, needed.merged(hard_needs(signals, request)), tokens)
    fired = [name for name, _ in verdict.fired]
    return Decision(
        router=router,
        chosen=chosen.spec.id,
        scores=chosen.scores,
        threshold=1.0,
        reason=f"{why} -> needs {needed.describe()} -> {chosen.spec.id}, {chosen.how}",
        signals=signals.summary() | {"fired": fired, "requirement": needed.describe()},
    )


def build(params: Mapping[str, str], env: RouterEnv) -> RulesRouter:
    """``route:rules``: the shipped rules, extended or replaced by ``[routing.rules]``."""
    check_params(ROUTER_NAME, params, ())
    return RulesRouter(compile_rules(env.settings.routing.rules))
