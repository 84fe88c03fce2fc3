"""Folding a canonical event stream back into one :class:`Response`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable
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
    Response,
    StreamEvent,
)

_BLOCK = TypeAdapter[ContentBlock](ContentBlock)


class StreamAccumulator:
    """Feed events in order; :meth:`response` gives the message they describe."""

    def __init__(self) -> None:
        self._message: Response | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._partial_json: dict[int, str] = {}
        self._final: MessageDelta | None = None

    def feed(self, event: StreamEvent) -> None:
        if isinstance(event, MessageStart):
            self._message = event.message
        elif isinstance(event, BlockStart):
            self._blocks[event.index] = event.block.model_dump(exclude_none=True)
        elif isinstance(event, BlockDelta):
            self._apply_delta(event.index, event.delta)
        elif isinstance(event, BlockStop):
            self._close_block(event.index)
        elif isinstance(event, MessageDelta):
            self._final = event

    def _apply_delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
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
