"""The advisor tool's shape on the wire and the transcript rewrites both modes need.

Anthropic's ``advisor_20260301`` server tool (beta ``advisor-tool-2026-03-01``)::

    {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7",
     "max_uses": 3, "max_tokens": 2048, "caching": {"type": "ephemeral", "ttl": "1h"}}

A consult shows in the assistant's content as a ``server_tool_use`` block (empty ``input``)
followed by an ``advisor_tool_result`` whose ``content`` is an ``advisor_result`` (text), an
``advisor_redacted_result`` (encrypted, kept verbatim) or an ``advisor_tool_result_error``
with an ``error_code``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tierwise.errors import InvalidRequestError
from tierwise.messages import (
    AdvisorToolResultBlock,
    ContentBlock,
    JsonObject,
    Message,
    Request,
    ServerToolUseBlock,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)

ADVISOR_TOOL_TYPE = "advisor_20260301"
ADVISOR_BETA = "advisor-tool-2026-03-01"
MAX_USES = 100
"""The most consults a request's advisor tool may allow (each is reserved in a key's budget)."""
BETA_HEADER = "anthropic-beta"
ERROR_CODES = frozenset(
    {
        "max_uses_exceeded",
        "too_many_requests",
        "overloaded",
        "prompt_too_long",
        "execution_time_exceeded",
        "unavailable",
    }
)


class AdvisorTool(BaseModel):
    """The fields of an ``advisor_20260301`` tool tierwise acts on."""

    model_config = ConfigDict(extra="allow")

    type: str = ADVISOR_TOOL_TYPE
    name: str = "advisor"
    model: str
    max_uses: int | None = Field(default=None, ge=0, le=MAX_USES)
    max_tokens: int | None = Field(default=None, ge=1)
    caching: JsonObject | None = None

    def as_tool(self) -> Tool:
        return Tool.model_validate(self.model_dump(exclude_none=True))


def find_advisor_tool(request: Request) -> AdvisorTool | None:
    """The request's advisor tool, or ``None``; InvalidRequestError when it is malformed."""
    for tool in request.tools:
        if tool.type == ADVISOR_TOOL_TYPE:
            try:
                return AdvisorTool.model_validate(tool.model_dump(exclude_none=True))
            except ValidationError as exc:
                where = ".".join(str(p) for p in exc.errors()[0]["loc"])
                message = f"advisor tool: {where}: {exc.errors()[0]['msg']}"
                raise InvalidRequestError(message) from None
    return None


def has_advisor_blocks(request: Request) -> bool:
    return any(
        isinstance(block, AdvisorToolResultBlock) for m in request.messages for block in m.content
    )


def result_kind(block: AdvisorToolResultBlock) -> str:
    """``advisor_result``, ``advisor_redacted_result`` or the error's code."""
    kind = str(block.content.get("type", ""))
    if kind == "advisor_tool_result_error":
        return str(block.content.get("error_code", "unavailable"))
    return kind


def is_error(block: AdvisorToolResultBlock) -> bool:
    return block.content.get("type") == "advisor_tool_result_error"


def error_result(code: str) -> JsonObject:
    return {"type": "advisor_tool_result_error", "error_code": code}


def advice_result(text: str, stop_reason: str | None) -> JsonObject:
    return {"type": "advisor_result", "text": text, "stop_reason": stop_reason}


def new_tool_use_id() -> str:
    """An id in Anthropic's ``srvtoolu_`` style, valid as a tool call id everywhere."""
    return f"srvtoolu_{uuid.uuid4().hex[:24]}"


# --- beta header -----------------------------------------------------------------------------


def _betas(headers: dict[str, str]) -> list[str]:
    raw = next((v for k, v in headers.items() if k.lower() == BETA_HEADER), "")
    return [beta.strip() for beta in raw.split(",") if beta.strip()]


def _with_betas(headers: dict[str, str], betas: Sequence[str]) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if k.lower() != BETA_HEADER}
    return kept | ({BETA_HEADER: ",".join(betas)} if betas else {})


def with_beta(request: Request) -> Request:
    """``request`` whose ``anthropic-beta`` header names the advisor beta."""
    betas = _betas(request.headers)
    if ADVISOR_BETA in betas:
        return request
    headers = _with_betas(request.headers, [*betas, ADVISOR_BETA])
    return request.model_copy(update={"headers": headers})


def without_beta(request: Request) -> Request:
    betas = [b for b in _betas(request.headers) if b != ADVISOR_BETA]
    return request.model_copy(update={"headers": _with_betas(request.headers, betas)})


# --- transcript rewrites ---------------------------------------------------------------------


def _advisor_ids(messages: Sequence[Message]) -> set[str]:
    return {
        block.tool_use_id
        for message in messages
        for block in message.content
        if isinstance(block, AdvisorToolResultBlock)
    }


def _is_advisor_block(block: ContentBlock, ids: set[str]) -> bool:
    if isinstance(block, AdvisorToolResultBlock):
        return True
    return isinstance(block, ServerToolUseBlock) and (block.id in ids or block.name == "advisor")


def strip_advisor(request: Request) -> Request:
    """``request`` without the advisor tool, its beta and every advisor block in its history
    (what Anthropic requires once the tool is dropped); emptied messages are dropped."""
    ids = _advisor_ids(request.messages)
    messages = []
    for message in request.messages:
        kept = [b for b in message.content if not _is_advisor_block(b, ids)]
        if kept:
            messages.append(message.model_copy(update={"content": kept}))
    tools = [t for t in request.tools if t.type != ADVISOR_TOOL_TYPE]
    choice = request.tool_choice if tools else None
    if len(messages) < len(request.messages):  # a dropped turn may leave two of one role
        messages = _merged(messages)
    update = {"messages": messages, "tools": tools, "tool_choice": choice}
    return without_beta(request.model_copy(update=update))


def _result_text(block: AdvisorToolResultBlock) -> str:
    kind = block.content.get("type")
    if kind == "advisor_result":
        return str(block.content.get("text", ""))
    if kind == "advisor_redacted_result":
        return "(the advisor's advice is not readable here)"
    return f"advisor unavailable: {result_kind(block)}"


def _split_assistant(message: Message, name: str) -> Iterator[Message]:
    """One assistant message as the executor's own tool exchange: each ``server_tool_use`` +
    ``advisor_tool_result`` pair becomes a ``tool_use`` ending an assistant message and a
    ``tool_result`` in a user message after it."""
    pending: list[ContentBlock] = []
    for block in message.content:
        if isinstance(block, ServerToolUseBlock) and block.name == name:
            pending.append(ToolUseBlock(id=block.id, name=name, input={}))
        elif isinstance(block, AdvisorToolResultBlock) and not _calls(pending, block.tool_use_id):
            pending.append(TextBlock(text=f"(advisor: {_result_text(block)})"))  # an orphan
        elif isinstance(block, AdvisorToolResultBlock):
            yield Message(role="assistant", content=pending)
            result = ToolResultBlock(tool_use_id=block.tool_use_id, content=_result_text(block))
            if is_error(block):
                result.is_error = True
            yield Message(role="user", content=[result])
            pending = []
        else:
            pending.append(block)
    if pending:
        yield message.model_copy(update={"content": pending})


def _calls(blocks: Sequence[ContentBlock], tool_use_id: str) -> bool:
    return any(isinstance(b, ToolUseBlock) and b.id == tool_use_id for b in blocks)


def as_client_tool_history(messages: Sequence[Message], name: str) -> list[Message]:
    """The history with advisor consults rewritten as calls of a client tool ``name``."""
    out: list[Message] = []
    for message in messages:
        if message.role == "assistant":
            out.extend(_split_assistant(message, name))
        else:
            out.append(message)
    return _merged(out)


def _merged(messages: Sequence[Message]) -> list[Message]:
    """Consecutive messages of one role joined (tool results stay first in a user turn)."""
    out: list[Message] = []
    for message in messages:
        if out and out[-1].role == message.role:
            joined = [*out[-1].content, *message.content]
            out[-1] = out[-1].model_copy(update={"content": joined})
        else:
            out.append(message)
    return out


def advisor_function(name: str) -> Tool:
    """The client tool an emulated executor calls to consult (no arguments)."""
    return Tool(
        name=name,
        description=(
            "Consult a stronger advisor model. It takes no arguments: it reads this whole "
            "conversation and answers with guidance for your next steps."
        ),
        input_schema={"type": "object", "properties": {}},
    )
