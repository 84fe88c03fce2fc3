"""Gates by name, built from spec strings such as ``python``, ``json_schema:out.json``,
``regex:^OK``, ``command:python -m pytest -q``, ``confidence>=0.7``, ``judge:<model>``,
``agree:3`` or ``answer`` / ``arithmetic`` / ``consistency`` (the GSM8K answer checks)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tierwise.catalog import Catalog
from tierwise.errors import GateError
from tierwise.evaluation.gates import GATES as ANSWER_CHECKS
from tierwise.gates.base import Gate
from tierwise.gates.command import DEFAULT_TIMEOUT_S, CommandGate
from tierwise.gates.model_gates import AgreementGate, ConfidenceGate, JudgeGate
from tierwise.gates.static import (
    AnswerCheckGate,
    JsonGate,
    JsonSchemaGate,
    PythonSyntaxGate,
    RegexGate,
)


@dataclass(frozen=True)
class GateEnv:
    """What building a gate may need: the catalog (judges) and the command gate's workspace."""

    catalog: Catalog
    workspace: Path | None = None
    """A directory copied into each command gate's temporary workspace (e.g. the tests)."""
    files: Mapping[str, str] = field(default_factory=dict)
    answer_file: str = "solution.py"
    timeout_s: float = DEFAULT_TIMEOUT_S


Builder = Callable[[str, GateEnv], Gate]


def _no_argument(gate: Gate) -> Builder:
    def build(argument: str, env: GateEnv) -> Gate:
        if argument:
            raise GateError(f"gate {gate.name!r} takes no argument (got {argument!r})")
        return gate

    return build


def _needs(what: str, argument: str, name: str) -> str:
    if not argument:
        raise GateError(f"gate {name!r} needs {what}: {name}:<{what}>")
    return argument


def _number(text: str, name: str, kind: type[float] | type[int]) -> float:
    try:
        return kind(text)
    except ValueError:
        raise GateError(f"gate {name!r}: {text!r} is not a number") from None


def _command(argument: str, env: GateEnv) -> Gate:
    return CommandGate(
        _needs("cmd", argument, "command"),
        files=env.files,
        template=env.workspace,
        answer_file=env.answer_file,
        timeout_s=env.timeout_s,
    )


def _confidence(argument: str, env: GateEnv) -> Gate:
    return ConfidenceGate(_number(_needs("threshold", argument, "confidence"), "confidence", float))


def _judge(argument: str, env: GateEnv) -> Gate:
    return JudgeGate(env.catalog.get(_needs("model", argument, "judge")))


def _agree(argument: str, env: GateEnv) -> Gate:
    return AgreementGate(int(_number(argument or "3", "agree", int)))


def _schema(argument: str, env: GateEnv) -> Gate:
    return JsonSchemaGate.from_file(Path(_needs("path", argument, "json_schema")).expanduser())


GATES: dict[str, Builder] = {
    "python": _no_argument(PythonSyntaxGate()),
    "json": _no_argument(JsonGate()),
    "json_schema": _schema,
    "regex": lambda argument, env: RegexGate(_needs("pattern", argument, "regex")),
    "command": _command,
    "confidence": _confidence,
    "judge": _judge,
    "agree": _agree,
    **{name: _no_argument(AnswerCheckGate(name)) for name in ANSWER_CHECKS},
}
"""name -> builder of a gate from its argument (the text after ``:`` or ``>=``)."""

_SPEC = re.compile(r"\s*([a-z_]+)\s*(?:(:|>=)(.*))?", re.DOTALL)


def build_gate(spec: str, env: GateEnv) -> Gate:
    """The gate a spec string names: ``name``, ``name:argument`` or ``confidence>=0.7``."""
    found = _SPEC.fullmatch(spec)
    if found is None or found.group(1) not in GATES:
        known = ", ".join(sorted(GATES))
        raise GateError(f"unknown gate {spec.strip()!r} (known: {known})")
    name, _, argument = found.groups()
    return GATES[name]((argument or "").strip(), env)


def split_gate_specs(text: str) -> list[str]:
    """``"python,command:pytest -q"`` -> its specs. A comma splits only where a known gate
    name follows it, so a regex or command may contain commas."""
    names = "|".join(sorted(GATES, key=len, reverse=True))
    pieces = re.split(rf",\s*(?=(?:{names})\s*(?::|>=|,|$))", text)
    return [piece.strip() for piece in pieces if piece.strip()]


def build_gates(specs: str | Sequence[str], env: GateEnv) -> list[Gate]:
    """Gates from a comma-separated string or a list of specs, in order."""
    listed = split_gate_specs(specs) if isinstance(specs, str) else list(specs)
    return [build_gate(spec, env) for spec in listed]
