"""Reading an answer's text: fenced code blocks and a JSON object inside prose."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.#-]*)[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
PYTHON_TAGS = frozenset({"", "python", "py", "python3"})


def code_blocks(text: str, tags: frozenset[str] | None = None) -> list[str]:
    """The fenced code blocks of ``text`` whose language tag is in ``tags`` (any if ``None``)."""
    return [body for tag, body in _FENCE.findall(text) if tags is None or tag.lower() in tags]


def python_code(text: str) -> str:
    """The answer's Python: its ``python`` (or untagged) fenced blocks joined, else — when
    it has no fences at all — the whole text."""
    if not _FENCE.search(text):
        return text
    return "\n\n".join(code_blocks(text, PYTHON_TAGS))


def json_text(text: str) -> str:
    """The answer's JSON: its first ``json`` (or untagged) fenced block, else the whole text."""
    blocks = code_blocks(text, frozenset({"", "json"}))
    return blocks[0] if blocks else text.strip()


def find_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (a model's verdict may come wrapped in prose)."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None
