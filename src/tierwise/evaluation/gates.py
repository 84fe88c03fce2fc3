"""Deterministic answer gates over a model's worked solution of a maths word problem.

Each gate is a pure function ``text -> GateVerdict(passed, score, reason)``:

* :func:`answer_gate` — a final answer is stated in a recognised form (``#### 72``,
  ``\\boxed{72}``, "the answer is 72") and is a number; the last number alone scores lower;
* :func:`arithmetic_gate` — every calculation written out (``48 / 2 = 24``, GSM8K's
  ``<<48/2=24>>`` annotations) is re-computed and compared with the result written;
* :func:`consistency_gate` — the final answer is a result the worked steps arrived at.

Calculations are read by a whitelist over Python's ``ast`` (numbers, ``+ - * / **``, unary
minus; ``x`` and the Unicode and LaTeX operator signs are read as ASCII, ``%`` is
``/100``, ``$`` and thousands commas are dropped) — nothing is ever ``eval``'d. A left-hand
side that is not pure arithmetic ("3 sprints * 60 meters") is skipped, not failed.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

AnswerForm = Literal["####", "boxed", "phrase", "last number"]

NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_SIGNED = rf"-?\s*\$?\s*(?:{NUMBER})"
_ANNOTATION = re.compile(r"<<([^<>\n]*=[^<>\n]*)>>")
_HASH = re.compile(rf"####\s*\$?\s*({_SIGNED})")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_PHRASE = re.compile(
    rf"(?:final answer|the answer|answer)\s*\**\s*(?:is|:|=)\s*:?\s*\**\s*({_SIGNED})",
    re.IGNORECASE,
)
_STATED: tuple[tuple[re.Pattern[str], AnswerForm], ...] = (
    (_HASH, "####"),
    (_BOXED, "boxed"),
    (_PHRASE, "phrase"),
)
_ANY_NUMBER = re.compile(rf"-?(?:{NUMBER})")
_ARITHMETIC = r"[0-9.,+\-*xX/^()$% \t]*"
_LHS_CHARS = re.compile(_ARITHMETIC + "$")
_RHS = re.compile(rf"\s*\$?\s*(-?\s*(?:{NUMBER}))\s*(%?)")
_RHS_RUN = re.compile(_ARITHMETIC)
_TOKEN = re.compile(rf"\s*(\*\*|{NUMBER}|[-+*/()%^xX$])")
_SYMBOLS = {"x": "*", "X": "*", "^": "**"}
_UNICODE = str.maketrans(
    {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u00b7": "*", "\u22c5": "*", "\u00f7": "/"}
)
"""Minus sign, en dash, multiplication sign, middle dot, dot operator, division sign."""
_LATEX = {"\\*": "*", "\\times": "*", "\\cdot": "*", "\\div": "/", "\\$": "$"}
_WORD_X = re.compile(r"(?<=[A-Za-z])[xX]|[xX](?=[A-Za-z])")
_OPERATORS = ("+", "-", "*", "x", "X", "/", "^")
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class GateVerdict:
    """A gate's judgement: pass or fail, a score in [0, 1], and one line of why."""

    passed: bool
    score: float
    reason: str


@dataclass(frozen=True)
class FinalAnswer:
    """The answer a solution states: its value, as written, and how it was stated."""

    value: float
    text: str
    form: AnswerForm
    start: int
    """Where the answer's statement begins in the text (the worked steps come before)."""


@dataclass(frozen=True)
class Calculation:
    """One written calculation: ``expression = claimed``, and what the expression is."""

    expression: str
    claimed: str
    actual: float
    correct: bool

    def __str__(self) -> str:
        return f"{self.expression} = {self.claimed}"


Gate = Callable[[str], GateVerdict]


# --- numbers and arithmetic ---------------------------------------------------------------


def to_number(text: str) -> float | None:
    """``"$1,200.50"`` -> 1200.5; ``None`` when the text is not one number."""
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def _python(expression: str) -> str | None:
    """The expression as Python arithmetic source, or ``None`` if it has other tokens."""
    parts: list[str] = []
    at, end = 0, len(expression.rstrip())
    while at < end:
        found = _TOKEN.match(expression, at)
        if found is None:
            return None
        token, at = _SYMBOLS.get(found.group(1), found.group(1)), found.end()
        if token == "%" and parts:
            parts[-1] = f"({parts[-1]} / 100)"
        elif token != "$":
            parts.append(token.replace(",", ""))
    return " ".join(parts)


def evaluate(expression: str) -> float | None:
    """The value of a written arithmetic expression; ``None`` if it is not pure arithmetic
    with at least one operator, or cannot be computed (division by zero, huge powers)."""
    source = _python(expression.translate(_UNICODE))
    if not source:
        return None
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.BinOp | ast.UnaryOp) or not _has_operator(tree):
        return None
    try:
        return _value(tree)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def _has_operator(node: ast.expr) -> bool:
    if isinstance(node, ast.BinOp):
        return True
    return isinstance(node, ast.UnaryOp) and _has_operator(node.operand)


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _value(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        return _binary(node.op, _value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


def _binary(op: ast.operator, left: float, right: float) -> float:
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    if isinstance(op, ast.Div):
        return left / right
    if isinstance(op, ast.Pow) and abs(right) <= _MAX_EXPONENT:
        return float(left**right)
    raise ValueError("not arithmetic")


def matches(actual: float, claimed: str) -> bool:
    """Whether ``claimed`` (as written, maybe with ``%``) is ``actual`` rounded or truncated
    to the decimals written; ``12 / 20 = 60%`` and ``0.6 x 100 = 60%`` both match."""
    value = to_number(claimed.rstrip("%"))
    if value is None or not math.isfinite(actual):
        return False
    candidates = [value, value / 100] if claimed.endswith("%") else [value]
    decimals = len(claimed.rstrip("%").partition(".")[2].strip())
    return any(_close(actual, c, decimals) for c in candidates)


def _close(actual: float, claimed: float, decimals: int) -> bool:
    unit = 10.0**-decimals
    slack = 1e-9 * max(1.0, abs(actual))
    if abs(actual - claimed) <= unit / 2 + slack:
        return True
    return abs(math.trunc(actual / unit + math.copysign(1e-9, actual)) * unit - claimed) <= slack


# --- reading a solution -------------------------------------------------------------------


def prose(text: str) -> str:
    """The text with GSM8K calculator annotations (``<<3*60=180>>``) removed."""
    return _ANNOTATION.sub("", text)


def unescaped(text: str) -> str:
    """Markdown escapes, LaTeX and Unicode operators as ASCII (``\\times`` -> ``*``)."""
    for written, symbol in _LATEX.items():
        text = text.replace(written, symbol)
    return text.translate(_UNICODE)


def final_answer(text: str) -> FinalAnswer | None:
    """The stated final answer: the last ``####``, else ``\\boxed{}``, else "the answer is",
    else the last number outside calculator annotations. ``start`` indexes
    :func:`unescaped` text."""
    plain = unescaped(text)
    for pattern, form in _STATED:
        for found in reversed(list(pattern.finditer(plain))):
            value = to_number(found.group(1))
            if value is not None:
                return FinalAnswer(value, _clean(found.group(1)), form, found.start())
    inside = [range(*found.span()) for found in _ANNOTATION.finditer(plain)]
    numbers = [n for n in _ANY_NUMBER.finditer(plain) if not any(n.start() in r for r in inside)]
    if not numbers:
        return None
    last = numbers[-1]
    return FinalAnswer(
        float(to_number(last.group()) or 0.0), last.group(), "last number", last.start()
    )


def _clean(number: str) -> str:
    return number.replace("$", "").replace(" ", "")


def calculations(text: str) -> list[Calculation]:
    """Every checkable ``expression = result`` in the text: the calculator annotations and
    the written equations (one per distinct expression and result)."""
    seen: dict[tuple[str, str], Calculation] = {}
    for expression, claims in _equations(text):
        actual = evaluate(expression)
        if actual is None:
            continue
        correct = any(matches(actual, claim) for claim in claims)
        key = (_python(expression) or expression, claims[0])
        seen.setdefault(key, Calculation(expression, claims[0], actual, correct))
    return list(seen.values())


def _equations(text: str) -> Iterator[tuple[str, list[str]]]:
    """Line by line: the written equations, then the line's calculator annotations."""
    for line in unescaped(text).splitlines():
        yield from _line_equations(prose(line))
        for found in _ANNOTATION.finditer(line):
            yield from _line_equations(found.group(1))


def _line_equations(line: str) -> Iterator[tuple[str, list[str]]]:
    """``(left side, written results)`` for each ``=`` of one line: the arithmetic just left
    of it and the number just right of it — or, in a chain ``4 * 125 - 2 = 500 - 2 = 498``,
    the value of the arithmetic right of it. Algebra (``x * 4 + 8 = 40``) is skipped."""
    pieces = _WORD_X.sub("_", line).split("=")
    for left, right in itertools.pairwise(pieces):
        if left.endswith(("<", ">", "!")) or right.startswith("="):
            continue
        expression = _left_expression(left)
        claims = _claims(right)
        if expression is not None and claims:
            yield expression, claims


def _left_expression(left: str) -> str | None:
    """The longest arithmetic that ends the text, unless an operator comes before it (then
    it is part of something longer that does not read as arithmetic)."""
    run = _LHS_CHARS.search(left)
    text = run.group().strip() if run else ""
    for start in _token_starts(text):
        if evaluate(text[start:]) is not None:
            before = text[:start].rstrip()
            return None if before.endswith(_OPERATORS) else text[start:].strip()
    return None


def _token_starts(text: str) -> Iterator[int]:
    at = 0
    while at < len(text):
        yield at
        found = _TOKEN.match(text, at)
        at = found.end() if found else at + 1


def _claims(right: str) -> list[str]:
    """The result written right of ``=``: its first number and, when the right side is
    itself arithmetic (``= 3 * 2``), its value. None when it goes on as algebra."""
    run = _RHS_RUN.match(right)
    text = run.group().strip() if run else ""
    first = _RHS.match(right)
    if first is None or text.endswith((*_OPERATORS, "(")):
        return []
    claims = [first.group(1).replace(" ", "").replace("$", "") + first.group(2)]
    value = evaluate(text)
    return claims if value is None else [*claims, f"{value:.10g}"]


# --- the gates ----------------------------------------------------------------------------


def answer_gate(text: str) -> GateVerdict:
    """A final answer stated in a recognised form (score 1), only a trailing number (0.3),
    or none (0)."""
    if "<<" in prose(text):
        return GateVerdict(False, 0.0, "the response is cut off inside a calculation")
    answer = final_answer(text)
    if answer is None:
        return GateVerdict(False, 0.0, "no final answer: the response states no number")
    if answer.form == "last number":
        return GateVerdict(False, 0.3, f"no final answer stated; the last number is {answer.text}")
    return GateVerdict(True, 1.0, f"final answer {answer.text!r} ({answer.form})")


def arithmetic_gate(text: str) -> GateVerdict:
    """Every written calculation re-computed; the score is the share that checks out."""
    checks = calculations(text)
    if not checks:
        return GateVerdict(True, 1.0, "no calculation written out to check")
    wrong = [c for c in checks if not c.correct]
    if not wrong:
        return GateVerdict(True, 1.0, f"all {len(checks)} calculations check out")
    first = wrong[0]
    return GateVerdict(
        False,
        1.0 - len(wrong) / len(checks),
        f"{first} is wrong ({first.expression} = {first.actual:.10g}); "
        f"{len(wrong)} of {len(checks)} calculations wrong",
    )


def consistency_gate(text: str) -> GateVerdict:
    """The final answer is the last result the steps computed (1), an earlier one (0.8), a
    number the steps mention (0.5), or none of them (0)."""
    answer = final_answer(text)
    if answer is None:
        return GateVerdict(False, 0.0, "no final answer to check against the steps")
    cut = answer.start + len(answer.text) if answer.form == "last number" else answer.start
    steps = unescaped(text)[:cut]
    computed = calculations(steps)
    results = [c for c in computed if _gives(c, answer)]
    if results and results[-1] is computed[-1]:
        return GateVerdict(True, 1.0, f"final answer {answer.text} is the last result computed")
    if results:
        return GateVerdict(True, 0.8, f"final answer {answer.text} is the result of {results[-1]}")
    mentioned = [to_number(n.group()) for n in _ANY_NUMBER.finditer(prose(steps))]
    if any(n is not None and _same(n, answer.value) for n in mentioned):
        return GateVerdict(True, 0.5, f"final answer {answer.text} appears in the steps")
    return GateVerdict(False, 0.0, f"final answer {answer.text} appears nowhere in the steps")


def _gives(calculation: Calculation, answer: FinalAnswer) -> bool:
    """Whether the calculation's written result, or its value as the answer is written
    (rounded to the answer's decimals), is the answer."""
    claimed = to_number(calculation.claimed.rstrip("%"))
    if claimed is not None and _same(claimed, answer.value):
        return True
    return matches(calculation.actual, answer.text)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


GATES: dict[str, Gate] = {
    "answer": answer_gate,
    "arithmetic": arithmetic_gate,
    "consistency": consistency_gate,
}
"""The gates by name, in the order a cascade applies them."""


def verdicts(text: str | None, names: Sequence[str] = tuple(GATES)) -> list[GateVerdict]:
    """The named gates on one response (a missing response fails every gate)."""
    if text is None or not text.strip():
        return [GateVerdict(False, 0.0, "no response recorded") for _ in names]
    return [GATES[name](text) for name in names]
