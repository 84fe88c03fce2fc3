"""Anthropic's own advisor tool, passed through; a ``pause_turn`` is resumed.

The request goes upstream as the client sent it (the beta header added when missing). When
the upstream pauses a long turn (``stop_reason: "pause_turn"``), the paused content is sent
back as the assistant's turn so far and the upstream continues it, up to a bound; the
client gets one response with every block and every iteration.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from tierwise.advisor.merge import concatenated, iterations_of, merged_usage
from tierwise.catalog import ModelSpec
from tierwise.messages import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    Message,
    MessageDelta,
    MessageStart,
    MessageStop,
    Request,
    Response,
    StreamEvent,
    Usage,
)
from tierwise.strategies.base import TaskContext
from tierwise.streaming import StreamAccumulator

PAUSE_TURN = "pause_turn"


def resumed(request: Request, paused: list[ContentBlock]) -> Request:
    """``request`` with the paused content as the assistant's turn so far."""
    messages = list(request.messages)
    if messages and messages[-1].role == "assistant":
        last = messages.pop()
        paused = [*last.content, *paused]
        messages.append(last.model_copy(update={"content": paused}))
    else:
        messages.append(Message(role="assistant", content=paused))
    return request.model_copy(update={"messages": messages})


async def complete_native(
    request: Request, spec: ModelSpec, task: TaskContext, max_pauses: int
) -> Response:
    """One executor turn with the native tool; resumed while it pauses (at most
    ``max_pauses`` times)."""
    responses = [await task.call_model(request, spec)]
    paused: list[ContentBlock] = []
    while responses[-1].stop_reason == PAUSE_TURN and len(responses) <= max_pauses:
        paused = [*paused, *responses[-1].content]
        responses.append(await task.call_model(resumed(request, paused), spec))
    return concatenated(responses)


class _Relay:
    """Re-numbers the blocks of successive streams into one message's event sequence."""

    def __init__(self) -> None:
        self.offset = 0
        self.started = False
        self.usages: list[Usage] = []
        self.accumulator = StreamAccumulator()

    def events(self, event: StreamEvent) -> list[StreamEvent]:
        """What to pass on now; ``message_delta`` and ``message_stop`` are held back."""
        self.accumulator.feed(event)
        if isinstance(event, MessageStart):
            first, self.started = not self.started, True
            return [event] if first else []
        if isinstance(event, BlockStart | BlockDelta | BlockStop):
            return [event.model_copy(update={"index": event.index + self.offset})]
        return []

    def next_stream(self) -> Response:
        """The stream that just ended, as a response; later blocks are numbered after it."""
        response = self.accumulator.response()
        self.offset += len(response.content)
        self.usages.append(response.usage)
        self.accumulator = StreamAccumulator()
        return response


async def stream_native(
    request: Request, spec: ModelSpec, task: TaskContext, max_pauses: int
) -> AsyncGenerator[StreamEvent]:
    """:func:`complete_native` as one event stream: each resumed stream continues the first
    one's block numbering, and the final ``message_delta`` carries the merged usage."""
    relay = _Relay()
    paused: list[ContentBlock] = []
    current = request
    for attempt in range(max_pauses + 1):
        async with aclosing(task.stream_model(current, spec)) as events:
            async for event in events:
                for passed in relay.events(event):
                    yield passed
        response = relay.next_stream()
        if response.stop_reason != PAUSE_TURN or attempt == max_pauses:
            break
        paused = [*paused, *response.content]
        current = resumed(request, paused)
    iterations = [it for usage in relay.usages for it in iterations_of(usage)]
    usage = relay.usages[0] if len(relay.usages) == 1 else merged_usage(iterations, relay.usages)
    yield MessageDelta(
        stop_reason=response.stop_reason, stop_sequence=response.stop_sequence, usage=usage
    )
    yield MessageStop()
