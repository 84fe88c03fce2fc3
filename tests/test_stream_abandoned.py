"""A stream the consumer abandons after its first event (a client hanging up) is recorded at
once, under every strategy kind: the abandoned call (an error, its cost unknown) and then
the task's error outcome — not whenever the garbage collector finalises an inner generator.

The ledger writes behind (as in the gateway), so a record reaches the observer the moment
it is recorded and the order below is the order of recording.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from tests.fakes import anthropic_upstream as fx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import fake_engine
from tierwise.config import Settings
from tierwise.datasets import RecordedOutcome
from tierwise.engine import Engine
from tierwise.ledger.records import CallRecord, LedgerRecord, OutcomeRecord
from tierwise.ledger.store import Ledger
from tierwise.providers.replay import ReplayProvider

PROMPT = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many?"
ANSWER = "In May she sold 48 / 2 = 24 clips. In total 48 + 24 = 72. The answer is 72."
STRONG = "openai:gpt-4-1106-preview"
CHEAP = "openai:gpt-4o-mini"


def _replay() -> ReplayProvider:
    outcome = RecordedOutcome(
        row_id="1", prompt=PROMPT, model=STRONG, response_text=ANSWER, correct=True
    )
    return ReplayProvider("replay", [outcome])


async def _abandon(
    settings: Settings, policy: str, engine: Engine | None = None
) -> list[LedgerRecord]:
    """Read one event of ``policy``'s stream, close it; what was recorded by then."""
    seen: list[LedgerRecord] = []
    async with engine or Engine(settings, providers={"openai": _replay()}) as engine:
        engine.ledger.start_write_behind()
        events = engine.stream(PROMPT, policy, observer=seen.append)
        await anext(events)
        await events.aclose()
        recorded = list(seen)  # before anything else gets a turn on the event loop
    return recorded


def _abandoned(record: LedgerRecord) -> bool:
    return (
        isinstance(record, CallRecord)
        and record.status == "error"
        and "abandoned" in (record.error_message or "")
    )


@pytest.mark.parametrize(
    "policy",
    [
        f"fixed:{STRONG}",
        f"route:cheapest?candidates={STRONG}",
        f"fixed:{STRONG}?fallback={CHEAP}",
        f"route:strongest?candidates={STRONG}&fallback={CHEAP}",
        f"fixed:{STRONG}?budget_usd=1",
        f"route:cheapest?candidates={STRONG}&budget_usd=1&fallback={CHEAP}",
    ],
)
async def test_an_abandoned_stream_records_the_call_then_the_error_outcome(
    settings: Settings, policy: str
) -> None:
    recorded = await _abandon(settings, policy)
    _assert_abandoned_then_error(recorded)
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (stored,) = ledger.calls()
        (ended,) = ledger.outcomes()
    assert stored.status == "error" and stored.cost_usd is None and ended.outcome == "error"


async def test_an_abandoned_native_advisor_stream_records_the_call_then_the_error_outcome(
    settings: Settings,
) -> None:
    fa = FakeAnthropic().reply_message(fx.advisor_message())
    policy = "advisor:anthropic:claude-sonnet-4-6?advisor=anthropic:claude-opus-4-7"
    recorded = await _abandon(settings, policy, fake_engine(settings, fa, FakeOpenAI()))
    assert fa.requests[0].json()["tools"][0]["type"] == "advisor_20260301"  # native
    _assert_abandoned_then_error(recorded)


def _assert_abandoned_then_error(recorded: list[LedgerRecord]) -> None:
    *_, call, outcome = recorded
    assert _abandoned(call), recorded
    assert isinstance(call, CallRecord) and call.stream and call.cost_usd is None
    assert isinstance(outcome, OutcomeRecord) and outcome.outcome == "error"
    assert "abandoned" in outcome.detail


async def test_a_cascade_streams_a_finished_answer_and_records_the_error_outcome(
    settings: Settings,
) -> None:
    """A cascade (like plan/execute) answers in full before streaming: its calls are done,
    the outcome says the client left."""
    recorded = await _abandon(settings, f"cascade:{STRONG}?gates=regex:72&retries=0")
    assert not any(_abandoned(r) for r in recorded)
    assert [r.status for r in recorded if isinstance(r, CallRecord)] == ["ok"]
    outcome = recorded[-1]
    assert isinstance(outcome, OutcomeRecord) and outcome.outcome == "error"


# --- abandoned before the first event ---------------------------------------------------------

HAIKU = "anthropic:claude-haiku-4-5"


def _stalled(release: asyncio.Event) -> Any:
    """An Anthropic SSE reply: headers at once, the events only once ``release`` is set."""

    async def content() -> Any:
        await release.wait()
        yield fx.sse_body(fx.stream_events(fx.text_message("late")))

    def reply(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "request-id": request_id}
        return httpx2.Response(200, content=content(), headers=headers)

    return reply


@pytest.mark.parametrize("policy", [f"fixed:{HAIKU}", f"fixed:{HAIKU}?budget_usd=1"])
async def test_a_stream_cancelled_before_its_first_event_is_a_call_of_unknown_cost(
    settings: Settings, policy: str
) -> None:
    """The request was sent, so the upstream may bill it: recorded as a cut non-streaming call
    is (cost unknown), not at $0."""
    fa, seen = FakeAnthropic(), list[LedgerRecord]()
    fa.reply(_stalled(asyncio.Event()))
    async with fake_engine(settings, fa, FakeOpenAI()) as engine:
        engine.ledger.start_write_behind()
        events = engine.stream(PROMPT, policy, observer=seen.append)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 0.2)
        recorded = list(seen)
    assert len(fa.requests) == 1
    _assert_abandoned_then_error(recorded)
    call = recorded[-2]
    assert isinstance(call, CallRecord) and call.ttft_ms is None
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        (stored,) = ledger.calls()
    assert stored.cost_usd is None and stored.stream


async def test_a_stream_closed_before_it_starts_sends_and_records_nothing(
    settings: Settings,
) -> None:
    fa = FakeAnthropic()
    async with fake_engine(settings, fa, FakeOpenAI()) as engine:
        events = engine.stream(PROMPT, f"fixed:{HAIKU}")
        await events.aclose()  # type: ignore[attr-defined]
    assert fa.requests == []
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        assert ledger.calls() == [] and ledger.tasks() == []
