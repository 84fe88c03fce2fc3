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
        try:
            while True:
                try:
                    async with asyncio.timeout(deadline):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self._timeout(model, what, deadline) from None
                yield event
                deadline, what = self.idle_s, "stream stalled: no event"
        finally:
            if isinstance(events, AsyncGenerator):
                await events.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()
