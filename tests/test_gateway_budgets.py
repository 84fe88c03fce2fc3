"""Gateway budgets and rate limits through the real ``openai`` and ``anthropic`` clients.

The gateway runs on 127.0.0.1 over fake upstreams; budgets are read back from the store
itself (a second connection to the same database or Redis), as another instance would.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import typer
from typer.testing import CliRunner

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.fakes.loopback import serve
from tests.gateway_harness import ADMIN_KEY, Served, fake_engine, gateway_settings, serve_app
from tests.test_budgets import REDIS_URL, pg_url, redis_prefix  # noqa: F401 (fixtures)
from tierwise.budgets.config import BudgetSettings
from tierwise.budgets.estimate import call_slots, worst_case
from tierwise.budgets.factory import open_budget_gate
from tierwise.budgets.gate import BudgetGate
from tierwise.budgets.limits import Amount, Limits, to_nanousd
from tierwise.budgets.rate import MemoryRateLimiter
from tierwise.budgets.sql import SqlBudgetStore
from tierwise.budgets.store import Counter, MemoryBudgetStore
from tierwise.catalog import load_catalog
from tierwise.cli import main as cli_main
from tierwise.cli.serve_cmd import register
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import BudgetUnavailableError, ConfigError, InvalidRequestError
from tierwise.gateway.app import create_app
from tierwise.gateway.keys import KeyStore
from tierwise.gateway.service import Gateway
from tierwise.ledger.records import CallRecord
from tierwise.ledger.store import Ledger
from tierwise.messages import Request, Tool
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.strategies.fixed import FixedStrategy
from tierwise.wire.anthropic import request_from_anthropic
from tierwise.wire.openai import request_from_openai

HELLO = [{"role": "user", "content": "Hello"}]
MINI = "gpt-4.1-mini"
HAIKU = "claude-haiku-4-5"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def create_key(ledger_url: str, limits: Limits, name: str = "team") -> str:
    with Ledger.open(ledger_url) as ledger:
        return KeyStore(ledger).create(name, limits=limits).token


@contextmanager
def gateway(settings: Settings) -> Iterator[tuple[Served, Gateway]]:
    fa, fo = afx.FakeAnthropic(), ofx.FakeOpenAI()
    engine = fake_engine(settings, fa, fo)
    app = create_app(settings, engine=engine)
    with serve_app(app, engine) as url:
        yield Served(url, fa, fo, settings), app.state.gateway


def read_store(ledger_url: str, scope: str) -> tuple[Counter, int]:
    """The scope's counters and the reservations held, once every request has settled."""

    async def read() -> tuple[Counter, int]:
        store = SqlBudgetStore(Ledger.open(ledger_url), owned=True)
        try:
            deadline = time.monotonic() + 10
            while await store.held() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return await store.counter(scope), await store.held()
        finally:
            await store.aclose()

    return asyncio.run(read())


def settings_for(ledger_url: str, **gateway: Any) -> Settings:
    return gateway_settings(ledger_url, gateway={"key_cache_s": 0, **gateway})


# --- budget exhausted ---------------------------------------------------------------------


def test_exhausted_budget_is_each_apis_quota_error(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(tokens_total=100))
    with gateway(settings_for(ledger_url)) as (gw, _):
        gw.openai_fake.reply_completion(ofx.completion("ok"))  # 19 + 10 tokens used
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token, max_retries=2)
        assert client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=20)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MINI, messages=HELLO, max_tokens=80)
        error = caught.value.body
        assert caught.value.status_code == 429
        assert isinstance(error, dict)
        assert error["type"] == error["code"] == "insufficient_quota"
        exhausted = "the total budget of key 'team' is exhausted: $0.000024 and 29 tokens spent"
        assert error["message"].startswith(f"{exhausted} of 100 tokens")
        assert caught.value.response.headers["x-should-retry"] == "false"

        with pytest.raises(anthropic.BadRequestError) as refused:
            anthropic.Anthropic(base_url=gw.url, api_key=token, max_retries=2).messages.create(
                model=HAIKU, max_tokens=80, messages=HELLO
            )
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "budget of key 'team' is exhausted" in refused.value.body["error"]["message"]  # type: ignore[index]
    assert len(gw.openai_fake.requests) == 1 and gw.anthropic_fake.requests == []
    counter, held = read_store(ledger_url, "key:team:total")
    assert counter.spent.tokens == 29 and held == 0  # not retried by the SDKs, nothing held


def test_spend_is_reconciled_to_the_exact_cost(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_per_day=Decimal(1), usd_per_month=Decimal(5)))
    with gateway(settings_for(ledger_url)) as (gw, _):
        gw.anthropic_fake.reply_message(afx.text_message("hi", usage_=afx.usage(1234, 567)))
        raw = gw.anthropic(key=token).messages.with_raw_response.create(
            model=HAIKU, max_tokens=1000, messages=HELLO
        )
    cost = Decimal(raw.headers["x-tierwise-cost-usd"])
    assert cost == (1234 * Decimal("1.00") + 567 * Decimal("5.00")) / 1_000_000
    with Ledger.open(ledger_url) as ledger:
        scopes = [
            s.key
            for s in Limits(usd_per_day=Decimal(1)).scopes("team", ledger.calls()[0].created_at)
        ]
    counter, held = read_store(ledger_url, scopes[0])
    assert counter.spent.nanousd == to_nanousd(cost) and counter.spent.tokens == 1234 + 567
    assert counter.reserved.nanousd == 0 and held == 0


def test_a_request_over_the_per_request_cap_is_refused(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_per_request=Decimal("0.001")))
    cap = re.escape("per-request cap of $0.001")
    with (
        gateway(settings_for(ledger_url)) as (gw, _),
        pytest.raises(anthropic.BadRequestError, match=cap),
    ):
        gw.anthropic(key=token).messages.create(model=HAIKU, max_tokens=4000, messages=HELLO)
    assert gw.anthropic_fake.requests == []


# --- rate limits --------------------------------------------------------------------------


def test_requests_per_minute_is_a_429_with_retry_after(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(requests_per_minute=2))
    with gateway(settings_for(ledger_url)) as (gw, _):
        for _ in range(2):
            gw.openai_fake.reply_completion(ofx.completion("ok"))
            gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
        with pytest.raises(openai.RateLimitError) as caught:
            gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError) as limited:
            gw.anthropic(key=token).messages.create(model=HAIKU, max_tokens=5, messages=HELLO)
        with gw.http() as http:
            metrics = http.get("/metrics", headers={"x-api-key": ADMIN_KEY}).text
    assert 'tierwise_gateway_budget_refusals_total{reason="rate_limit"} 2.0' in metrics
    assert "tierwise_gateway_budget_pending_spends 0.0" in metrics
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "rate_limit_exceeded"
    assert "over its rate limit (2 requests per minute)" in body["message"]
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 120  # two windows at most
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert len(gw.openai_fake.requests) == 2


def test_gateway_default_limits_apply_to_every_key(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits())
    settings = settings_for(ledger_url, limits={"requests_per_minute": 1})
    with gateway(settings) as (gw, _):
        gw.openai_fake.reply_completion(ofx.completion("ok")).reply_completion(ofx.completion("ok"))
        gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
        with pytest.raises(openai.RateLimitError):
            gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
        gw.openai().chat.completions.create(model=MINI, messages=HELLO)  # the admin key: no limit


# --- release on every ending --------------------------------------------------------------


def test_released_on_upstream_error(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    with gateway(settings_for(ledger_url)) as (gw, _):
        gw.openai_fake.reply_error(400, "Invalid 'messages'", code="invalid_value")
        with pytest.raises(openai.BadRequestError):
            gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
    counter, held = read_store(ledger_url, "key:team:total")
    assert held == 0 and counter.reserved.nanousd == 0 and counter.spent.nanousd == 0


def test_a_stream_cut_midway_is_charged_its_reservation(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    chunks = ofx.stream_chunks(ofx.completion("a long answer cut short"))[:3]
    body = {"model": MINI, "messages": HELLO, "max_tokens": 100}
    with gateway(settings_for(ledger_url)) as (gw, _):
        gw.openai_fake.reply_chunks(chunks, done=False, drop=True)
        stream = gw.openai(key=token).chat.completions.create(**body, stream=True)
        with pytest.raises(openai.APIError):
            list(stream)
    counter, held = read_store(ledger_url, "key:team:total")
    assert held == 0 and counter.reserved.nanousd == 0
    # the upstream may bill what it sent, which nobody saw: charged the whole worst case
    worst, _ = worst_case(request_from_openai(body), [[load_catalog().get(f"openai:{MINI}")]], 1.1)
    assert counter.spent == worst
    with Ledger.open(ledger_url) as ledger:
        assert [c.cost_usd for c in ledger.calls()] == [None]


def _slow_stream(events: list[dict[str, Any]], gone: threading.Event) -> Any:
    """An Anthropic SSE reply that sends its first events, then one event per 20 ms."""

    async def body() -> Any:
        for index, event in enumerate(events):
            if index > 2:
                await asyncio.sleep(0.02)
            yield afx.sse_body([event])
        gone.set()  # only reached if nobody hung up

    def reply(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "request-id": request_id}
        return httpx2.Response(200, content=body(), headers=headers)

    return reply


def test_released_when_the_client_goes_away(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    events = afx.stream_events(afx.text_message("word " * 400), chunk_size=4)
    finished = threading.Event()
    with gateway(settings_for(ledger_url)) as (gw, _):
        gw.anthropic_fake.reply(_slow_stream(events, finished))
        with gw.anthropic(key=token).messages.stream(
            model=HAIKU, max_tokens=1000, messages=HELLO
        ) as stream:
            next(iter(stream))  # read one event, then hang up mid-stream
        counter, held = read_store(ledger_url, "key:team:total")
    assert not finished.is_set()  # the upstream stream was cut short by the hang-up
    assert held == 0 and counter.reserved.nanousd == 0
    with Ledger.open(ledger_url) as ledger:
        (call,) = ledger.calls()
    assert call.status == "error" and call.cost_usd is None  # billed for what, nobody saw
    assert counter.spent.nanousd > 0  # so the whole reservation is charged


def _stalled_sse(body: bytes, release: threading.Event, request_id_header: str) -> Any:
    """An SSE reply whose headers come at once and whose first event waits for ``release``."""

    async def content() -> Any:
        while not release.is_set():
            await asyncio.sleep(0.005)
        yield body

    def reply(_: Any, request_id: str) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", request_id_header: request_id}
        return httpx2.Response(200, content=content(), headers=headers)

    return reply


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_stream_the_client_leaves_before_its_first_event_is_charged_as_a_cut_call(
    ledger_url: str, api: str
) -> None:
    """Once the upstream request is sent, the call may be billed: a stream abandoned before
    its first event is charged its worst case, as a cut non-streaming call is (not $0)."""
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    release = threading.Event()
    body = {"model": MINI if api == "openai" else HAIKU, "messages": HELLO, "max_tokens": 100}
    with gateway(settings_for(ledger_url)) as (gw, service):
        try:
            if api == "openai":
                sse = ofx.sse_body(ofx.stream_chunks(ofx.completion("late")))
                gw.openai_fake.reply(_stalled_sse(sse, release, "x-request-id"))
                with pytest.raises(openai.APITimeoutError):
                    gw.openai(key=token, timeout=0.5).chat.completions.create(**body, stream=True)
            else:
                sse = afx.sse_body(afx.stream_events(afx.text_message("late")))
                gw.anthropic_fake.reply(_stalled_sse(sse, release, "request-id"))
                with pytest.raises(anthropic.APITimeoutError):
                    gw.anthropic(key=token, timeout=0.5).messages.create(**body, stream=True)
            counter, held = settled_store(service, "ledger", ledger_url)
            service.running.engine.ledger.flush(10)
        finally:
            release.set()
    if api == "openai":
        canonical, spec = request_from_openai(body), load_catalog().get(f"openai:{MINI}")
    else:
        canonical, spec = request_from_anthropic(body), load_catalog().get(f"anthropic:{HAIKU}")
    worst, _ = worst_case(canonical, [[spec]], 1.1)
    assert held == 0 and counter.reserved.nanousd == 0
    assert counter.spent == worst
    with Ledger.open(ledger_url) as ledger:
        (call,) = ledger.calls()
        (outcome,) = ledger.outcomes()
    assert (call.status, call.cost_usd, call.stream, call.ttft_ms) == ("error", None, True, None)
    assert call.error_message == "stream abandoned by the caller"
    assert outcome.outcome == "error" and "abandoned" in outcome.detail


# --- the store is down --------------------------------------------------------------------


def test_budgets_fail_closed_when_the_store_is_down(
    ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    down = settings_for(ledger_url, budget_store="redis://127.0.0.1:1/0")
    with gateway(down) as (gw, _), pytest.raises(openai.InternalServerError) as caught:
        gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
    assert caught.value.status_code == 503
    request_id = caught.value.response.headers["x-request-id"]
    assert caught.value.message.endswith(
        f"budget store unavailable; retry later (request id {request_id})"
    )
    assert "Redis" not in caught.value.message and "127.0.0.1" not in caught.value.message
    (logged,) = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert "budget store (Redis) is unavailable" in logged and "fail_open" in logged
    assert gw.openai_fake.requests == []


def test_fail_open_admits_and_keeps_the_spend(ledger_url: str) -> None:
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    settings = settings_for(
        ledger_url, budget_store="redis://127.0.0.1:1/0", budgets={"fail_open": True}
    )
    with gateway(settings) as (gw, service):
        gw.openai_fake.reply_completion(ofx.completion("ok"))
        gw.openai(key=token).chat.completions.create(model=MINI, messages=HELLO)
        gate = service.running.budgets
        deadline = time.monotonic() + 10
        while gate.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.pending == 1  # the spend waits for the store to come back


# --- several instances --------------------------------------------------------------------


def _blocking_openai(release: threading.Event) -> Any:
    """An OpenAI upstream that answers only once ``release`` is set."""
    body = ofx.completion("ok")

    async def handler(request: httpx2.Request) -> httpx2.Response:
        while not release.is_set():
            await asyncio.sleep(0.005)
        return httpx2.Response(200, json=body, headers={"x-request-id": uuid.uuid4().hex})

    return handler


def blocking_engine(settings: Settings, release: threading.Event) -> Engine:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_blocking_openai(release)))
    config = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    provider = OpenAICompatProvider("openai", config, "sk-upstream", http_client=http)
    return Engine(settings, providers={"openai": provider})


def test_two_instances_sharing_postgres_and_redis_do_not_overshoot(
    pg_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    fits, sent = 3, 16
    body = {"model": MINI, "messages": HELLO, "max_tokens": 50}
    spec = load_catalog().get(f"openai:{MINI}")
    each, _ = worst_case(request_from_openai(body), [[spec]], 1.1)
    limits = Limits(usd_total=each.usd * fits + each.usd / 2, requests_per_minute=1000)
    token = create_key(pg_url, limits)
    settings = settings_for(
        pg_url,
        rate_limit_store=REDIS_URL,
        budgets={"redis_prefix": redis_prefix},
        max_loop_lag_ms=0,  # a busy test machine must not shed requests before budgets
    )
    release = threading.Event()
    with ExitStack() as stack:
        urls = []
        for _ in range(2):
            engine = blocking_engine(settings, release)
            urls.append(stack.enter_context(serve_app(create_app(settings, engine=engine), engine)))
        clients = [openai.OpenAI(base_url=f"{u}/v1", api_key=token, max_retries=0) for u in urls]
        refused: list[int] = []
        others: list[str] = []

        def send(i: int) -> bool:
            try:
                clients[i % 2].chat.completions.create(**body)
                return True
            except openai.RateLimitError:
                refused.append(i)
                if len(refused) == sent - fits:
                    release.set()
                return False
            except openai.APIStatusError as exc:
                others.append(f"{exc.status_code}: {exc.message}")
                return False

        with ThreadPoolExecutor(sent) as pool:
            timer = threading.Timer(20, release.set)
            timer.start()
            outcomes = list(pool.map(send, range(sent)))
            timer.cancel()
    assert others == [] and sum(outcomes) == fits
    counter, held = read_store(pg_url, "key:team:total")
    assert held == 0 and counter.reserved.nanousd == 0
    assert counter.spent.nanousd <= to_nanousd(limits.usd_total)  # type: ignore[arg-type]


# --- the keys CLI -------------------------------------------------------------------------


def test_keys_limits_and_usage_cli(ledger_url: str) -> None:
    runner, app = CliRunner(), typer.Typer()
    app.callback()(cli_main.main)
    register(app)
    create_key(ledger_url, Limits(usd_per_day=Decimal(2)), name="ci")
    base = ["--ledger", ledger_url, "keys"]
    done = runner.invoke(app, [*base, "limits", "ci", "--usd-total", "10", "--rpm", "60"])
    assert done.exit_code == 0, done.output
    assert "usd_per_day=2, usd_total=10, requests_per_minute=60" in done.stdout
    with Ledger.open(ledger_url) as ledger:
        found = next(k for k in KeyStore(ledger).list_keys() if k.name == "ci")
    assert found.limits == Limits(
        usd_per_day=Decimal(2), usd_total=Decimal(10), requests_per_minute=60
    )
    usage = runner.invoke(app, [*base, "usage", "ci"])
    assert usage.exit_code == 0, usage.output
    assert "key:ci:total" in usage.stdout and "$10" in usage.stdout
    bad = runner.invoke(app, [*base, "limits", "ci", "--usd-total", "-1"])
    assert isinstance(bad.exception, InvalidRequestError)
    assert "--usd-total: Input should be greater than or equal to 0" in str(bad.exception)
    cleared = runner.invoke(app, [*base, "limits", "ci", "--clear"])
    assert "none (the [gateway.limits] defaults)" in cleared.stdout


# --- the gate on its own: fail-open spend is written once the store is back ---------------


class FlakyStore(MemoryBudgetStore):
    """A real in-memory store that can be switched off, like a database going away."""

    down = False

    async def reserve(self, *args: Any, **kw: Any) -> Any:
        self._check()
        return await super().reserve(*args, **kw)

    async def charge(self, *args: Any, **kw: Any) -> bool:
        self._check()
        return await super().charge(*args, **kw)

    async def reclaim(self) -> int:
        self._check()
        return await super().reclaim()

    def _check(self) -> None:
        if self.down:
            raise BudgetUnavailableError("the budget store is unavailable: test switch off")


async def test_fail_open_spend_is_written_when_the_store_is_back() -> None:
    catalog = load_catalog()
    store = FlakyStore()
    settings = BudgetSettings(fail_open=True)
    gate = BudgetGate(
        settings, Limits(), store, MemoryRateLimiter(), store_name="flaky", catalog=catalog
    )
    strategy = FixedStrategy(catalog.get(f"openai:{MINI}"))
    limits = Limits(usd_total=Decimal(1))
    store.down = True
    request, hold = await gate.admit("ci", limits, Request.from_prompt("Hi"), strategy)
    assert hold is not None and not hold.reserved
    assert request.max_tokens == settings.default_max_tokens  # bounds the worst case
    call = CallRecord(
        task_id="t", provider="openai", model=f"openai:{MINI}", input_tokens=19,
        output_tokens=10, cost_usd=Decimal("0.0000236"),
    )  # fmt: skip
    await hold.settle([call])
    assert gate.pending == 1
    await gate.sweep()  # still down: kept
    assert gate.pending == 1
    store.down = False
    await gate.sweep()
    assert gate.pending == 0
    counter = await store.counter("key:ci:total")
    assert counter.spent == Amount(to_nanousd(Decimal("0.0000236")), 29)
    await gate.aclose()


async def test_fail_closed_refuses_when_the_store_is_down() -> None:
    catalog = load_catalog()
    store = FlakyStore()
    gate = BudgetGate(
        BudgetSettings(), Limits(), store, MemoryRateLimiter(), store_name="flaky", catalog=catalog
    )
    store.down = True
    strategy = FixedStrategy(catalog.get(f"openai:{MINI}"))
    with pytest.raises(BudgetUnavailableError, match="refused while budgets cannot be checked"):
        await gate.admit("ci", Limits(usd_total=Decimal(1)), Request.from_prompt("Hi"), strategy)
    admin, hold = await gate.admit("admin", None, Request.from_prompt("Hi"), strategy)
    assert hold is None and admin.max_tokens is None  # unlimited keys never touch the store


def test_the_worst_case_covers_every_call_a_policy_may_make(settings: Settings) -> None:
    engine = Engine(settings)

    def slots(policy: str) -> list[list[str]]:
        return [
            [s.id for s in slot] for slot in call_slots(engine.strategy(policy), engine.catalog)
        ]

    mini, haiku, opus = f"openai:{MINI}", f"anthropic:{HAIKU}", "anthropic:claude-opus-4-7"
    assert slots(f"fixed:{mini}") == [[mini]]
    assert slots(f"route:rules?candidates={mini},{opus}") == [[mini, opus]]
    assert slots(f"cascade:{mini},{haiku}?retries=1&gates=python") == [
        [mini],
        [mini],
        [haiku],
        [haiku],
    ]
    # the default gate, confidence>=0.7, may ask the tier once per try
    assert slots(f"cascade:{mini}?retries=0") == [[mini], [mini]]
    # each consult: one advisor call and one more executor turn
    assert slots(f"advisor:{haiku}?advisor={opus}&max_uses=2") == [[haiku]] * 3 + [[opus]] * 2
    assert slots(f"fixed:{mini}?fallback={haiku}") == [[mini, haiku]]
    # a cascade's gates call models too: a judge, an agreement gate's extra samples
    assert slots(f"cascade:{mini}?gates=judge:{opus},agree:3&retries=0") == [
        [mini],
        [opus],
        [mini],
        [mini],
    ]
    assert slots(f"fixed:{mini}?budget_usd=1") == [[mini]]  # not the whole catalog
    planned = slots(f"plan:{opus}?executors={mini}&max_steps=2&max_replans=0")
    assert planned == [[opus], [mini], [opus], [mini], [opus]]
    tool = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}
    with_tool = Request.from_prompt("Hi").model_copy(
        update={"tools": [Tool.model_validate({**tool, "max_uses": 4})]}
    )
    consults = call_slots(engine.strategy(f"fixed:{mini}"), engine.catalog, request=with_tool)
    assert [[s.id for s in slot] for slot in consults] == [[mini]] + [[opus]] * 4
    # the config's failover chains: any call may move on to them
    chains = {mini: [opus, haiku], haiku: [opus]}
    chained = call_slots(
        engine.strategy(f"cascade:{mini},{haiku}?retries=0&gates=python"), engine.catalog, chains
    )
    assert [[s.id for s in slot] for slot in chained] == [[mini, opus, haiku], [haiku, opus]]
    request = Request.from_prompt("one two three", max_tokens=100)
    worst, unknown = worst_case(
        request,
        call_slots(engine.strategy(f"route:rules?candidates={mini},{opus}"), engine.catalog),
        1.0,
    )
    opus_prices = engine.catalog.get(opus).prices
    assert opus_prices.output is not None and not unknown
    dearest_input = max(p for p in (opus_prices.input, opus_prices.cache_write_1h) if p)
    assert worst == Amount(
        to_nanousd((3 * dearest_input + 100 * opus_prices.output) / 1_000_000), 103
    )


async def test_the_sweeper_keeps_a_long_request_reserved() -> None:
    now = [1_800_000_000.0]
    store = MemoryBudgetStore(clock=lambda: now[0])
    settings = BudgetSettings(reservation_ttl_s=60, sweep_s=5)
    catalog = load_catalog()
    gate = BudgetGate(
        settings, Limits(), store, MemoryRateLimiter(), store_name="memory", catalog=catalog
    )
    strategy = FixedStrategy(catalog.get(f"openai:{MINI}"))
    _, hold = await gate.admit(
        "ci", Limits(usd_total=Decimal(1)), Request.from_prompt("Hi"), strategy
    )
    assert hold is not None and hold.reserved
    for _ in range(5):  # five minutes of streaming, swept every 50 s
        now[0] += 50
        await gate.sweep()
    assert await store.held() == 1  # renewed, not reclaimed
    await hold.settle([])
    assert await store.held() == 0
    # a request that vanished without finishing: its hold is dropped, then expires
    _, lost = await gate.admit(
        "ci", Limits(usd_total=Decimal(1)), Request.from_prompt("Hi"), strategy
    )
    assert lost is not None and await store.held() == 1
    del lost
    gc.collect()
    now[0] += 61
    await gate.sweep()
    assert await store.held() == 0
    await gate.aclose()


def test_store_names_are_checked(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        common: dict[str, Any] = {
            "settings": BudgetSettings(),
            "defaults": Limits(),
            "ledger": ledger,
            "catalog": load_catalog(),
        }
        with pytest.raises(ConfigError, match="workers would each spend the whole budget"):
            open_budget_gate(budget_store="memory", rate_limit_store=None, processes=2, **common)
        with pytest.raises(ConfigError, match=r"gateway.budget_store 'mysql://u:\*\*\*@db/x'"):
            open_budget_gate(budget_store="mysql://u:pw@db/x", rate_limit_store=None, **common)
        with pytest.raises(ConfigError, match="expected memory or redis"):
            open_budget_gate(budget_store="ledger", rate_limit_store="ledger", **common)
    with pytest.raises(ConfigError, match=r"gateway\.budget_store: String should match"):
        gateway_settings(ledger_url, gateway={"budget_store": "mysql://db/x"})
    accepted = gateway_settings(
        ledger_url,
        gateway={
            "budget_store": "postgresql+psycopg://db/x",
            "rate_limit_store": "redis://r:6379/1",
        },
    )
    assert accepted.gateway.budget_store.startswith("postgresql+psycopg:")


# --- a non-streaming client that hangs up ----------------------------------------------------


def _store_url(store: str, ledger_url: str, request: pytest.FixtureRequest) -> str:
    """The gateway's ``budget_store`` for a test: memory, the ledger's SQLite, or PostgreSQL."""
    return {"memory": "memory", "sqlite": "ledger"}.get(store) or request.getfixturevalue("pg_url")


def settled_store(service: Gateway, store_url: str, ledger_url: str) -> tuple[Counter, int]:
    """The key's total counter and the reservations held, once no reservation is held (or
    5 s have passed: far short of the 120 s TTL, and the upstream never answers by itself)."""

    async def read(store: Any) -> tuple[Counter, int]:
        deadline = time.monotonic() + 5
        while await store.held() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return await store.counter("key:team:total"), await store.held()

    if store_url == "memory":  # this process's store, read from here (it takes a thread lock)
        return asyncio.run(read(service.running.budgets.store))

    async def from_sql() -> tuple[Counter, int]:
        url = ledger_url if store_url == "ledger" else store_url
        store = SqlBudgetStore(Ledger.open(url), owned=True)
        try:
            return await read(store)
        finally:
            await store.aclose()

    return asyncio.run(from_sql())


@contextmanager
def hanging_gateway(settings: Settings, http: str) -> Iterator[tuple[str, Gateway]]:
    """A gateway whose OpenAI upstream never answers until the test ends: in process through
    the SDK, or on loopback through the direct (aiohttp) transport."""
    release = threading.Event()

    def late(_: httpx2.Request) -> httpx2.Response:
        release.wait(30)
        return httpx2.Response(200, json=ofx.completion("late"), headers={"x-request-id": "r1"})

    with ExitStack() as stack:
        if http == "sdk":
            engine = blocking_engine(settings, release)
        else:
            upstream = stack.enter_context(serve(late))
            config = ProviderConfig(kind="openai", base_url=f"{upstream}/v1", http="direct")
            provider = OpenAICompatProvider("openai", config, "sk-upstream")
            engine = Engine(settings, providers={"openai": provider})
        app = create_app(settings, engine=engine)
        url = stack.enter_context(serve_app(app, engine))
        try:
            yield url, app.state.gateway
        finally:
            release.set()  # before the servers stop, or they would wait for the request


@pytest.mark.parametrize(
    ("store", "http"),
    [("memory", "sdk"), ("sqlite", "sdk"), ("postgres", "sdk"), ("memory", "direct")],
)
def test_a_client_hanging_up_mid_call_leaves_nothing_held(
    ledger_url: str, store: str, http: str, request: pytest.FixtureRequest
) -> None:
    store_url = _store_url(store, ledger_url, request)
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    body = {"model": MINI, "messages": HELLO, "max_tokens": 100}
    settings = settings_for(ledger_url, budget_store=store_url)
    with hanging_gateway(settings, http) as (url, service):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**body)  # type: ignore[call-overload]
        counter, held = settled_store(service, store_url, ledger_url)
        service.running.engine.ledger.flush(10)
    assert held == 0 and counter.reserved.nanousd == 0  # at once, not after the TTL
    # the cut-off call may be billed by the upstream, unseen: charged its worst case, as a
    # stream cut midway is
    worst, _ = worst_case(request_from_openai(body), [[load_catalog().get(f"openai:{MINI}")]], 1.1)
    assert counter.spent == worst
    with Ledger.open(ledger_url) as ledger:
        (call,) = ledger.calls()
        (outcome,) = ledger.outcomes()
    assert (call.status, call.cost_usd) == ("error", None)
    assert call.error_message == "request abandoned by the caller"
    assert outcome.outcome == "error" and "abandoned" in outcome.detail


def test_a_client_hanging_up_between_calls_is_charged_exactly_the_calls_made(
    ledger_url: str,
) -> None:
    """The answer is in (its call billed), its gate still runs when the client hangs up: the
    gate is stopped and the key is charged that one call's exact cost, nothing held."""
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    cascade = {
        "tiers": [f"openai:{MINI}"],
        "gates": ['command:python -c "import time; time.sleep(60)"'],
    }
    settings = gateway_settings(ledger_url, gateway={"key_cache_s": 0}, cascade=cascade)
    with gateway(settings) as (gw, service):
        gw.openai_fake.reply_completion(ofx.completion("ok", token_usage=ofx.usage(19, 10)))
        client = gw.openai(key=token, timeout=1.0)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="tierwise/cascade", messages=HELLO)
        counter, held = settled_store(service, "ledger", ledger_url)
        service.running.engine.ledger.flush(10)
    with Ledger.open(ledger_url) as ledger:
        (call,) = ledger.calls()
        (outcome,) = ledger.outcomes()
        assert ledger.gate_results() == []  # stopped before its verdict
    # GPT-4.1 mini: $0.40 in, $1.60 out per million tokens
    assert call.status == "ok" and call.cost_usd == Decimal("0.0000236")
    assert held == 0 and counter.reserved.nanousd == 0
    assert counter.spent.nanousd == to_nanousd(call.cost_usd) and counter.spent.tokens == 29
    assert outcome.outcome == "error" and "abandoned" in outcome.detail


async def test_a_request_cancelled_from_outside_settles_its_hold_then_stops(
    ledger_url: str,
) -> None:
    """The request's task cancelled mid-call (as the drain deadline does): the cut-off call is
    recorded, the hold settled at once, and the cancellation goes on."""
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    called, release = asyncio.Event(), threading.Event()

    async def upstream(request: httpx2.Request) -> httpx2.Response:
        called.set()
        while not release.is_set():
            await asyncio.sleep(0.005)
        return httpx2.Response(200, json=ofx.completion("late"))

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(upstream))
    config = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    provider = OpenAICompatProvider("openai", config, "sk-upstream", http_client=http)
    settings = settings_for(ledger_url, budget_store="memory")
    engine = Engine(settings, providers={"openai": provider})
    app = create_app(settings, engine=engine)
    service: Gateway = app.state.gateway
    body = {"model": MINI, "messages": HELLO, "max_tokens": 100}
    await service.start()
    try:
        sent: list[Any] = []
        request = asyncio.create_task(app(_scope(token), _receive(body), _send(sent)))
        await called.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        store = service.running.budgets.store
        assert store is not None
        for _ in range(500):  # the settlement runs in a task of its own: let it finish
            if not await store.held():
                break
            await asyncio.sleep(0.01)
        counter, held = await store.counter("key:team:total"), await store.held()
    finally:
        release.set()
        await service.stop()
        await engine.aclose()
    assert sent == []  # no answer: the request was stopped
    assert held == 0 and counter.reserved.nanousd == 0
    worst, _ = worst_case(request_from_openai(body), [[load_catalog().get(f"openai:{MINI}")]], 1.1)
    assert counter.spent == worst  # the cut-off call: cost unknown, charged its worst case


def _scope(token: str) -> dict[str, Any]:
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"content-type", b"application/json"),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _receive(body: dict[str, Any]) -> Any:
    """The body, then nothing (a client still connected, waiting)."""
    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def _send(sent: list[Any]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return send
