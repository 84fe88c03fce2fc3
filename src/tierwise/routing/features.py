"""Prompt features for learned routers: lexical signals next to a sentence embedding.

The lexical columns are cheap hints about difficulty and kind of task (length, how much
arithmetic, code, question words, multi-step wording, answer choices); they are
standardised on the training prompts and appended to the embedding.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierwise.evaluation.matrix import FloatArray
from tierwise.routing.embeddings import Embedder, Progress, Vectors

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CHOICE = re.compile(r"^\s*[A-E][.)]\s", re.MULTILINE)
_QUESTION_WORDS = frozenset({
    "what", "why", "how", "which", "who", "when", "where", "explain", "prove", "calculate",
    "compute", "solve", "find",
})  # fmt: skip
_STEP_WORDS = frozenset({
    "first", "then", "after", "finally", "step", "steps", "each", "total", "remaining",
    "twice", "half", "per", "every", "times",
})  # fmt: skip
_CODE_WORDS = frozenset(["def", "class", "return", "import", "function", "lambda", "const"])
_CODE_MARKS = ("```", "#include", "=>", "{", "}", ";", "()")
_MATH_MARKS = ("\\", "$", "^", "sqrt", "frac")
_SCAN = 20_000
"""Ratios and counts read at most this many characters (lengths read everything), so a
huge prompt costs no more than a long one."""


@functools.cache
def _byte_classes() -> npt.NDArray[np.uint8]:
    """Byte -> 1 digit, 2 capital, 3 operator, 4 other punctuation, 0 anything else."""
    table = np.zeros(256, dtype=np.uint8)
    for char in range(256):
        c = chr(char)
        if c.isdigit():
            table[char] = 1
        elif "A" <= c <= "Z":
            table[char] = 2
        elif c in "+-*/=^<>%":
            table[char] = 3
        elif char < 128 and not c.isalnum() and not c.isspace():
            table[char] = 4
    return table


LEXICAL_NAMES = (
    "log_chars",
    "log_words",
    "log_lines",
    "digit_ratio",
    "operator_ratio",
    "log_numbers",
    "log_code_markers",
    "log_question_words",
    "log_step_markers",
    "choices",
    "upper_ratio",
    "punct_ratio",
    "mean_word_len",
    "log_math_markers",
    "question_marks",
)


def _ratio(count: int, total: int) -> float:
    return count / total if total else 0.0


def _lexical_row(full: str) -> list[float]:
    text = full[:_SCAN]
    raw = np.frombuffer(text.encode("utf-8", "ignore"), dtype=np.uint8)
    _, digits, upper, operators, punct = np.bincount(_byte_classes()[raw], minlength=5).tolist()
    size = max(len(raw), 1)
    words = _WORD.findall(text.lower())
    counts = Counter(words)

    def hits(vocabulary: frozenset[str]) -> int:
        return sum(counts[w] for w in vocabulary)

    return [
        np.log1p(len(full)),
        np.log1p(len(words) * len(full) / max(len(text), 1)),
        np.log1p(full.count("\n")),
        digits / size,
        operators / size,
        np.log1p(len(_NUMBER.findall(text))),
        np.log1p(hits(_CODE_WORDS) + sum(map(text.count, _CODE_MARKS))),
        np.log1p(hits(_QUESTION_WORDS)),
        np.log1p(hits(_STEP_WORDS)),
        float(len(_CHOICE.findall(text))),
        upper / size,
        (operators + punct) / size,
        _ratio(sum(map(len, words)), len(words)),
        np.log1p(sum(map(text.count, _MATH_MARKS))),
        float(text.count("?")),
    ]


def lexical_features(texts: Sequence[str]) -> FloatArray:
    """``(len(texts), len(LEXICAL_NAMES))`` raw lexical features."""
    return np.array([_lexical_row(t) for t in texts], dtype=np.float64).reshape(
        len(texts), len(LEXICAL_NAMES)
    )


@dataclass
class Features:
    """One batch of prompts as the estimators see them."""

    embeddings: Vectors
    """L2-normalised sentence embeddings (kNN reads only these)."""
    combined: FloatArray
    """Standardised embedding and lexical columns side by side."""

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def lexical(self) -> FloatArray:
        """The standardised lexical columns alone."""
        return self.combined[:, self.embeddings.shape[1] :]

    @staticmethod
    def concat(parts: Sequence[Features]) -> Features:
        return Features(
            np.vstack([p.embeddings for p in parts]), np.vstack([p.combined for p in parts])
        )


class FeatureBuilder:
    """Embeds prompts and adds lexical features, standardised with training statistics."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._mean: FloatArray | None = None
        self._scale: FloatArray | None = None

    def fit(self, texts: Sequence[str], progress: Progress | None = None) -> Features:
        """Learn the embedder's and the scaler's statistics on ``texts``; their features."""
        self.embedder.fit(texts)
        embeddings = self.embedder.embed(texts, progress)
        raw = self._raw(embeddings, texts)
        self._mean = raw.mean(axis=0)
        self._scale = np.where(raw.std(axis=0) > 1e-9, raw.std(axis=0), 1.0)
        return Features(embeddings, self._standardised(raw))

    def transform(self, texts: Sequence[str], progress: Progress | None = None) -> Features:
        embeddings = self.embedder.embed(texts, progress)
        return Features(embeddings, self._standardised(self._raw(embeddings, texts)))

    @staticmethod
    def _raw(embeddings: Vectors, texts: Sequence[str]) -> FloatArray:
        return np.hstack([embeddings.astype(np.float64), lexical_features(texts)])

    def _standardised(self, raw: FloatArray) -> FloatArray:
        if self._mean is None or self._scale is None:
            raise RuntimeError("FeatureBuilder.transform before fit")
        return (raw - self._mean) / self._scale
