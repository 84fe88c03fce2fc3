"""One emulated executor step, relayed live into the single message the client streams.

The step's blocks pass on as they arrive, numbered after the blocks the client already has.
From the executor's call of the advisor function on, the step's new blocks are held back:
that call becomes ``server_tool_use`` + ``advisor_tool_result`` once the consult is done,
and what the executor wrote after it must follow those. Only the first step's
``message_start`` passes; the turn ends with its own ``message_delta`` and ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    MessageStart,
    Response,
    StreamEvent,
    ToolUseBlock,
)
from tierwise.streaming import StreamAccumulator, block_events


class LiveStep:
    """Feed one step's events in order; :meth:`response` is the step's whole response."""

    def __init__(self, advisor: str, base: int, model: str | None) -> None:
        self.advisor = advisor
        """The name of the advisor function the executor calls."""
        self.base = base
        """How many blocks the client's message already has."""
        self.model = model
        """The model the client's ``message_start`` names; ``None``: not the first step."""
        self.sent = 0
        """How many of the step's blocks were passed on live."""
        self._held = False
        self._indices: dict[int, int] = {}
        self._accumulator = StreamAccumulator()

    def feed(self, event: StreamEvent) -> list[StreamEvent]:
        """What to pass on to the client now."""
        self._accumulator.feed(event)
        if isinstance(event, BlockDelta | BlockStop):
            index = self._indices.get(event.index)
            return [] if index is None else [event.model_copy(update={"index": index})]
        if isinstance(event, BlockStart):
            return self._started(event)
        if isinstance(event, MessageStart) and self.model is not None:
            message = event.message.model_copy(update={"model": self.model})
            return [event.model_copy(update={"message": message})]
        return []

    def _started(self, event: BlockStart) -> list[StreamEvent]:
        block = event.block
        self._held = self._held or (isinstance(block, ToolUseBlock) and block.name == self.advisor)
        if self._held:
            return []
        index = self.base + self.sent
        self._indices[event.index] = index
        self.sent += 1
        return [event.model_copy(update={"index": index})]

    def response(self) -> Response:
        return self._accumulator.response()

    def rest(self, content: Sequence[ContentBlock]) -> Iterator[StreamEvent]:
        """The events for the blocks of the client's ``content`` this step did not pass on
        live (the consults and the blocks held back)."""
        start = self.base + self.sent
        for index, block in enumerate(content[start:], start):
            yield from block_events(index, block)
