"""The retry layer: which errors retry, retry-after honoured, streams only before byte one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import (
    BadRequestError,
    ProviderError,
    RateLimitError,
    ServerError,
    UpstreamConnectionError,
)
from tierwise.messages import Request, Response, StreamEvent, TextBlock
from tierwise.providers.retry import RetryingProvider
from tierwise.streaming import collect, events_from_response


def _response(spec: ModelSpec) -> Response:
    return Response(
        id="msg_1", model=spec.id, content=[TextBlock(text="ok")], stop_reason="end_turn"
    )


class ScriptedProvider:
    """Fails with the scripted errors in turn, then answers."""

    name = "scripted"

    def __init__(self, failures: list[ProviderError], fail_mid_stream: bool = False) -> None:
        self.failures = failures
        self.fail_mid_stream = fail_mid_stream
        self.attempts = 0

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        return _response(model)

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        self.attempts += 1
        if self.failures and not self.fail_mid_stream:
            raise self.failures.pop(0)
        for index, event in enumerate(events_from_response(_response(model))):
            if index == 2 and self.failures:
                raise self.failures.pop(0)
            yield event

    async def aclose(self) -> None:
        return None


class SleepLog:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _wrap(inner: ScriptedProvider, **kw) -> tuple[RetryingProvider, SleepLog]:
    sleep = SleepLog()
    return RetryingProvider(inner, sleep=sleep, **kw), sleep


@pytest.fixture
def haiku(catalog: Catalog) -> ModelSpec:
    return catalog.get("anthropic:claude-haiku-4-5")


async def test_rate_limit_honours_retry_after(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([RateLimitError("slow down", provider="p", retry_after=1.5)])
    provider, sleep = _wrap(inner)
    response = await provider.complete(Request.from_prompt("hi"), haiku)
    assert response.text() == "ok"
    assert inner.attempts == 2
    assert sleep.waits == [1.5]


async def test_server_and_connection_errors_retry_with_backoff(haiku: ModelSpec) -> None:
    inner = ScriptedProvider(
        [
            ServerError("boom", provider="p", status=503),
            UpstreamConnectionError("reset", provider="p"),
        ]
    )
    provider, sleep = _wrap(inner)
    await provider.complete(Request.from_prompt("hi"), haiku)
    assert inner.attempts == 3
    assert len(sleep.waits) == 2 and all(0 < w <= 8 for w in sleep.waits)


async def test_client_errors_are_not_retried(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([BadRequestError("bad", provider="p", status=400)])
    provider, _ = _wrap(inner)
    with pytest.raises(BadRequestError):
        await provider.complete(Request.from_prompt("hi"), haiku)
    assert inner.attempts == 1


async def test_retry_after_beyond_the_cap_fails_fast(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([RateLimitError("later", provider="p", retry_after=3600)])
    provider, sleep = _wrap(inner, max_wait_s=30)
    with pytest.raises(RateLimitError) as info:
        await provider.complete(Request.from_prompt("hi"), haiku)
    assert info.value.retry_after == 3600
    assert inner.attempts == 1 and sleep.waits == []


async def test_retries_are_bounded(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([ServerError("x", provider="p", status=500) for _ in range(5)])
    provider, _ = _wrap(inner, max_retries=2)
    with pytest.raises(ServerError):
        await provider.complete(Request.from_prompt("hi"), haiku)
    assert inner.attempts == 3


async def test_stream_retries_before_first_event(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([ServerError("x", provider="p", status=502)])
    provider, _ = _wrap(inner)
    response = await collect(provider.stream(Request.from_prompt("hi"), haiku))
    assert response.text() == "ok" and inner.attempts == 2


async def test_stream_failure_after_first_event_is_not_retried(haiku: ModelSpec) -> None:
    inner = ScriptedProvider([ServerError("cut", provider="p", status=500)], fail_mid_stream=True)
    provider, _ = _wrap(inner)
    with pytest.raises(ServerError):
        await collect(provider.stream(Request.from_prompt("hi"), haiku))
    assert inner.attempts == 1
