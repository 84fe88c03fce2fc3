"""The retry layer: a wrapper around any provider.

Only retryable errors are retried (connection errors, 408/409/429/5xx; see
:attr:`tierwise.errors.ProviderError.retryable`). A ``retry-after`` from the upstream is
honoured; when it asks for longer than ``max_wait_s`` the error is raised at once, so the
caller can fall back to another model instead of sleeping. A stream is retried only before
its first event; after that a failure is the caller's to report. Moving to another model is
not this layer's business. An attempt retried that the upstream may still bill (a timeout
once the request was sent) is handed to the caller to record (:func:`noting_retries`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from tierwise.catalog import ModelSpec
from tierwise.errors import ProviderError, RateLimitError
from tierwise.messages import Request, Response, StreamEvent
from tierwise.providers.base import Provider

Sleep = Callable[[float], Awaitable[None]]

_RETRIED: ContextVar[list[ProviderError] | None] = ContextVar("tierwise_retried", default=None)


@contextmanager
def noting_retries(into: list[ProviderError] | None) -> Iterator[None]:
    """While in the block, attempts the retry layer gives up on and retries, and that the
    upstream may bill (:attr:`~tierwise.errors.ProviderError.may_be_billed`: a request that
    timed out once sent), are appended to ``into`` — for the caller to record, since no
    response will tell of them. ``None``: not noted."""
    token = _RETRIED.set(into)
    try:
        yield
    finally:
        _RETRIED.reset(token)


def _note_retried(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    noted = _RETRIED.get()
    if noted is not None and isinstance(exc, ProviderError) and exc.may_be_billed:
        noted.append(exc)


class RetryingProvider:
    """Wraps ``inner`` with bounded retries that honour ``retry-after``."""

    def __init__(
        self,
        inner: Provider,
        *,
        max_retries: int = 2,
        max_wait_s: float = 60.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_retries = max_retries
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=8.0)

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        wait = exc.retry_after if isinstance(exc, RateLimitError) else None
        return wait is None or wait <= self.max_wait_s

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception(self._should_retry),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=_note_retried,
            reraise=True,
        )

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        async for attempt in self._retrying():
            with attempt:
                return await self.inner.complete(request, model)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        events, first = await self._open_stream(request, model)
        yield first
        async for event in events:
            yield event

    async def _open_stream(
        self, request: Request, model: ModelSpec
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        async for attempt in self._retrying():
            with attempt:
                events = aiter(self.inner.stream(request, model))
                return events, await anext(events)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def aclose(self) -> None:
        await self.inner.aclose()
