"""A request whose client hangs up before its answer is stopped, not run on for nobody.

uvicorn does not cancel a request when its client disconnects, and Starlette watches for a
disconnect only while it sends a streaming body. So until a response starts — the whole of
a non-streaming request, the wait for a stream's first event — :func:`until_disconnect`
listens on ``receive`` (the body already read) in a small task of its own. If the client
goes first, the request's task is cancelled: the engine records the call it cut off (cost
unknown, as an abandoned stream's) and the task's error outcome, then
:class:`ClientDisconnectedError` is raised, and the request ends as any failed one does —
its budget hold settled to its calls at once (:meth:`Trace.finish`), not held to the TTL.
A cancellation from outside (the drain deadline) goes on as it came, after the same
recording; the route settles the hold on its way out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.types import Receive

from tierwise.errors import ClientDisconnectedError

T = TypeVar("T")


WATCH_AFTER_S = 0.05
"""Watching starts this long into a request: a request answered sooner costs a timer, not a
listener task (~30 µs); a client gone before then is seen at once when watching starts (the
server answers ``http.disconnect`` from then on)."""


class _Watch:
    """Listens for the client's disconnect and cancels the request's task when it comes."""

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self._listener: asyncio.Task[None] | None = None
        self.fired = False

    def start(self) -> None:
        self._listener = asyncio.ensure_future(self._listen())

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass  # not for us
        self.fired = True
        self._task.cancel("the client disconnected")


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result; :class:`ClientDisconnectedError` if the client disconnects first
    (``work`` is cancelled in this task: it records what it cut off on its way out)."""
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(receive, task)
    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if not watch.fired or task.cancelling() > 1:
            raise  # cancelled from outside (the drain deadline), not (only) by the watch
        task.uncancel()
        raise ClientDisconnectedError("the client disconnected before its answer") from None
    finally:
        timer.cancel()
        watch.stop()
