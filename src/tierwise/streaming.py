"""Folding a canonical event stream back into one :class:`Response`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Iterator
from typing import Any

from pydantic import TypeAdapter

from tierwise.errors import MalformedResponseError
from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    MessageDelta,
    MessageStart,
    MessageStop,
    Response,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)

_BLOCK = TypeAdapter[ContentBlock](ContentBlock)


class StreamAccumulator:
    """Feed events in order; :meth:`response` gives the message they describe."""

    def __init__(self) -> None:
        self._message: Response | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._partial_json: dict[int, str] = {}
        self._texts: dict[int, list[str]] = {}
        """Text deltas per block, joined once at the end (not copied on every delta)."""
        self._final: MessageDelta | None = None

    def feed(self, event: StreamEvent) -> None:
        if isinstance(event, BlockDelta):  # nearly every event: first
            self._apply_delta(event.index, event.delta)
        elif isinstance(event, MessageStart):
            self._message = event.message
        elif isinstance(event, BlockStart):
            self._blocks[event.index] = event.block.model_dump(exclude_none=True)
        elif isinstance(event, BlockStop):
            self._close_block(event.index)
        elif isinstance(event, MessageDelta):
            self._final = event

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            self._texts.setdefault(index, []).append(delta.get("text", ""))
        elif kind == "input_json_delta":
            self._partial_json[index] = self._partial_json.get(index, "") + delta.get(
                "partial_json", ""
            )
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _close_block(self, index: int) -> None:
        raw = self._partial_json.pop(index, None)
        if raw is None or index not in self._blocks:
            return
        try:
            self._blocks[index]["input"] = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise MalformedResponseError(
                f"tool input in stream is not JSON: {exc}", provider="stream"
            ) from None

    def response(self) -> Response:
        if self._message is None:
            raise MalformedResponseError("stream ended before message_start", provider="stream")
        for index, parts in self._texts.items():
            block = self._blocks[index]
            block["text"] = block.get("text", "") + "".join(parts)
        self._texts = {}
        content = [_BLOCK.validate_python(self._blocks[i]) for i in sorted(self._blocks)]
        update: dict[str, Any] = {"content": content}
        if self._final is not None:
            update |= {
                "stop_reason": self._final.stop_reason,
                "stop_sequence": self._final.stop_sequence,
                "usage": self._final.usage,
            }
        return self._message.model_copy(update=update)


async def collect(events: AsyncIterable[StreamEvent]) -> Response:
    """Consume a whole stream and return the response it describes."""
    accumulator = StreamAccumulator()
    async for event in events:
        accumulator.feed(event)
    return accumulator.response()


def _opening(block: ContentBlock) -> tuple[ContentBlock, list[dict[str, Any]]]:
    """A block as it opens in a stream (empty) and the deltas that fill it."""
    if isinstance(block, TextBlock):
        return block.model_copy(update={"text": ""}), [{"type": "text_delta", "text": block.text}]
    if isinstance(block, ToolUseBlock):
        partial = json.dumps(block.input)
        return block.model_copy(update={"input": {}}), [
            {"type": "input_json_delta", "partial_json": partial}
        ]
    if isinstance(block, ThinkingBlock):
        deltas = [{"type": "thinking_delta", "thinking": block.thinking}]
        if block.signature is not None:
            deltas.append({"type": "signature_delta", "signature": block.signature})
        return block.model_copy(update={"thinking": "", "signature": None}), deltas
    return block, []


def block_events(index: int, block: ContentBlock) -> Iterator[StreamEvent]:
    """The events that stream the whole ``block`` at ``index``: start, deltas, stop."""
    opening, deltas = _opening(block)
    yield BlockStart(index=index, block=opening)
    for delta in deltas:
        yield BlockDelta(index=index, delta=delta)
    yield BlockStop(index=index)


def events_from_response(response: Response) -> Iterator[StreamEvent]:
    """The event sequence a streaming upstream would have sent for ``response``."""
    yield MessageStart(message=response.model_copy(update={"content": [], "stop_reason": None}))
    for index, block in enumerate(response.content):
        yield from block_events(index, block)
    yield MessageDelta(
        stop_reason=response.stop_reason,
        stop_sequence=response.stop_sequence,
        usage=response.usage,
    )
    yield MessageStop()
