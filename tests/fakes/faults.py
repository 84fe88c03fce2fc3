"""Faulty replies for either fake upstream, served on loopback (:mod:`tests.fakes.loopback`).

Each builder returns a reply for ``FakeAnthropic.reply`` or ``FakeOpenAI.reply``: a TCP
reset, an upstream that says nothing, an SSE body sent in timed pieces that may stall, be
cut or reset midway. The bodies themselves (real wire events) come from the fakes' own
builders, e.g. ``anthropic_upstream.sse_body(stream_events(text_message()))``. These replies
need the loopback server: the in-process ``MockTransport`` reads bodies synchronously.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import httpx2

from tests.fakes.loopback import Cut, Reset

Reply = Callable[[Any, str], httpx2.Response]
Ending = Literal["complete", "cut", "reset", "stall"]
SSE = "text/event-stream; charset=utf-8"

RELEASE = threading.Event()
"""Set to end every pause at once (a test's teardown), so no server thread sleeps on."""


def pause(seconds: float) -> None:
    """Sleep ``seconds``, or less if :data:`RELEASE` is set."""
    RELEASE.wait(seconds)


def reset() -> Reply:
    """Reset the connection before answering (the client sees ECONNRESET)."""

    def build(_: Any, request_id: str) -> httpx2.Response:
        raise Reset

    return build


def silent(seconds: float) -> Reply:
    """Accept the request and say nothing for ``seconds`` (then reset)."""

    def build(_: Any, request_id: str) -> httpx2.Response:
        pause(seconds)
        raise Reset

    return build


def _pieces(
    parts: Sequence[bytes], first_delay: float, gap: float, ending: Ending, stall_s: float
) -> Iterator[bytes]:
    pause(first_delay)
    for index, part in enumerate(parts):
        if index:
            pause(gap)
        yield part
    if ending == "stall":
        pause(stall_s)
        raise Cut
    if ending == "cut":
        raise Cut
    if ending == "reset":
        raise Reset


def paced(
    parts: Sequence[bytes],
    *,
    first_delay: float = 0.0,
    gap: float = 0.0,
    ending: Ending = "complete",
    stall_s: float = 5.0,
    request_id_header: str = "request-id",
) -> Reply:
    """A 200 SSE reply sending ``parts`` (already-encoded events) one by one: the first after
    ``first_delay``, the rest ``gap`` apart, then ``ending`` (``stall``: silence for
    ``stall_s``, then cut)."""

    def build(_: Any, request_id: str) -> httpx2.Response:
        body = _pieces(parts, first_delay, gap, ending, stall_s)
        headers = {"content-type": SSE, request_id_header: request_id}
        return httpx2.Response(200, content=body, headers=headers)

    return build


def split_events(body: bytes) -> list[bytes]:
    """An SSE body split into its events (each keeps its blank-line terminator)."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]
