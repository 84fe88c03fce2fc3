"""Task signals: what a request says about the capability it needs, read from its text.

Pure and fast (precompiled patterns, one pass each): prompt and context size, code, math,
multi-step reasoning markers, tools, images, conversation depth, security / architecture /
performance words, files affected and lines changed (from ``metadata`` keys
``files_affected`` / ``lines_changed``, a ``git diff --stat`` line, a file listing in a tool
result or the prose), and the task kind its verbs suggest. Keywords are matched on the
task's prose only — code, inline code and file paths are cut out first, so ``auth.py`` is a
file, not a security word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tierwise.messages import ImageBlock, Message, Request, TextBlock, ToolResultBlock
from tierwise.tokens import estimate_tokens

LONG_CONTEXT_TOKENS = 32_000
"""From here a task needs a model good at long context (``long_context_need`` 1)."""
VERY_LONG_CONTEXT_TOKENS = 128_000
"""From here it needs the best long-context models (``long_context_need`` 2)."""

TaskKind = Literal["simple", "standard", "complex"]

_EXTENSIONS = (
    "py|pyi|js|mjs|ts|tsx|jsx|go|rs|java|kt|rb|php|c|h|cc|cpp|hpp|cs|swift|scala|sql|toml|"
    "ya?ml|json|md|rst|sh|html|css|scss|vue|svelte|ipynb|txt|cfg|ini|lock|proto|tf|xml|gradle"
)
_PATH = re.compile(rf"(?<![\w/.-])(?:[\w.-]+/)*[\w.-]+\.(?:{_EXTENSIONS})(?![\w/-])", re.I)
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |function |const |let |var |return\b|"
    r"#include|public |private |async |await |SELECT |INSERT |UPDATE |fn |func |package )"
    r"|[;{}]\s*$",
    re.M,
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.])")
_ARITHMETIC = re.compile(r"\d\s*[-+*/^=\u00d7\u00f7]\s*\(?\d")
_LATEX = re.compile(
    r"\\(?:frac|sum|int|sqrt|cdot|times|alpha|beta|theta|pi|infty|lim|log)\b|\$\$|\\\("
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.M)
_DIFFSTAT = re.compile(
    r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?"
)
_COUNT_PHRASE = re.compile(r"\b(\d+)\s+(?:[a-z-]+\s+)?(files|lines)\b", re.I)
"""``7 files``, ``7 source files``, ``120 lines``."""


_WORD = re.compile(r"[a-z0-9]+")
_FILLER = frozenset({"a", "an", "the"})


def words_of(text: str) -> str:
    """``text`` as lower-case words joined by single spaces, padded with a space each side
    (hyphens and punctuation dropped): what a :class:`Lexicon` searches."""
    return " " + " ".join(_WORD.findall(text.lower())) + " "


class Lexicon:
    """Terms to find among a text's words: whole words (``auth``), stems (``vulnerab*``) and
    phrases (``step by step``, which also matches ``step-by-step``). Words are one set
    intersection and stems and phrases one compiled pattern, so a routing decision costs
    well under a millisecond."""

    def __init__(self, terms: Iterable[str]) -> None:
        words: set[str] = set()
        stems: list[str] = []
        phrases: list[str] = []
        for term in terms:
            normal = words_of(term).strip()
            if " " in normal:
                phrases.append(normal)
            elif term.endswith("*"):
                stems.append(normal)
            else:
                words.add(normal)
        self.words = frozenset(words)
        stem_pattern = "|".join(rf"{re.escape(stem)}[a-z0-9]*" for stem in stems)
        phrase_pattern = "|".join(re.escape(phrase) for phrase in phrases)
        either = "|".join(p for p in (stem_pattern, phrase_pattern) if p)
        self.pattern = re.compile(rf"(?<= )(?:{either})(?= )") if either else None

    def find(self, text: str, vocabulary: Mapping[str, int] | None = None) -> tuple[str, ...]:
        """The distinct terms found in ``text`` (from :func:`words_of`), in order of
        appearance; a stem shows as the word it matched. ``vocabulary`` (from
        :func:`vocabulary_of`) saves recounting the words when several lexicons search."""
        vocab = vocabulary if vocabulary is not None else vocabulary_of(text)
        hits = {word: vocab[word] for word in self.words.intersection(vocab)}
        for match in self.pattern.finditer(text) if self.pattern is not None else ():
            shown = " ".join(w for w in match.group(0).split() if w not in _FILLER)
            hits.setdefault(shown, text.count(" ", 0, match.start()))
        return tuple(sorted(hits, key=hits.__getitem__))


def vocabulary_of(text: str) -> dict[str, int]:
    """Each distinct word of ``text`` (from :func:`words_of`) and where it first appears."""
    vocab: dict[str, int] = {}
    for position, word in enumerate(text.split()):
        vocab.setdefault(word, position)
    return vocab


_MATH_WORDS = Lexicon([
    "equation*", "integral*", "derivative*", "probability", "solve", "calculate", "compute",
    "how many", "how much", "percent*", "average", "ratio", "theorem*", "prime", "primes",
    "polynomial*", "matrix", "matrices", "remainder", "altogether", "in total",
])  # fmt: skip
_REASONING = Lexicon([
    "step by step", "prove", "proof", "proofs", "derive", "design", "trade off", "trade offs",
    "tradeoff", "tradeoffs", "pros and cons", "compare", "analyze", "analyse", "analysis",
    "justify", "think through", "reason about", "edge cases", "invariant", "invariants",
    "root cause",
])  # fmt: skip
_SECURITY = Lexicon([
    "security", "secure", "vulnerab*", "auth", "authenticat*", "authoriz*", "authoris*", "oauth",
    "jwt", "token", "tokens", "password", "passwords", "secret", "secrets", "credential",
    "credentials", "encrypt*", "decrypt*", "crypto*", "injection", "xss", "csrf", "ssrf",
    "exploit*", "cve", "sanitiz*", "sanitis*", "permission", "permissions", "privilege",
    "privileges", "rbac", "audit",
])  # fmt: skip
_ARCHITECTURE = Lexicon([
    "architecture", "architectural", "system design", "microservice", "microservices",
    "distributed", "scalab*", "sharding", "event driven", "data model", "schema design",
    "monolith", "service boundary", "service boundaries", "high availability",
    "fault tolerance", "fault tolerant", "consensus", "caching strategy", "caching layer",
    "migration plan", "migration strategy",
])  # fmt: skip
_PERFORMANCE = Lexicon([
    "performance", "latency", "throughput", "optimiz*", "optimis*", "bottleneck", "bottlenecks",
    "profile", "profiling", "profiler", "memory leak", "memory leaks", "slow", "speed up", "p95",
    "p99", "benchmark", "benchmarks", "cpu bound", "hot path",
])  # fmt: skip
_SIMPLE = Lexicon([
    "read", "open", "show", "print", "cat", "list", "search", "find", "grep", "look up", "locate",
    "where is", "rename", "reformat*", "format*", "lint", "typo", "typos", "summarize",
    "summarise", "summary", "tldr", "what does", "docstring", "docstrings", "comment",
    "comments", "bump",
])  # fmt: skip
_STANDARD = Lexicon([
    "implement*", "add a", "add an", "add the", "add support", "feature", "features", "build",
    "create", "write a", "write an", "write the", "refactor*", "test", "tests", "endpoint",
    "endpoints", "bug", "bugs", "debug*", "integrate", "migrate", "extend",
])  # fmt: skip

_LABELS = {
    "prompt_tokens": "prompt tokens",
    "context_tokens": "context tokens",
    "long_context_need": "long-context need",
    "code_blocks": "code blocks",
    "code_lines": "code lines",
    "has_code": "code",
    "numbers": "numbers",
    "math": "math",
    "reasoning": "reasoning markers",
    "security_words": "security words",
    "architecture_words": "architecture words",
    "performance_words": "performance words",
    "task_kind": "task kind",
    "kind_words": "task words",
    "tools": "tools offered",
    "images": "images",
    "turns": "turns",
    "files_affected": "files affected",
    "lines_changed": "lines changed",
}


class Signals(BaseModel):
    """What a task needs, as read from its request (counts are estimates)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    """Tokens of the task's own text (the last user message with text)."""
    context_tokens: int = 0
    """Tokens of everything sent: system, every message, tool results."""
    long_context_need: int = 0
    """0 none; 1 from :data:`LONG_CONTEXT_TOKENS`; 2 from :data:`VERY_LONG_CONTEXT_TOKENS`."""
    code_blocks: int = 0
    code_lines: int = 0
    has_code: bool = False
    numbers: int = 0
    math: tuple[str, ...] = ()
    """Math cues found: ``latex``, ``arithmetic``, math words (empty: no math)."""
    reasoning: tuple[str, ...] = ()
    """Multi-step reasoning markers (and ``N numbered requirements``)."""
    security_words: tuple[str, ...] = ()
    architecture_words: tuple[str, ...] = ()
    performance_words: tuple[str, ...] = ()
    task_kind: TaskKind | None = None
    kind_words: tuple[str, ...] = ()
    tools: int = 0
    images: int = 0
    turns: int = 0
    files_affected: int | None = None
    lines_changed: int | None = None
    text: str = Field(default="", exclude=True, repr=False)
    """The task's prose (code and paths cut out) as :func:`words_of` gives it, for keyword
    rules."""

    def describe(self, name: str) -> str:
        """``name`` and its value for a reason, e.g. ``security words: auth, token``."""
        if name == "long_context_need":
            return f"context tokens: {self.context_tokens:,}"
        if name == "task_kind" and self.task_kind is not None:
            return f"{self.task_kind} task words: {', '.join(self.kind_words)}"
        value = getattr(self, name)
        label = _LABELS.get(name, name)
        if isinstance(value, bool):
            return label if value else f"no {label}"
        if isinstance(value, tuple):
            return f"{label}: {', '.join(value)}"
        if isinstance(value, int):
            return f"{label}: {value:,}"
        return f"{label}: {value}"

    def summary(self) -> dict[str, Any]:
        """The signals that are set, for a decision's record."""
        return self.model_dump(mode="json", exclude_defaults=True)


# --- text of a request ------------------------------------------------------------------------


def task_text(messages: list[Message]) -> str:
    """The last user message that has text: the task as the user put it."""
    for message in reversed(messages):
        if message.role == "user" and (text := message.text()):
            return text
    return ""


def _tool_result_texts(messages: Iterable[Message]) -> Iterator[str]:
    for message in messages:
        for block in message.content:
            if not isinstance(block, ToolResultBlock):
                continue
            if isinstance(block.content, str):
                yield block.content
            else:
                yield "".join(b.text for b in block.content if isinstance(b, TextBlock))


def _images(messages: Iterable[Message]) -> int:
    count = 0
    for message in messages:
        for block in message.content:
            count += isinstance(block, ImageBlock)
            if isinstance(block, ToolResultBlock) and not isinstance(block.content, str):
                count += sum(isinstance(b, ImageBlock) for b in block.content)
    return count


def _prose(text: str) -> tuple[str, set[str]]:
    """``text`` without fenced code, inline code and file paths; and the paths it names
    (outside fenced code). The cheap ``in`` checks skip patterns that cannot match."""
    if "```" in text:
        text = _FENCE.sub(" ", text)
    paths = set(_PATH.findall(text))
    if "`" in text:
        text = _INLINE_CODE.sub(" ", text)
    return (_PATH.sub(" ", text) if paths else text), paths


@dataclass(frozen=True)
class _Words:
    """A text's words (:func:`words_of`), counted once for every lexicon."""

    text: str
    vocabulary: dict[str, int]

    @classmethod
    def of(cls, text: str) -> _Words:
        joined = words_of(text)
        return cls(joined, vocabulary_of(joined))

    def find(self, lexicon: Lexicon) -> tuple[str, ...]:
        return lexicon.find(self.text, self.vocabulary)


# --- individual signals ---------------------------------------------------------------------


def _long_context_need(tokens: int) -> int:
    return 2 if tokens >= VERY_LONG_CONTEXT_TOKENS else int(tokens >= LONG_CONTEXT_TOKENS)


def _code(text: str) -> tuple[int, int]:
    """Fenced blocks, and code-like lines (inside fences or out)."""
    if "```" not in text:
        return 0, len(_CODE_LINE.findall(text))
    blocks = _FENCE.findall(text)
    fenced_lines = sum(len([ln for ln in b.splitlines() if ln.strip()]) for b in blocks)
    loose_lines = len(_CODE_LINE.findall(_FENCE.sub(" ", text)))
    return len(blocks), fenced_lines + loose_lines


def _math(text: str, prose: _Words) -> tuple[str, ...]:
    cues = ["latex"] if _LATEX.search(text) else []
    cues += ["arithmetic"] if _ARITHMETIC.search(text) else []
    return (*cues, *prose.find(_MATH_WORDS))


def _reasoning(text: str, prose: _Words) -> tuple[str, ...]:
    markers = prose.find(_REASONING)
    items = len(_LIST_ITEM.findall(text))
    return (*markers, f"{items} numbered requirements") if items >= 3 else markers


def _kind(prose: _Words, complex_words: tuple[str, ...]) -> tuple[TaskKind | None, tuple[str, ...]]:
    """The kind the task's words suggest; the heaviest kind found wins."""
    if complex_words:
        return "complex", complex_words
    if standard := prose.find(_STANDARD):
        return "standard", standard
    if simple := prose.find(_SIMPLE):
        return "simple", simple
    return None, ()


def _listed_files(result: str) -> int:
    """Files in a tool result that is a file listing (most of its lines are paths)."""
    lines = [line.strip() for line in result.splitlines() if line.strip()]
    paths = {line for line in lines if _PATH.fullmatch(line.split(":")[0])}
    return len(paths) if len(lines) >= 2 and len(paths) >= 0.8 * len(lines) else 0


def _metadata_int(metadata: dict[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _largest(*values: int | None) -> int | None:
    known = [v for v in values if v is not None and v > 0]
    return max(known) if known else None


def _diffstat(texts: Iterable[str]) -> tuple[int | None, int | None]:
    files = lines = None
    for text in texts:
        for match in _DIFFSTAT.finditer(text) if "changed" in text else ():
            changed = int(match.group(2) or 0) + int(match.group(3) or 0)
            files = max(files or 0, int(match.group(1)))
            lines = max(lines or 0, changed) if changed else lines
    return files, lines


def _phrase_counts(text: str) -> tuple[int | None, int | None]:
    """The largest ``N files`` and ``N lines`` the task mentions."""
    found = _COUNT_PHRASE.findall(text)
    files = _largest(*(int(n) for n, what in found if what.lower() == "files"))
    return files, _largest(*(int(n) for n, what in found if what.lower() == "lines"))


def _files_and_lines(
    request: Request, task: str, paths: set[str], results: list[str]
) -> tuple[int | None, int | None]:
    """The most any source says: metadata, a diffstat, a file listing, the task's words
    (``7 files``) or the paths it names."""
    stat_files, stat_lines = _diffstat([task, *results])
    listed = max((_listed_files(r) for r in results), default=0)
    said_files, said_lines = _phrase_counts(task)
    metadata = request.metadata
    files = _largest(
        _metadata_int(metadata, "files_affected"), stat_files, listed, said_files, len(paths)
    )
    lines = _largest(_metadata_int(metadata, "lines_changed"), stat_lines, said_lines)
    return files, lines


# --- all together ---------------------------------------------------------------------------


def _context_tokens(request: Request, task: str, task_tokens: int, results: list[str]) -> int:
    texts = [b.text for b in request.system] + [m.text() for m in request.messages]
    whole = "".join([*texts, *results])
    return task_tokens if whole == task else estimate_tokens(whole)


def extract_signals(request: Request) -> Signals:
    """The :class:`Signals` of ``request`` (pure; no I/O)."""
    task = task_text(request.messages)
    raw_prose, paths = _prose(task)
    prose = _Words.of(raw_prose)
    results = list(_tool_result_texts(request.messages))
    prompt_tokens = estimate_tokens(task)
    context_tokens = _context_tokens(request, task, prompt_tokens, results)
    blocks, code_lines = _code(task)
    security, architecture = prose.find(_SECURITY), prose.find(_ARCHITECTURE)
    performance = prose.find(_PERFORMANCE)
    kind, kind_words = _kind(prose, (*architecture, *security, *performance))
    files, lines = _files_and_lines(request, task, paths, results)
    return Signals(
        prompt_tokens=prompt_tokens,
        context_tokens=context_tokens,
        long_context_need=_long_context_need(context_tokens),
        code_blocks=blocks,
        code_lines=code_lines,
        has_code=bool(blocks or code_lines),
        numbers=len(_NUMBER.findall(raw_prose)),
        math=_math(task, prose),
        reasoning=_reasoning(task, prose),
        security_words=security,
        architecture_words=architecture,
        performance_words=performance,
        task_kind=kind,
        kind_words=kind_words,
        tools=len(request.tools),
        images=_images(request.messages),
        turns=sum(message.role == "user" for message in request.messages),
        files_affected=files,
        lines_changed=lines,
        text=prose.text,
    )
