"""Fault scenarios: the real SDK clients against the gateway over faulty loopback upstreams.

Every scenario ends in a correct success or an honest error — a real HTTP error status
before the first byte, an in-band error event after it — with the ledger telling what
happened (failed calls, failover steps, exact cost of what answered).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes import openai_upstream as ofx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import (
    ADMIN_KEY,
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_OPENAI_KEY,
    Served,
    gateway_settings,
    serve_app,
)
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.gateway.app import create_app
from tierwise.ledger.records import CallRecord, EscalationRecord
from tierwise.ledger.store import Ledger
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderConfig
from tierwise.providers.factory import layered
from tierwise.providers.openai_compat import OpenAICompatProvider

PRIMARY, FALLBACK = "anthropic:claude-haiku-4-5", "openai:gpt-4.1-mini"
HELLO: Any = [{"role": "user", "content": "Hello"}]
TIMEOUTS = {"connect_timeout_s": 1.0, "first_token_timeout_s": 0.8, "idle_timeout_s": 0.5}
# Haiku 4.5 25 in / 12 out = $0.000085; GPT-4.1 mini 19 in * 0.40 + 10 out * 1.60 = $0.0000236
PRIMARY_COST, FALLBACK_COST = Decimal("0.000085"), Decimal("0.0000236")


def _providers(anthropic_url: str, openai_url: str) -> dict[str, Any]:
    rows = {
        "anthropic": ProviderConfig(kind="anthropic", base_url=anthropic_url, **TIMEOUTS),
        "openai": ProviderConfig(kind="openai", base_url=f"{openai_url}/v1", **TIMEOUTS),
    }
    rows = {name: row.model_copy(update={"max_retries": 0}) for name, row in rows.items()}
    anth = AnthropicProvider("anthropic", rows["anthropic"], UPSTREAM_ANTHROPIC_KEY)
    oai = OpenAICompatProvider("openai", rows["openai"], UPSTREAM_OPENAI_KEY)
    return {
        "anthropic": layered(anth, rows["anthropic"]),
        "openai": layered(oai, rows["openai"]),
    }


@contextmanager
def faulty_gateway(settings: Settings) -> Iterator[Served]:
    """The gateway (uvicorn, loopback) over both fakes, themselves served on loopback."""
    fa, fo = FakeAnthropic(), FakeOpenAI()
    faults.RELEASE.clear()
    with ExitStack() as stack:
        stack.callback(faults.RELEASE.set)
        anthropic_url = stack.enter_context(serve(fa.handler))
        openai_url = stack.enter_context(serve(fo.handler))
        engine = Engine(settings, providers=_providers(anthropic_url, openai_url))
        url = stack.enter_context(serve_app(create_app(settings, engine=engine), engine))
        yield Served(url, fa, fo, settings, engine)


def _settings(tmp_path: Path, fallbacks: bool, threshold: int = 5) -> Settings:
    failover: dict[str, Any] = {"failure_threshold": threshold, "cooldown_s": 60}
    if fallbacks:
        failover["fallbacks"] = {PRIMARY: [FALLBACK]}
    return gateway_settings(f"sqlite:///{tmp_path / 'ledger.db'}", failover=failover)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Served]:
    """No fallbacks: failures reach the client, honestly."""
    with faulty_gateway(_settings(tmp_path, fallbacks=False)) as served:
        yield served


@pytest.fixture
def gw_fb(tmp_path: Path) -> Iterator[Served]:
    """Haiku falls back to GPT-4.1 mini; a circuit opens after 2 failures."""
    with faulty_gateway(_settings(tmp_path, fallbacks=True, threshold=2)) as served:
        yield served


def _ledger(gw: Served, calls: int = 0) -> tuple[list[CallRecord], list[EscalationRecord]]:
    """The calls and escalations recorded, once at least ``calls`` calls are (a stream's call
    is recorded as it closes, which may be just after the client read its last event)."""
    deadline = time.monotonic() + 5
    while True:
        gw.flush_ledger()
        with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
            found = ledger.calls(), ledger.escalations()
        if len(found[0]) >= calls or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _ask(gw: Served) -> anthropic.types.Message:
    client = gw.anthropic(timeout=10)
    return client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)


def _stream_text(gw: Served) -> str:
    client = gw.anthropic(timeout=10)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HELLO) as stream:
        return "".join(stream.text_stream)


def _anthropic_events(text: str) -> list[bytes]:
    return faults.split_events(afx.sse_body(afx.stream_events(afx.text_message(text))))


def _openai_events(text: str) -> list[bytes]:
    chunks = ofx.stream_chunks(ofx.completion(text))
    return faults.split_events(ofx.sse_body(chunks))


def _body(error: anthropic.APIError | openai.APIError) -> Any:
    """An SDK error's parsed JSON body."""
    return error.body


# --- before the first byte: retries exhausted, failover or an honest HTTP error -----------


def test_429_with_retry_after_reaches_the_client_with_it(gw: Served) -> None:
    gw.anthropic_fake.reply_error(
        429, "rate_limit_error", "slow down", headers={"retry-after": "7"}
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        _ask(gw)
    assert caught.value.response.headers["retry-after"] == "7"
    assert _body(caught.value)["error"]["type"] == "rate_limit_error"


def test_429_without_retry_after_gets_a_default_retry_after(gw: Served) -> None:
    gw.anthropic_fake.reply_error(429, "rate_limit_error", "slow down")
    with pytest.raises(anthropic.RateLimitError) as caught:
        _ask(gw)
    assert caught.value.response.headers["retry-after"] == "1"


def test_429_fails_over_to_the_fallback(gw_fb: Served) -> None:
    gw_fb.anthropic_fake.reply_error(
        429, "rate_limit_error", "slow down", headers={"retry-after": "30"}
    )
    gw_fb.openai_fake.reply_completion(ofx.completion("from the fallback"))
    message = _ask(gw_fb)
    assert message.content[0].text == "from the fallback"  # type: ignore[union-attr]
    assert message.model == FALLBACK  # the model that actually ran, in catalog naming
    (escalation,) = _ledger(gw_fb)[1]
    assert escalation.trigger.startswith("failover: RateLimitError 429")


def test_5xx_failover_is_accounted_exactly(gw_fb: Served) -> None:
    gw_fb.anthropic_fake.reply_error(500, "api_error", "Internal server error")
    gw_fb.openai_fake.reply_completion(ofx.completion("served"))
    raw = gw_fb.anthropic(timeout=10).messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=HELLO
    )
    assert raw.parse().content[0].text == "served"  # type: ignore[union-attr]
    calls, (escalation,) = _ledger(gw_fb, calls=2)
    failed, served = calls
    assert (failed.model, failed.status, failed.http_status) == (PRIMARY, "error", 500)
    assert failed.cost_usd == Decimal(0)  # refused before producing anything: not billed
    assert (served.model, served.status, served.cost_usd) == (FALLBACK, "ok", FALLBACK_COST)
    assert (escalation.from_model, escalation.to_model) == (PRIMARY, FALLBACK)
    assert escalation.trigger == "failover: ServerError 500: Internal server error"
    assert raw.headers["x-tierwise-cost-usd"] == str(FALLBACK_COST)
    assert raw.headers["x-tierwise-model"] == FALLBACK


def test_5xx_without_fallback_is_an_honest_502(gw: Served) -> None:
    gw.anthropic_fake.reply_error(503, "api_error", "upstream unavailable")
    with pytest.raises(anthropic.InternalServerError) as caught:
        _ask(gw)
    assert caught.value.status_code == 502
    assert "upstream unavailable" in _body(caught.value)["error"]["message"]


def test_tcp_reset_fails_over(gw_fb: Served) -> None:
    gw_fb.anthropic_fake.reply(faults.reset())
    gw_fb.openai_fake.reply_completion(ofx.completion("after the reset"))
    assert _ask(gw_fb).content[0].text == "after the reset"  # type: ignore[union-attr]
    calls, (escalation,) = _ledger(gw_fb, calls=2)
    assert calls[0].error_type == "UpstreamConnectionError"
    assert escalation.trigger.startswith("failover: UpstreamConnectionError")


def test_tcp_reset_without_fallback_is_a_502(gw: Served) -> None:
    gw.anthropic_fake.reply(faults.reset())
    with pytest.raises(anthropic.InternalServerError) as caught:
        _ask(gw)
    assert caught.value.status_code == 502


def test_silent_upstream_times_out_with_a_504(gw: Served) -> None:
    gw.anthropic_fake.reply(faults.silent(5))
    with pytest.raises(anthropic.APIStatusError) as caught:
        _ask(gw)
    assert caught.value.status_code == 504
    assert _body(caught.value)["error"]["type"] == "timeout_error"
    assert "no answer within 0.8s" in _body(caught.value)["error"]["message"]
    (call,), _ = _ledger(gw, calls=1)
    assert (call.status, call.error_type) == ("error", "UpstreamTimeoutError")
    assert call.cost_usd is None  # sent, then unanswered: the upstream may bill it, unseen


def test_silent_upstream_stream_fails_over_before_the_first_byte(gw_fb: Served) -> None:
    gw_fb.anthropic_fake.reply(faults.silent(5))
    gw_fb.openai_fake.reply(faults.paced(_openai_events("fallback streamed")))
    assert _stream_text(gw_fb) == "fallback streamed"
    calls, (escalation,) = _ledger(gw_fb, calls=2)
    assert "no first token within 0.8s" in escalation.trigger
    assert [c.model for c in calls] == [PRIMARY, FALLBACK]
    assert calls[0].cost_usd is None  # the timed-out request may be billed: cost unknown
    assert calls[1].cost_usd is not None and calls[1].cost_usd > 0


def test_slow_first_token_within_the_deadline_succeeds(gw: Served) -> None:
    gw.anthropic_fake.reply(
        faults.paced(_anthropic_events("worth the wait"), first_delay=0.4, gap=0.05)
    )
    assert _stream_text(gw) == "worth the wait"
    (call,) = _ledger(gw, calls=1)[0]
    assert call.status == "ok" and call.cost_usd == PRIMARY_COST
    assert call.ttft_ms is not None and call.ttft_ms >= 400


def test_context_length_error_is_passed_through_without_failover(gw_fb: Served) -> None:
    gw_fb.anthropic_fake.reply_error(
        400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )
    with pytest.raises(anthropic.BadRequestError) as caught:
        _ask(gw_fb)
    assert "prompt is too long" in _body(caught.value)["error"]["message"]
    assert gw_fb.openai_fake.requests == []  # another model would not fix the request
    assert _ledger(gw_fb)[1] == []


def test_content_filter_refusal_is_an_answer_not_a_failure(gw_fb: Served) -> None:
    refusal = afx.message(
        [{"type": "text", "text": "I can't help with that."}], stop_reason="refusal"
    )
    gw_fb.anthropic_fake.reply_message(refusal)
    message = _ask(gw_fb)
    assert message.stop_reason == "refusal"
    gw_fb.openai_fake.reply_completion(
        ofx.completion("", finish_reason="content_filter"), chunk_size=4
    )
    stream = gw_fb.openai().chat.completions.create(
        model="gpt-4.1-mini", messages=HELLO, stream=True
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "content_filter"
    assert _ledger(gw_fb)[1] == []


# --- after the first byte: an in-band error event, never a clean close ------------------


def _anthropic_stream_error(gw: Served) -> anthropic.APIError:
    with pytest.raises(anthropic.APIError) as caught:
        _stream_text(gw)
    return caught.value


def test_anthropic_stream_cut_ends_with_an_error_event(gw_fb: Served) -> None:
    events = _anthropic_events("this answer is going to be cut off")
    gw_fb.anthropic_fake.reply(faults.paced(events[:5], ending="cut"))
    error = _anthropic_stream_error(gw_fb)
    assert _body(error)["error"]["type"] == "api_error"
    assert gw_fb.openai_fake.requests == []  # no failover once the first byte was sent
    (call,) = _ledger(gw_fb, calls=1)[0]
    assert call.status == "error" and call.cost_usd is None  # partly produced: unknown cost


def test_anthropic_stall_ends_with_a_timeout_error_event(gw: Served) -> None:
    events = _anthropic_events("this answer stalls")
    gw.anthropic_fake.reply(faults.paced(events[:4], ending="stall"))
    error = _anthropic_stream_error(gw)
    assert _body(error)["error"]["type"] == "timeout_error"
    assert "stream stalled: no event within 0.5s" in str(error)


def test_anthropic_stream_reset_midway_ends_with_an_error_event(gw: Served) -> None:
    events = _anthropic_events("reset midway through")
    gw.anthropic_fake.reply(faults.paced(events[:4], ending="reset"))
    error = _anthropic_stream_error(gw)
    assert _body(error)["error"]["type"] == "api_error"


def test_anthropic_malformed_event_ends_with_an_error_event(gw: Served) -> None:
    events = _anthropic_events("malformed")
    bad = b"event: content_block_delta\ndata: {not json\n\n"
    gw.anthropic_fake.reply(faults.paced([*events[:4], bad, *events[4:]]))
    error = _anthropic_stream_error(gw)
    assert "not a JSON object" in str(error)


def test_anthropic_missing_message_stop_ends_with_an_error_event(gw: Served) -> None:
    events = _anthropic_events("never stops")
    gw.anthropic_fake.reply(faults.paced(events[:-1]))
    assert "before message_stop" in str(_anthropic_stream_error(gw))


def _openai_stream_error(gw: Served) -> openai.APIError:
    stream = gw.openai(timeout=10).chat.completions.create(
        model="gpt-4.1-mini", messages=HELLO, stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    return caught.value


def test_openai_missing_done_ends_with_an_error_chunk(gw: Served) -> None:
    gw.openai_fake.reply(faults.paced(_openai_events("no done")[:-1]))
    assert "before [DONE]" in str(_openai_stream_error(gw))


def test_openai_malformed_chunk_ends_with_an_error_chunk(gw: Served) -> None:
    events = _openai_events("malformed chunk")
    gw.openai_fake.reply(faults.paced([*events[:2], b"data: {oops\n\n", *events[2:]]))
    assert "invalid JSON" in str(_openai_stream_error(gw))


def test_openai_stall_and_cut_end_with_error_chunks(gw: Served) -> None:
    events = _openai_events("stalls then is cut")
    gw.openai_fake.reply(faults.paced(events[:3], ending="stall"))
    assert "stream stalled" in str(_openai_stream_error(gw))
    gw.openai_fake.reply(faults.paced(events[:3], ending="cut"))
    assert "connection" in str(_openai_stream_error(gw))


# --- a flapping primary: the breaker opens and the fallback serves ------------------------


def test_flapping_primary_opens_its_circuit(gw_fb: Served) -> None:
    for _ in range(2):
        gw_fb.anthropic_fake.reply_error(529, "overloaded_error", "Overloaded")
        gw_fb.openai_fake.reply_completion(ofx.completion("fallback"))
        assert _ask(gw_fb).content[0].text == "fallback"  # type: ignore[union-attr]
    gw_fb.openai_fake.reply_completion(ofx.completion("fallback, primary skipped"))
    assert _ask(gw_fb).content[0].text == "fallback, primary skipped"  # type: ignore[union-attr]
    assert len(gw_fb.anthropic_fake.requests) == 2  # the open circuit spared the primary
    calls, escalations = _ledger(gw_fb, calls=5)
    assert [e.trigger.split(":")[1].strip() for e in escalations] == [
        "OverloadedError 529",
        "OverloadedError 529",
        "circuit open for anthropic",
    ]
    assert len(calls) == 5  # 2 failed primary calls, 3 fallback calls: nothing made up
    with gw_fb.http() as http:
        metrics = http.get("/metrics", headers={"x-api-key": ADMIN_KEY}).text
        ready = http.get("/readyz").json()
    assert f'tierwise_gateway_circuit_open{{upstream="{PRIMARY}"}} 1.0' in metrics
    assert ready["circuits"][PRIMARY] == "open"
    moved = f'from_model="{PRIMARY}",to_model="{FALLBACK}"'
    assert f"tierwise_gateway_failovers_total{{{moved}}} 3.0" in metrics


def test_open_circuit_without_fallback_is_a_503_with_retry_after(tmp_path: Path) -> None:
    with faulty_gateway(_settings(tmp_path, fallbacks=False, threshold=1)) as gw:
        gw.anthropic_fake.reply_error(500, "api_error", "down")
        with pytest.raises(anthropic.InternalServerError):
            _ask(gw)
        with pytest.raises(anthropic.APIStatusError) as caught:
            _ask(gw)
    assert caught.value.status_code == 503
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert "circuit open" in _body(caught.value)["error"]["message"]
    assert len(gw.anthropic_fake.requests) == 1
