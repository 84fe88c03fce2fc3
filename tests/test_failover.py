"""The fallback layer: breaker states, chains, ``?fallback=``, and the timeout layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx2
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes import openai_upstream as ofx
from tests.fakes.loopback import serve
from tierwise.catalog import ModelSpec, load_catalog
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import (
    BadRequestError,
    CircuitOpenError,
    ServerError,
    UnknownModelError,
    UpstreamTimeoutError,
)
from tierwise.failover import CircuitBreaker, Failover, FailoverSettings, failover_reason
from tierwise.ledger.store import Ledger
from tierwise.messages import MessageStart, Request, Response, StreamEvent
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.factory import layered
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.providers.retry import RetryingProvider
from tierwise.providers.timeouts import TimeoutProvider
from tierwise.streaming import collect, events_from_response

PRIMARY, FALLBACK = "anthropic:claude-haiku-4-5", "openai:gpt-4.1-mini"
POLICY = f"fixed:{PRIMARY}?fallback={FALLBACK}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_once_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown_s=30, clock=clock)
    breaker.failure()
    assert breaker.state == "closed" and breaker.wait_s() is None
    breaker.failure()
    assert breaker.state == "open" and breaker.wait_s() == 30
    clock.now += 30
    assert breaker.state == "half_open"
    assert breaker.wait_s() is None  # the probe goes
    assert breaker.wait_s() == 30  # the others wait for it
    breaker.success()
    assert breaker.state == "closed" and breaker.wait_s() is None


def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=10, clock=clock)
    breaker.failure()
    clock.now += 10
    assert breaker.wait_s() is None
    breaker.failure()
    assert breaker.state == "open" and breaker.wait_s() == 10


def test_only_consecutive_upstream_failures_open_a_circuit() -> None:
    failover = Failover(FailoverSettings(failure_threshold=2))
    down = ServerError("down", provider="anthropic", status=500)
    failover.settle(PRIMARY, down)
    failover.settle(PRIMARY, None)
    failover.settle(PRIMARY, down)
    # a 400 is the upstream answering (the request was at fault): it counts as healthy
    failover.settle(PRIMARY, BadRequestError("bad", provider="anthropic", status=400))
    failover.settle(PRIMARY, down)
    assert failover.states() == {PRIMARY: "closed"}
    failover.settle(PRIMARY, down)
    with pytest.raises(CircuitOpenError) as caught:
        failover.admit("anthropic", PRIMARY, "claude-haiku-4-5")
    assert failover_reason(caught.value) == f"failover: circuit open for anthropic:{PRIMARY[10:]}"


def test_chain_is_the_model_then_its_fallbacks_once_each() -> None:
    failover = Failover(FailoverSettings(fallbacks={PRIMARY: [FALLBACK, PRIMARY, FALLBACK]}))
    assert failover.chain(PRIMARY) == [PRIMARY, FALLBACK]
    assert failover.chain(PRIMARY, ["openai:gpt-4o-mini"]) == [PRIMARY, "openai:gpt-4o-mini"]
    assert failover.chain(FALLBACK) == [FALLBACK]


# --- through the engine, in process ---------------------------------------------------------


async def _no_wait(_: float) -> None:
    return None


def _engine(settings: Settings, fa: afx.FakeAnthropic, fo: ofx.FakeOpenAI) -> Engine:
    anthropic_row = ProviderConfig(kind="anthropic", base_url="http://anthropic.fake")
    openai_row = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    anthropic_http = httpx2.AsyncClient(transport=httpx2.MockTransport(fa.handler))
    primary = AnthropicProvider("anthropic", anthropic_row, "sk-a", http_client=anthropic_http)
    fallback = OpenAICompatProvider("openai", openai_row, "sk-o", http_client=fo.client())
    retried = RetryingProvider(primary, max_retries=1, sleep=_no_wait)
    return Engine(settings, providers={"anthropic": retried, "openai": fallback})


async def test_retry_then_fallback_each_in_its_own_layer(settings: Settings) -> None:
    fa, fo = afx.FakeAnthropic(), ofx.FakeOpenAI()
    fa.reply_error(503, "api_error", "down").reply_error(503, "api_error", "still down")
    fo.reply_completion(ofx.completion("from the fallback"))
    async with _engine(settings, fa, fo) as engine:
        result = await engine.complete("Hello", POLICY)
    assert result.response.text() == "from the fallback" and result.response.model == FALLBACK
    assert len(fa.requests) == 2  # the retry layer tried the primary twice
    assert result.cost_usd == Decimal("0.0000236")  # the failed call cost nothing
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (escalation,) = ledger.escalations()
        calls = ledger.calls()
    assert escalation.trigger == "failover: ServerError 503: still down"
    assert [(c.model, c.status) for c in calls] == [(PRIMARY, "error"), (FALLBACK, "ok")]


async def test_a_stream_fails_over_before_its_first_event(settings: Settings) -> None:
    fa, fo = afx.FakeAnthropic(), ofx.FakeOpenAI()
    fa.reply_error(529, "overloaded_error", "Overloaded").reply_error(529, "x", "Overloaded")
    fo.reply_completion(ofx.completion("streamed by the fallback"))
    async with _engine(settings, fa, fo) as engine:
        response = await collect(engine.stream("Hello", POLICY))
    assert response.text() == "streamed by the fallback" and response.model == FALLBACK


async def test_a_client_error_does_not_fail_over(settings: Settings) -> None:
    fa, fo = afx.FakeAnthropic(), ofx.FakeOpenAI()
    fa.reply_error(400, "invalid_request_error", "prompt is too long")
    async with _engine(settings, fa, fo) as engine:
        with pytest.raises(BadRequestError):
            await engine.complete("Hello", POLICY)
    assert fo.requests == []


def test_an_unknown_fallback_model_is_refused(settings: Settings) -> None:
    with pytest.raises(UnknownModelError):
        Engine(settings).strategy(f"fixed:{PRIMARY}?fallback=openai:gpt-9")


# --- the timeout layer ------------------------------------------------------------------------


class Slow:
    """A provider that waits ``first`` before its first event and ``gap`` before the next."""

    name = "slow"

    def __init__(self, first: float, gap: float) -> None:
        self.first, self.gap = first, gap

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        await asyncio.sleep(self.first)
        return Response.model_validate({"id": "r", "model": model.id, "content": []})

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request, model)
        for event in events_from_response(response):
            yield event
            await asyncio.sleep(self.gap)

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("first", "gap", "message"),
    [(1.0, 0.0, "no first token within 0.05s"), (0.0, 1.0, "stream stalled: no event within")],
)
async def test_first_token_and_idle_deadlines(first: float, gap: float, message: str) -> None:
    spec = load_catalog().get(PRIMARY)
    provider = TimeoutProvider(Slow(first, gap), first_token_s=0.05, idle_s=0.05)
    events: list[StreamEvent] = []
    with pytest.raises(UpstreamTimeoutError, match=message):
        async for event in provider.stream(Request.from_prompt("Hi"), spec):
            events.append(event)
    assert len(events) == (0 if first else 1)
    assert all(isinstance(e, MessageStart) for e in events)
    with pytest.raises(UpstreamTimeoutError, match=r"no answer within 0\.05s"):
        await TimeoutProvider(Slow(1.0, 0), first_token_s=0.05, idle_s=1).complete(
            Request.from_prompt("Hi"), spec
        )


async def test_stream_deadlines_count_only_the_wait_for_the_upstream() -> None:
    """Events 20 ms apart under a 50 ms idle deadline pass, however long the consumer takes
    between them (its time is not the upstream's); a longer gap still stalls the stream."""
    spec = load_catalog().get(PRIMARY)
    provider = TimeoutProvider(Slow(0.02, 0.02), first_token_s=0.05, idle_s=0.05)
    count = 0
    async for _ in provider.stream(Request.from_prompt("Hi"), spec):
        count += 1
        await asyncio.sleep(0.08)  # a slow client: longer than the deadline, between events
    answer = await Slow(0, 0).complete(Request.from_prompt("Hi"), spec)
    assert count == len(list(events_from_response(answer)))
    slow_later = TimeoutProvider(Slow(0.0, 0.12), first_token_s=1.0, idle_s=0.05)
    with pytest.raises(UpstreamTimeoutError, match=r"no event within 0\.05s"):
        async for _ in slow_later.stream(Request.from_prompt("Hi"), spec):
            pass


async def test_a_cancellation_from_outside_a_stream_wait_stays_a_cancellation() -> None:
    spec = load_catalog().get(PRIMARY)
    provider = TimeoutProvider(Slow(10.0, 0), first_token_s=0.05, idle_s=0.05)

    async def consume() -> None:
        async for _ in provider.stream(Request.from_prompt("Hi"), spec):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()  # before the deadline: not a timeout
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # past the deadline: its timer, cancelled with the stream, is gone
    assert task.cancelled()


# --- attempts the retry layer retried -------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_a_timed_out_attempt_that_was_retried_is_recorded_at_unknown_cost(
    settings: Settings, streaming: bool
) -> None:
    """The first attempt reaches the upstream and times out (it may be billed, unseen); the
    retry answers. Both are recorded: the retried attempt first, its cost unknown."""
    fa = afx.FakeAnthropic()
    fa.reply(faults.silent(5)).reply_message(afx.text_message("second try"))
    faults.RELEASE.clear()
    try:
        with serve(fa.handler) as url:
            row = ProviderConfig(
                kind="anthropic", base_url=url, first_token_timeout_s=0.3, max_retries=1
            )
            provider = layered(AnthropicProvider("anthropic", row, "sk-a"), row)
            async with Engine(settings, providers={"anthropic": provider}) as engine:
                if streaming:
                    response = await collect(engine.stream("Hello", f"fixed:{PRIMARY}"))
                    cost = None
                else:
                    result = await engine.complete("Hello", f"fixed:{PRIMARY}")
                    response, cost = result.response, result.cost_usd
    finally:
        faults.RELEASE.set()
    assert response.text() == "second try" and len(fa.requests) == 2
    assert cost is None  # the task's cost is unknown while one of its calls' is
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        calls = ledger.calls()
    assert [(c.status, c.error_type) for c in calls] == [
        ("error", "UpstreamTimeoutError"),
        ("ok", None),
    ]
    assert calls[0].cost_usd is None and calls[1].cost_usd is not None
    assert calls[0].stream == calls[1].stream == streaming


async def test_an_attempt_refused_and_retried_leaves_no_record_of_its_own(
    settings: Settings,
) -> None:
    """A 503 is not billed: the retry that answers is the call, at its exact cost."""
    fa, fo = afx.FakeAnthropic(), ofx.FakeOpenAI()
    fa.reply_error(503, "api_error", "down").reply_message(afx.text_message("second try"))
    async with _engine(settings, fa, fo) as engine:
        result = await engine.complete("Hello", POLICY)
    assert result.response.text() == "second try" and len(fa.requests) == 2
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (call,) = ledger.calls()
    assert call.status == "ok" and result.cost_usd == call.cost_usd and call.cost_usd
