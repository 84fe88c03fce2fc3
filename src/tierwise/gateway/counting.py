"""``count_tokens`` without an upstream call: an estimate from the request's own content."""

from __future__ import annotations

import json

from tierwise.messages import (
    ContentBlock,
    ImageBlock,
    Request,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tierwise.tokens import estimate_tokens

IMAGE_TOKENS = 1600
"""A flat rate per image: Anthropic bills about width x height / 750, ~1600 at 1.15 MP."""


def _block_text(block: ContentBlock) -> str:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, ThinkingBlock):
        return block.thinking
    if isinstance(block, ToolUseBlock):
        return f"{block.name} {json.dumps(block.input)}"
    return json.dumps(block.model_dump(exclude={"type"}))


def _block_tokens(block: ContentBlock) -> int:
    if isinstance(block, ImageBlock):
        return IMAGE_TOKENS
    if isinstance(block, ToolResultBlock):
        parts = block.content
        return estimate_tokens(parts) if isinstance(parts, str) else sum(map(_block_tokens, parts))
    return estimate_tokens(_block_text(block))


def estimate_request_tokens(request: Request) -> int:
    """Input tokens of ``request``: system, messages and tool definitions."""
    blocks = [*request.system, *(b for m in request.messages for b in m.content)]
    tools = [t.model_dump(exclude_none=True) for t in request.tools]
    return sum(_block_tokens(b) for b in blocks) + (
        estimate_tokens(json.dumps(tools)) if tools else 0
    )
