"""OpenAI Chat Completions streaming: SSE framing and ``chat.completion.chunk`` <-> events.

The stateful halves of :mod:`tierwise.wire.openai`, which holds the request, response and
usage translation these build on. :class:`SSEParser` and :func:`sse_encode` read and write
the Server-Sent Events framing (a stream ends with :data:`SSE_DONE`);
:class:`OpenAIStreamDecoder` turns a host's chunks into canonical stream events, and
:class:`OpenAIStreamEncoder` turns canonical events into chunks for OpenAI clients. The same
format choices apply as in :mod:`tierwise.wire.openai`: only choice 0 is read, and a refusal
is decoded as text with stop reason ``refusal`` and encoded as content with finish reason
``content_filter``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal, NamedTuple

from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    JsonObject,
    MessageDelta,
    MessageStart,
    MessageStop,
    Response,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
    Usage,
)
from tierwise.wire.openai import (
    WireFormatError,
    _describe,
    _dump_json,
    _finish_reason,
    _new_call_id,
    _stop_reason,
    usage_from_openai,
    usage_to_openai,
)

SSE_DONE = b"data: [DONE]\n\n"
"""The terminator of a Chat Completions event stream."""


def sse_encode(chunk: JsonObject) -> bytes:
    """One Server-Sent Event carrying ``chunk``; end the stream with :data:`SSE_DONE`."""
    return b"data: " + _dump_json(chunk).encode() + b"\n\n"


class SSEEvent(NamedTuple):
    """One Server-Sent Event: its ``event:`` name (``None`` when unnamed) and its data."""

    event: str | None
    data: str


class SSEParser:
    """Incremental Server-Sent Events parser: feed lines (or raw body bytes), get events.

    An event without ``data`` is skipped; ``id:`` and ``retry:`` fields are ignored.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._partial = b""

    def feed(self, line: str) -> str | None:
        """The event's data when ``line`` (without its newline) ends an event, else ``None``."""
        event = self.feed_line(line)
        return None if event is None else event.data

    def feed_line(self, line: str) -> SSEEvent | None:
        """The event ``line`` (without its newline) ends, else ``None``."""
        if not line:
            data, name = self._data, self._event
            self._data, self._event = [], None
            return SSEEvent(name, "\n".join(data)) if data else None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        elif field == "event":
            self._event = value.removeprefix(" ")
        return None

    def feed_bytes(self, chunk: bytes) -> list[SSEEvent]:
        """The events that ``chunk``, the next bytes of a UTF-8 body, completes (lines end in
        LF or CRLF; a line split across chunks waits for its end)."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        events = []
        for raw in lines:
            event = self.feed_line(raw.removesuffix(b"\r").decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        return events


class OpenAIStreamDecoder:
    """Turns ``chat.completion.chunk`` dicts into canonical stream events.

    Feed chunks in order to :meth:`feed`; call :meth:`finish` at ``[DONE]``. Only choice 0
    is read. Tool-call fragments must arrive one call after another, as hosts send them.
    """

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id
        self._started = False
        self._open: Literal["text", "tool"] | None = None
        self._index = -1
        self._tool_blocks: dict[int, int] = {}
        self._finish: str | None = None
        self._refusal = False
        self._usage: Usage | None = None

    def feed(self, chunk: JsonObject) -> list[StreamEvent]:
        """The events one chunk carries (raises :class:`WireFormatError` if it is malformed)."""
        try:
            return list(self._feed(chunk))
        except WireFormatError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise WireFormatError(f"malformed stream chunk: {_describe(exc)}") from None

    def finish(self) -> list[StreamEvent]:
        """The closing events; raises :class:`WireFormatError` if the stream was incomplete."""
        if not self._started:
            raise WireFormatError("stream ended before its first chunk")
        if self._finish is None:
            raise WireFormatError("stream ended without a finish_reason")
        stop = "refusal" if self._refusal else _stop_reason(self._finish)
        final = MessageDelta(stop_reason=stop, usage=self._usage or Usage(unreported=True))
        return [*self._close(), final, MessageStop()]

    def _feed(self, chunk: JsonObject) -> Iterator[StreamEvent]:
        if not self._started:
            self._started = True
            message = Response(id=chunk["id"], model=self._model_id)
            upstream = {"upstream_model": chunk.get("model")}
            yield MessageStart(message=message.model_copy(update=upstream))
        if chunk.get("usage"):
            self._usage = usage_from_openai(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                yield from self._choice(choice)

    def _choice(self, choice: JsonObject) -> Iterator[StreamEvent]:
        delta = choice.get("delta") or {}
        yield from self._text(delta.get("content"))
        if delta.get("refusal"):
            self._refusal = True
            yield from self._text(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            yield from self._tool_call(call)
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            yield from self._close()

    def _text(self, text: str | None) -> Iterator[StreamEvent]:
        if not text:
            return
        if self._open != "text":
            yield from self._close()
            yield self._start(TextBlock(text=""), "text")
        yield BlockDelta(index=self._index, delta={"type": "text_delta", "text": text})

    def _tool_call(self, call: JsonObject) -> Iterator[StreamEvent]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tool_blocks:
            yield from self._close()
            block = ToolUseBlock(id=call.get("id") or _new_call_id(), name=function["name"])
            yield self._start(block, "tool")
            self._tool_blocks[position] = self._index
        elif self._tool_blocks[position] != self._index or self._open != "tool":
            raise WireFormatError("tool call fragments arrived interleaved")
        if arguments := function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": arguments}
            yield BlockDelta(index=self._index, delta=delta)

    def _start(self, block: TextBlock | ToolUseBlock, kind: Literal["text", "tool"]) -> BlockStart:
        self._index += 1
        self._open = kind
        return BlockStart(index=self._index, block=block)

    def _close(self) -> Iterator[StreamEvent]:
        if self._open is not None:
            self._open = None
            yield BlockStop(index=self._index)


class OpenAIStreamEncoder:
    """Turns canonical stream events into ``chat.completion.chunk`` dicts for OpenAI clients.

    Text and tool-use blocks are sent; thinking and server-tool blocks are left out. With
    ``include_usage`` (the client's ``stream_options``) a usage chunk follows the last one.
    """

    def __init__(
        self, model_name: str, *, include_usage: bool = True, created: int | None = None
    ) -> None:
        self._model = model_name
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = ""
        self._tools: dict[int, int] = {}
        self._args_sent: set[int] = set()
        self._usage = Usage()

    def encode(self, event: StreamEvent) -> list[JsonObject]:
        """The chunks (often none, at most one or two) that ``event`` becomes."""
        chunks: list[JsonObject] = []
        match event:
            case MessageStart():
                self._id = event.message.id
                chunks = [self._chunk({"role": "assistant", "content": "", "refusal": None})]
            case BlockStart():
                chunks = self._block_start(event.index, event.block)
            case BlockDelta():
                chunks = self._block_delta(event.index, event.delta)
            case BlockStop():
                chunks = self._block_stop(event.index)
            case MessageDelta():
                self._usage = event.usage
                chunks = [self._chunk({}, _finish_reason(event.stop_reason))]
            case MessageStop() if self._include_usage:
                chunks = [self._usage_chunk()]
        return chunks

    def _head(self) -> JsonObject:
        head = {"id": self._id, "object": "chat.completion.chunk", "created": self._created}
        return {**head, "model": self._model}

    def _chunk(self, delta: JsonObject, finish: str | None = None) -> JsonObject:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**self._head(), "choices": [choice]}
        return chunk | {"usage": None} if self._include_usage else chunk

    def _usage_chunk(self) -> JsonObject:
        return {**self._head(), "choices": [], "usage": usage_to_openai(self._usage)}

    def _block_start(self, index: int, block: ContentBlock) -> list[JsonObject]:
        if isinstance(block, TextBlock):
            return [self._chunk({"content": block.text})] if block.text else []
        if not isinstance(block, ToolUseBlock):
            return []
        self._tools[index] = len(self._tools)
        arguments = _dump_json(block.input) if block.input else ""
        if arguments:
            self._args_sent.add(index)
        function = {"name": block.name, "arguments": arguments}
        call = {"index": self._tools[index], "id": block.id, "type": "function"}
        return [self._chunk({"tool_calls": [{**call, "function": function}]})]

    def _block_delta(self, index: int, delta: JsonObject) -> list[JsonObject]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and index in self._tools:
            return self._arguments(index, delta.get("partial_json") or "")
        return []

    def _block_stop(self, index: int) -> list[JsonObject]:
        if index in self._tools and index not in self._args_sent:
            return self._arguments(index, "{}")
        return []

    def _arguments(self, index: int, fragment: str) -> list[JsonObject]:
        if not fragment:
            return []
        self._args_sent.add(index)
        call = {"index": self._tools[index], "function": {"arguments": fragment}}
        return [self._chunk({"tool_calls": [call]})]
