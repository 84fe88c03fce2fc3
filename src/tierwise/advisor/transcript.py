"""What an emulated advisor reads: the executor's whole transcript, as plain content.

The advisor gets no tools, so tool calls and results are rendered as text (a request with
``tool_use`` blocks and no tools is refused upstream). Each message is its own block, so a
later consult's transcript starts with the earlier one's blocks and a cache breakpoint on
the last block lets the advisor's prompt cache carry over.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from tierwise.messages import (
    ContentBlock,
    ImageBlock,
    JsonObject,
    Message,
    Request,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)


def _tool_result_text(block: ToolResultBlock) -> str:
    if isinstance(block.content, str):
        body = block.content
    else:
        body = "\n".join(
            part.text if isinstance(part, TextBlock) else f"[{part.type}]" for part in block.content
        )
    status = " (error)" if block.is_error else ""
    return f"[tool result{status} for {block.tool_use_id}]\n{body}"


def _block_text(block: ContentBlock) -> str | None:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, ToolUseBlock):
        return f"[tool call {block.id}: {block.name} {json.dumps(block.input, sort_keys=True)}]"
    if isinstance(block, ToolResultBlock):
        return _tool_result_text(block)
    if isinstance(block, ThinkingBlock):
        return None  # the executor's private reasoning stays out
    return f"[{block.type}]"


def _message_blocks(message: Message) -> Iterator[TextBlock | ImageBlock]:
    texts = [f"<{message.role}>"]
    for block in message.content:
        if isinstance(block, ImageBlock):
            yield TextBlock(text="\n".join(texts))
            yield block
            texts = []
        elif (text := _block_text(block)) is not None:
            texts.append(text)
    texts.append(f"</{message.role}>")
    yield TextBlock(text="\n".join(texts))


def _preamble(request: Request) -> str:
    parts = ["The executor's transcript follows."]
    if request.system:
        system = "\n".join(block.text for block in request.system)
        parts.append(f"<executor_system_prompt>\n{system}\n</executor_system_prompt>")
    tools = [t for t in request.tools if t.type in (None, "custom", "function")]
    if tools:
        listed = "\n".join(f"- {t.name}: {t.description or ''}".rstrip() for t in tools)
        parts.append(f"<executor_tools>\n{listed}\n</executor_tools>")
    return "\n".join(parts)


def advisor_request(
    transcript: Request,
    *,
    instructions: str,
    max_tokens: int,
    caching: JsonObject | None,
) -> Request:
    """A request asking the advisor about ``transcript`` (the executor's request so far)."""
    blocks: list[TextBlock | ImageBlock] = [TextBlock(text=_preamble(transcript))]
    for message in transcript.messages:
        blocks.extend(_message_blocks(message))
    if caching:
        last = blocks[-1].model_dump(exclude_unset=True)
        blocks[-1] = TextBlock.model_validate(last | {"type": "text", "cache_control": caching})
    ask = TextBlock(text="Give the executor your advice now.")
    content: list[ContentBlock] = [*blocks, ask]
    return Request(
        messages=[Message(role="user", content=content)],
        system=[TextBlock(text=instructions)],
        max_tokens=max_tokens,
    )
