"""The timeout layer: first-token and idle-chunk deadlines around any provider.

The connect timeout is the HTTP client's (``connect_timeout_s``, set where the SDK client is
built). This layer adds the two a byte-level read timeout cannot express: how long the first
stream event (or a whole non-streamed answer) may take, and how long a started stream may go
without an event — an upstream that keeps the socket alive with pings but sends nothing is
stalled all the same. A deadline that passes raises :class:`UpstreamTimeoutError`, which the
retry layer (outside this one) and the failover layer (in the task context) understand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from tierwise.catalog import ModelSpec
from tierwise.errors import UpstreamTimeoutError
from tierwise.messages import Request, Response, StreamEvent
from tierwise.providers.base import Provider


class TimeoutProvider:
    """Wraps ``inner`` with a first-token and an idle-chunk deadline (seconds)."""

    def __init__(self, inner: Provider, *, first_token_s: float, idle_s: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.first_token_s = first_token_s
        self.idle_s = idle_s

    def _timeout(self, model: ModelSpec, what: str, seconds: float) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"{what} within {seconds:g}s", provider=self.name, model=model.name
        )

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        try:
            async with asyncio.timeout(self.first_token_s):
                return await self.inner.complete(request, model)
        except TimeoutError:
            raise self._timeout(model, "no answer", self.first_token_s) from None

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        events = aiter(self.inner.stream(request, model))
        deadline, what = self.first_token_s, "no first token"
        watch = _Deadline(asyncio.get_running_loop())
        try:
            while True:
                watch.start(deadline)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watch.expired():  # ours alone, not (also) a cancellation from outside
                        raise self._timeout(model, what, deadline) from None
                    raise
                finally:
                    watch.stop()
                yield event
                deadline, what = self.idle_s, "stream stalled: no event"
        finally:
            watch.close()
            if isinstance(events, AsyncGenerator):
                await events.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Deadline:
    """Cancels the task waiting in :meth:`start` .. :meth:`stop` once the wait outlasts its
    seconds, as ``asyncio.timeout`` around each wait would, with one timer re-armed lazily
    instead of a timer made and cancelled per stream event (5% of a streamed request's CPU
    under py-spy): a timer that fires while no wait is due only re-arms or goes away."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = 0.0
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    def start(self, seconds: float) -> None:
        self._due = self._loop.time() + seconds
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task else 0
        self._fired = False
        if self._handle is not None and self._handle.when() > self._due:
            self._handle.cancel()  # a shorter deadline than the one armed
            self._handle = None
        if self._handle is None:
            self._handle = self._loop.call_at(self._due, self._check)

    def stop(self) -> None:
        self._task = None

    def expired(self) -> bool:
        """After a ``CancelledError`` in the wait: whether this deadline caused it alone (the
        cancellation is then taken back, as ``asyncio.timeout`` does)."""
        task = asyncio.current_task()
        return self._fired and task is not None and task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._task is None or self._fired:
            return  # nothing waits: the next start() arms a timer again
        if self._loop.time() < self._due:
            self._handle = self._loop.call_at(self._due, self._check)
            return
        self._fired = True
        self._task.cancel()
