"""A request whose client hangs up before its answer is stopped, not run on for nobody.

uvicorn does not cancel a request when its client disconnects, and Starlette watches for a
disconnect only while it sends a streaming body. So until a response starts — the whole of
a non-streaming request, the wait for a stream's first event — :func:`until_disconnect`
runs the work in a task of its own and listens on ``receive`` (the body already read). If
the client goes first, the work is cancelled: the engine records the call it cut off (cost
unknown, as an abandoned stream's) and the task's error outcome, then
:class:`ClientDisconnectedError` is raised, and the request ends as any failed one does —
its budget hold settled to its calls at once (:meth:`Trace.finish`), not held to the TTL.
A cancellation from outside (the drain deadline) stops the work the same way, then goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

from tierwise.errors import ClientDisconnectedError

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    """Return when the client disconnects (any other message is not for us: ignored)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stop(work: asyncio.Future[Any]) -> None:
    """Cancel ``work`` and let it record what it cut off."""
    work.cancel()
    await asyncio.wait({work})


async def until_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; :class:`ClientDisconnectedError` if the client disconnects first."""
    running = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({running, listener}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(running)
        raise
    finally:
        listener.cancel()
    if not running.done():
        await _stop(running)
        raise ClientDisconnectedError("the client disconnected before its answer")
    return running.result()
