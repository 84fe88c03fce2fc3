"""The dashboard: its JSON API over a real SQLite ledger filled through the gateway, its login,
and the page itself in headless Chromium (Debian's ``chromium``, driven by Playwright)."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from itsdangerous import TimestampSigner
from playwright.sync_api import Browser, expect, sync_playwright
from sqlalchemy import select

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tests.test_gateway_drain import _free_port, _wait_ready
from tierwise.catalog import load_catalog
from tierwise.config import Settings
from tierwise.cost import price_tokens
from tierwise.errors import LedgerError
from tierwise.gateway.dashboard import queries
from tierwise.gateway.dashboard.session import COOKIE, DashboardAuth, SessionStore, new_session_id
from tierwise.gateway.throttle import FailureThrottle
from tierwise.ledger.records import (
    CallRecord,
    ConsultRecord,
    DecisionRecord,
    EscalationRecord,
    TaskRecord,
)
from tierwise.ledger.report import spend_report
from tierwise.ledger.schema import dashboard_sessions
from tierwise.ledger.store import Ledger
from tierwise.messages import TokenCounts

HAIKU, OPUS = "anthropic:claude-haiku-4-5", "anthropic:claude-opus-4-7"
CANDIDATES = f"candidates={HAIKU},{OPUS}"
POLICIES = {
    "cheap": f"route:cheapest?{CANDIDATES}",
    "best": f"route:strongest?{CANDIDATES}",
}
HELLO: Any = [{"role": "user", "content": "Hello"}]  # for both SDKs' message types
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
ADVISOR_TOOL = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = ("chart-over-time", "chart-savings", "chart-by-model", "chart-by-role")
BEARER = {"authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Filled:
    """A running gateway whose ledger holds real traffic."""

    gw: Served
    escalated_task: str

    @property
    def url(self) -> str:
        return self.gw.url

    def ledger(self) -> Ledger:
        self.gw.flush_ledger()  # the gateway writes its records behind the response
        return Ledger.open(self.gw.settings.resolved_ledger_url())


def _fill(gw: Served) -> str:
    """Seven tasks through the gateway with the official SDKs: five routed (two policies),
    one on a fixed OpenAI model, one that consulted the advisor tool. Then an escalation and
    a decision whose reason carries markup, appended as a strategy would. The escalated
    task's id."""
    anthropic, openai = gw.anthropic(), gw.openai()
    for _ in range(5):
        gw.anthropic_fake.reply_message(afx.text_message("fine"))
    cheap = anthropic.messages.with_raw_response.create(
        model="tierwise/cheap", max_tokens=64, messages=HELLO
    )
    anthropic.messages.create(model="tierwise/cheap", max_tokens=64, messages=HELLO)
    with anthropic.messages.stream(model="tierwise/cheap", max_tokens=64, messages=HELLO) as stream:
        stream.get_final_message()
    for _ in range(2):
        openai.chat.completions.create(model="tierwise/best", messages=HELLO, max_tokens=64)
    gw.openai_fake.reply_completion(ofx.completion("mini answer"))
    openai.chat.completions.create(model="openai:gpt-4.1-mini", messages=HELLO, max_tokens=64)
    gw.anthropic_fake.reply_message(afx.advisor_message())
    anthropic.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=512,
        messages=HELLO,
        extra_body={"tools": [ADVISOR_TOOL]},
        extra_headers={"anthropic-beta": afx.ADVISOR_BETA},
    )
    task_id = cheap.headers["x-tierwise-task-id"]
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        ledger.append(
            EscalationRecord(task_id=task_id, from_model=HAIKU, to_model=OPUS, trigger="gate"),
            DecisionRecord(task_id="t-markup", router="test", chosen_model=HAIKU, reason=XSS),
        )
    return task_id


@pytest.fixture
def filled(settings: Settings) -> Iterator[Filled]:
    config = gateway_settings(settings.resolved_ledger_url(), policies=POLICIES)
    with running_gateway(config) as gw:
        yield Filled(gw, _fill(gw))


def _get(
    filled: Filled, path: str, cookies: dict[str, str] | None = None, **options: object
) -> httpx2.Response:
    with httpx2.Client(base_url=filled.url, timeout=10, cookies=cookies) as http:
        return http.get(path, **options)  # type: ignore[arg-type]


# --- the JSON API -----------------------------------------------------------------------------


def test_summary_matches_the_ledger_and_the_spend_report(filled: Filled) -> None:
    body = _get(filled, "/dashboard/api/summary?days=1", headers=BEARER).json()
    with filled.ledger() as ledger:
        calls = ledger.calls()
        report = spend_report(ledger, load_catalog())
    assert body["calls"] == len(calls) == 7 and body["unknown_cost_calls"] == 0
    assert Decimal(body["cost_usd"]) == report.total_cost_usd == sum(c.cost_usd or 0 for c in calls)
    by_model = {line["name"]: line for line in body["by_model"]}
    assert {name: line["calls"] for name, line in by_model.items()} == {
        HAIKU: 3,
        OPUS: 2,
        "openai:gpt-4.1-mini": 1,
        "anthropic:claude-sonnet-4-6": 1,
    }
    for name, line in report.by_model.items():
        assert Decimal(by_model[name]["cost_usd"]) == line.cost_usd
    # the native advisor tool's sub-inference is the advisor's share, at the advisor's prices
    (advised,) = [call for call in calls if call.iterations]
    (sub,) = [it for it in advised.iterations if it["kind"] == "advisor_message"]
    advisor_spec = load_catalog().find_upstream("anthropic", sub["model"])
    assert advisor_spec is not None and advisor_spec.id == OPUS
    priced = price_tokens(TokenCounts.model_validate(sub), advisor_spec.prices)
    assert priced is not None and priced.total > 0
    roles = {line["name"]: Decimal(line["cost_usd"]) for line in body["by_role"]}
    assert roles == {"executor": report.total_cost_usd - priced.total, "advisor": priced.total}
    assert {line["name"]: line["calls"] for line in body["by_role"]} == {
        "executor": 7,
        "advisor": 1,
    }
    assert body["decisions_by_model"] == {  # fixed policies record theirs too; + the markup one
        HAIKU: 4,
        OPUS: 2,
        "anthropic:claude-sonnet-4-6": 1,
        "openai:gpt-4.1-mini": 1,
    }
    savings = body["savings"]
    assert savings["strongest_model"] == report.strongest_model
    assert Decimal(savings["counterfactual_cost_usd"]) == report.counterfactual_cost_usd
    assert report.savings_usd is not None and report.savings_usd > 0
    assert Decimal(savings["savings_usd"]) == report.savings_usd
    assert body["rates"] == {
        "tasks": 7,
        "escalated_tasks": 1,
        "escalation_rate": 1 / 7,
        "failed_over_tasks": 0,
        "failover_rate": 0.0,
        "advisor_tasks": 1,
        "advisor_consult_rate": 1 / 7,
        "consults": 1,  # recorded by the advisor layer for the native exchange
    }
    over_time = body["over_time"]
    assert over_time["bucket"] == "hour" and len(over_time["starts"]) == 24
    stacked = sum(Decimal(v) for series in over_time["cost_by_model"].values() for v in series)
    assert stacked == Decimal(over_time["cumulative_cost_usd"][-1]) == report.total_cost_usd
    cumulative = over_time["cumulative_counterfactual_usd"]
    assert Decimal(cumulative[-1]) == report.counterfactual_cost_usd
    assert sum(over_time["calls"]) == 7


def test_long_windows_are_daily_and_bad_numbers_are_refused(filled: Filled) -> None:
    month = _get(filled, "/dashboard/api/summary?days=30", headers=BEARER).json()
    assert month["over_time"]["bucket"] == "day" and len(month["over_time"]["starts"]) == 30
    assert sum(month["over_time"]["calls"]) == 7
    refused = _get(filled, "/dashboard/api/summary?days=lots", headers=BEARER)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "`days` must be a whole number, not 'lots'"
    for page in ("-1", "²"):
        bad = _get(filled, f"/dashboard/api/decisions?page={page}", headers=BEARER)
        assert bad.status_code == 400 and "whole number" in bad.json()["error"]["message"]


def test_decisions_are_paginated_searchable_and_carry_their_task(filled: Filled) -> None:
    page = _get(filled, "/dashboard/api/decisions", headers=BEARER).json()
    assert page["total"] == 8 and page["pages"] == 1 and len(page["rows"]) == 8
    newest, *_, oldest = page["rows"]
    assert newest["reason"] == XSS and newest["policy"] is None  # a task the ledger lacks
    assert newest["task_calls"] == 0 and newest["outcome"] is None
    assert oldest["task_id"] == filled.escalated_task
    assert oldest["policy"] == POLICIES["cheap"] and oldest["source"] == "gateway"
    assert oldest["escalations"] == [{"to_model": OPUS, "trigger": "gate"}]
    assert oldest["outcome"] == "success"
    assert oldest["reason"] == f"baseline: always the cheapest candidate -> {HAIKU}"
    assert [c["model"] for c in oldest["candidates"]] == [HAIKU, OPUS]
    with filled.ledger() as ledger:
        (call,) = ledger.calls(task_id=filled.escalated_task)
    assert Decimal(oldest["task_cost_usd"]) == call.cost_usd and oldest["task_calls"] == 1

    def search(q: str, page: int = 1) -> Any:
        params = {"q": q, "page": str(page)}
        return _get(filled, "/dashboard/api/decisions", params=params, headers=BEARER).json()

    strongest = search("STRONGEST")
    assert strongest["total"] == 2
    assert all(row["chosen_model"] == OPUS for row in strongest["rows"])
    assert search(filled.escalated_task[:12])["total"] == 1
    assert search("route:cheapest")["total"] == 3  # the policy, from the joined task
    assert search("100%")["total"] == 0  # % is literal, not a wildcard
    assert search("cheapest", page=99)["page"] == 1  # clamped to the last page


def test_a_paginated_query_reads_pages_of_the_configured_size(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'many.db'}") as ledger:
        ledger.append(
            *(
                DecisionRecord(task_id=f"t{i:03d}", router="r", chosen_model=HAIKU, reason=f"n{i}")
                for i in range(queries.PAGE_SIZE * 2 + 3)
            )
        )
        first = queries.decision_page(ledger)
        last = queries.decision_page(ledger, page=3)
    assert first.pages == 3 and first.total == 53
    assert [row.reason for row in first.rows[:2]] == ["n52", "n51"]
    assert [row.reason for row in last.rows] == ["n2", "n1", "n0"]


# --- the queries on SQLite and PostgreSQL -------------------------------------------------------

POSTGRES_URL = os.environ.get(
    "TIERWISE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
FAILOVER = "failover: APIConnectionError: connection reset"


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """An empty ledger: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
            yield ledger
        return
    psycopg = pytest.importorskip("psycopg")
    schema = f"tierwise_dash_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}")
    try:
        with Ledger.open(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}") as ledger:
            yield ledger
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _history(ledger: Ledger) -> tuple[str, str]:
    """Two top-level tasks this week — one escalated and recorded a consult; one failed over,
    with a call of unknown cost and an advisor sub-task that escalated — and one from last
    month; their ids."""
    day = datetime(2026, 3, 9, 10, tzinfo=UTC)
    today = datetime(2026, 3, 10, 9, tzinfo=UTC)
    a = TaskRecord(policy="route:rules", created_at=day)
    b = TaskRecord(policy="fixed:openai:gpt-4.1-mini", created_at=today)
    sub = TaskRecord(parent_id=b.id, policy="advisor", created_at=today)
    old = TaskRecord(policy="route:rules", created_at=datetime(2026, 2, 1, tzinfo=UTC))

    def call(task: TaskRecord, model: str, cost: str | None, tokens: tuple[int, int]) -> CallRecord:
        return CallRecord(
            task_id=task.id,
            parent_id=task.parent_id,
            role="advisor" if task is sub else "executor",
            provider=model.partition(":")[0],
            model=model,
            cost_usd=None if cost is None else Decimal(cost),
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            created_at=task.created_at,
        )

    ledger.append(
        a,
        b,
        sub,
        old,
        DecisionRecord(
            task_id=a.id,
            router="rules",
            chosen_model=HAIKU,
            reason="short: small tier",
            created_at=day,
        ),
        call(a, HAIKU, "0.001", (1000, 100)),
        EscalationRecord(
            task_id=a.id, from_model=HAIKU, to_model=OPUS, trigger="gate", created_at=day
        ),
        call(a, OPUS, "0.02", (1000, 200)),
        DecisionRecord(
            task_id=b.id,
            router="fixed",
            chosen_model="openai:gpt-4.1-mini",
            reason="pinned",
            created_at=today,
        ),
        call(b, "openai:gpt-4.1-mini", None, (500, 50)),
        call(sub, OPUS, "0.05", (2000, 300)),
        EscalationRecord(
            task_id=b.id,
            from_model="openai:gpt-4.1-mini",
            to_model=HAIKU,
            trigger=FAILOVER,
            created_at=today,
        ),
        EscalationRecord(
            task_id=sub.id, from_model=OPUS, to_model=OPUS, trigger="gate: retry", created_at=today
        ),
        call(old, HAIKU, "1.0", (10, 10)),
        ConsultRecord(
            task_id=a.id,
            mode="native",
            executor_model=HAIKU,
            advisor_model=OPUS,
            turn_index=0,
            consult_index=1,
            result="advisor_result",
            created_at=day,
        ),
    )
    return a.id, b.id


def test_summary_on_each_database(any_ledger: Ledger) -> None:
    _history(any_ledger)
    catalog = load_catalog()
    found = queries.summary(any_ledger, catalog, 7, now=NOW)
    assert found.since == datetime(2026, 3, 4, tzinfo=UTC)
    assert (found.calls, found.unknown_cost_calls, found.cost_usd) == (4, 1, Decimal("0.071"))
    roles = {
        line.name: (line.calls, line.unknown_cost_calls, line.cost_usd) for line in found.by_role
    }
    assert roles == {"executor": (3, 1, Decimal("0.021")), "advisor": (1, 0, Decimal("0.05"))}
    assert [line.name for line in found.by_model] == [OPUS, HAIKU, "openai:gpt-4.1-mini"]
    assert found.rates.model_dump() == {
        "tasks": 2,
        "escalated_tasks": 2,  # a's own, and b's through its sub-task
        "escalation_rate": 1.0,
        "failed_over_tasks": 1,
        "failover_rate": 0.5,
        "advisor_tasks": 2,  # b through its advisor sub-task, a through its consult record
        "advisor_consult_rate": 1.0,
        "consults": 1,
    }
    t = found.over_time
    assert [s.day for s in t.starts] == [4, 5, 6, 7, 8, 9, 10]
    assert t.cost_by_model[OPUS] == [0, 0, 0, 0, 0, Decimal("0.02"), Decimal("0.05")]
    assert t.cumulative_cost_usd[-2:] == [Decimal("0.021"), Decimal("0.071")]
    strongest = catalog.strongest()
    assert strongest is not None and found.savings.strongest_model == strongest.id
    known = price_tokens(TokenCounts(input_tokens=4000, output_tokens=600), strongest.prices)
    assert known is not None and found.savings.counterfactual_cost_usd == known.total
    assert t.cumulative_counterfactual_usd is not None
    assert t.cumulative_counterfactual_usd[-1] == known.total
    assert found.savings.savings_usd == known.total - Decimal("0.071")
    assert found.decisions_by_model == {HAIKU: 1, "openai:gpt-4.1-mini": 1}
    hourly = queries.summary(any_ledger, catalog, 1, now=NOW)
    assert hourly.over_time.bucket == "hour" and hourly.calls == 2  # today's, 09:00


def test_decisions_on_each_database(any_ledger: Ledger) -> None:
    a, b = _history(any_ledger)
    page = queries.decision_page(any_ledger)
    assert [row.task_id for row in page.rows] == [b, a]
    pinned, routed = page.rows
    assert (pinned.task_calls, pinned.task_cost_usd) == (2, None)  # one call of unknown cost
    assert (routed.task_calls, routed.task_cost_usd) == (2, Decimal("0.021"))
    assert [e.to_model for e in routed.escalations] == [OPUS] and routed.policy == "route:rules"
    assert [e.trigger for e in pinned.escalations] == [FAILOVER]
    assert [r.task_id for r in queries.decision_page(any_ledger, "SMALL TIER").rows] == [a]
    assert [r.task_id for r in queries.decision_page(any_ledger, "gpt-4.1").rows] == [b]
    assert queries.decision_page(any_ledger, "_").total == 0  # _ is literal


# --- who may see it ---------------------------------------------------------------------------


def test_nothing_without_the_admin_key(filled: Filled) -> None:
    for path in ("/dashboard/api/summary", "/dashboard/api/decisions"):
        refused = _get(filled, path)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith(
            "Bearer"
        )
        assert _get(filled, path, headers={"authorization": "Bearer nope"}).status_code == 401
        forged = {COOKIE: "admin.AAAAAA.forged"}
        assert _get(filled, path, cookies=forged).status_code == 401
    page = _get(filled, "/dashboard")
    assert page.status_code == 303 and page.headers["location"] == "/dashboard/login"
    assert _get(filled, "/dashboard", headers=BEARER).status_code == 200


def test_login_sets_a_strict_httponly_session_cookie(filled: Filled) -> None:
    with httpx2.Client(base_url=filled.url, timeout=10) as http:
        wrong = http.post("/dashboard/login", data={"key": "guess"})
        assert wrong.status_code == 401 and "not the admin key" in wrong.text
        assert COOKIE not in http.cookies
        right = http.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert right.status_code == 303 and right.headers["location"] == "/dashboard"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
        assert ADMIN_KEY.lower() not in cookie
        page = http.get("/dashboard")
        assert page.status_code == 200 and '<canvas id="chart-over-time">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/dashboard/api/summary").status_code == 200
        http.post("/dashboard/logout")
        assert http.get("/dashboard/api/summary").status_code == 401


def test_a_session_signed_for_another_admin_key_is_refused() -> None:
    ours, theirs = DashboardAuth("key-one"), DashboardAuth("key-two")
    session = new_session_id()
    assert ours.session_id(ours.issue(session)) == session
    assert ours.session_id(theirs.issue(session)) is None
    assert DashboardAuth(None).session_id(ours.issue(session)) is None


def test_without_an_admin_key_the_dashboard_is_off(settings: Settings) -> None:
    config = gateway_settings(settings.resolved_ledger_url()).model_copy(update={"admin_key": None})
    with running_gateway(config) as gw, httpx2.Client(base_url=gw.url, timeout=10) as http:
        login = http.get("/dashboard/login")
        assert login.status_code == 503 and "no admin key is configured" in login.text
        assert http.get("/dashboard/api/summary").status_code == 401


# --- sign-in throttling -------------------------------------------------------------------------


@pytest.fixture
def strict_gw(tmp_path: Path) -> Iterator[Served]:
    """A gateway that allows three failed key checks a minute per address."""
    gateway = {"auth_failures": 3, "auth_failure_window_s": 60}
    settings = gateway_settings(f"sqlite:///{tmp_path / 'gw.db'}", gateway=gateway)
    with running_gateway(settings) as served:
        yield served


def test_failed_sign_ins_past_the_limit_get_a_429_even_with_the_right_key(strict_gw) -> None:
    with httpx2.Client(base_url=strict_gw.url, timeout=10) as http:
        wrong = [http.post("/dashboard/login", data={"key": f"guess{i}"}) for i in range(3)]
        assert [r.status_code for r in wrong] == [401, 401, 401]
        blocked = http.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins from your address: try again in" in blocked.text
        assert (
            blocked.headers["content-security-policy"]
            == wrong[0].headers["content-security-policy"]
        )
        assert COOKIE not in http.cookies
        assert http.get("/dashboard/api/summary").status_code == 401
        api = http.get("/dashboard/api/summary", headers=BEARER)  # one throttle for every check
        assert api.status_code == 429 and 1 <= int(api.headers["retry-after"]) <= 60
        assert "too many failed key checks" in api.json()["error"]["message"]


def test_a_successful_sign_in_clears_the_failures(strict_gw) -> None:
    with httpx2.Client(base_url=strict_gw.url, timeout=10) as http:
        for _ in range(2):
            assert http.post("/dashboard/login", data={"key": "guess"}).status_code == 401
        assert http.post("/dashboard/login", data={"key": ADMIN_KEY}).status_code == 303
        again = [http.post("/dashboard/login", data={"key": "guess"}) for _ in range(3)]
        assert [r.status_code for r in again] == [401, 401, 401]  # counted from zero
        assert http.post("/dashboard/login", data={"key": "guess"}).status_code == 429


def _login(http: httpx2.Client, key: str, **headers: str) -> httpx2.Response:
    """Sign in with ``key``; ``headers`` as ``x_forwarded_for="..."``."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return http.post("/dashboard/login", data={"key": key}, headers=sent)


def test_rotating_x_forwarded_for_from_an_untrusted_peer_is_throttled(strict_gw) -> None:
    with httpx2.Client(base_url=strict_gw.url, timeout=10) as http:
        wrong = [_login(http, "guess", x_forwarded_for=f"203.0.113.{i}") for i in range(3)]
        assert [r.status_code for r in wrong] == [401, 401, 401]
        assert _login(http, ADMIN_KEY, x_forwarded_for="198.51.100.1").status_code == 429
        api = http.get("/dashboard/api/summary", headers={**BEARER, "x-forwarded-for": "192.0.2.1"})
        assert api.status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(tmp_path: Path) -> None:
    gateway = {"auth_failures": 3, "trusted_proxies": ["127.0.0.1"]}
    settings = gateway_settings(f"sqlite:///{tmp_path / 'gw.db'}", gateway=gateway)
    with running_gateway(settings) as gw, httpx2.Client(base_url=gw.url, timeout=10) as http:
        # the proxy appends the address it saw; what the client wrote left of it is its own say
        for i in range(3):
            forwarded = f"10.1.1.{i}, 203.0.113.5"
            assert _login(http, "guess", x_forwarded_for=forwarded).status_code == 401
        assert _login(http, ADMIN_KEY, x_forwarded_for="203.0.113.5").status_code == 429
        assert _login(http, ADMIN_KEY, x_forwarded_for="203.0.113.6").status_code == 303


def test_bearer_guesses_on_the_dashboard_api_are_throttled(strict_gw) -> None:
    with httpx2.Client(base_url=strict_gw.url, timeout=10) as http:
        guesses = [
            http.get("/dashboard/api/summary", headers={"authorization": "Bearer guess"}),
            http.get("/dashboard/api/decisions", headers={"x-api-key": "guess"}),
            http.get("/dashboard", headers={"authorization": "Bearer guess"}),
        ]
        assert [r.status_code for r in guesses] == [401, 401, 303]
        for path in ("/dashboard/api/summary", "/dashboard/api/decisions"):
            refused = http.get(path, headers=BEARER)
            assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
            assert refused.headers["content-type"] == "application/json"
            (message,) = refused.json()["error"].values()
            assert message.startswith("too many failed key checks from your address")
        page = http.get("/dashboard", headers=BEARER)
        assert page.status_code == 429 and "Too many failed sign-ins" in page.text
        assert int(page.headers["retry-after"]) >= 1


def test_a_logged_out_cookie_is_refused_here_and_by_another_instance(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'shared.db'}")
    with running_gateway(settings) as one, running_gateway(settings) as other:
        with httpx2.Client(base_url=one.url, timeout=10) as http:
            assert _login(http, ADMIN_KEY).status_code == 303
            session = {COOKIE: http.cookies[COOKIE]}
            assert http.get("/dashboard/api/summary").status_code == 200
            assert http.post("/dashboard/logout").status_code == 303
        for gw in (one, other):
            with httpx2.Client(base_url=gw.url, timeout=10, cookies=session) as replay:
                assert replay.get("/dashboard/api/summary").status_code == 401
                assert replay.get("/dashboard").status_code == 303  # to the login form


def test_a_session_works_on_every_instance_until_it_ends(tmp_path: Path) -> None:
    settings = gateway_settings(f"sqlite:///{tmp_path / 'shared.db'}")
    with running_gateway(settings) as one, running_gateway(settings) as other:
        with httpx2.Client(base_url=one.url, timeout=10) as http:
            assert _login(http, ADMIN_KEY).status_code == 303
            session = {COOKIE: http.cookies[COOKIE]}
        with httpx2.Client(base_url=other.url, timeout=10, cookies=session) as http:
            assert http.get("/dashboard/api/summary").status_code == 200
            assert http.post("/dashboard/logout").status_code == 303  # ended on the other one
        with httpx2.Client(base_url=one.url, timeout=10, cookies=session) as http:
            assert http.get("/dashboard/api/summary").status_code == 401


def test_a_cookie_the_server_holds_no_session_for_is_refused(filled: Filled) -> None:
    """A cookie of before sessions were kept (no id), or a signed id never opened, is refused."""
    secret = hmac.new(ADMIN_KEY.encode(), b"tierwise dashboard session v1", hashlib.sha256)
    signer = TimestampSigner(
        secret.digest(), salt="tierwise.dashboard", digest_method=hashlib.sha256
    )
    auth = DashboardAuth(ADMIN_KEY)
    for cookie in (
        signer.sign(b"admin").decode(),
        auth.issue("admin"),
        auth.issue(new_session_id()),
    ):
        assert _get(filled, "/dashboard/api/summary", cookies={COOKIE: cookie}).status_code == 401


def test_expired_sessions_are_swept_when_one_opens(any_ledger: Ledger) -> None:
    clock = _Clock()
    store = SessionStore(any_ledger, clock=clock)
    first, second = new_session_id(), new_session_id()
    store.open(first, max_age_s=10)
    assert store.active(first) and not store.active(second)
    clock.now += 11
    assert not store.active(first)  # expired, even before it is swept
    store.open(second)
    with any_ledger.transaction("count") as conn:
        ids = conn.execute(select(dashboard_sessions.c.id)).scalars().all()
    assert ids == [hashlib.sha256(second.encode()).hexdigest()]  # no id in the clear
    store.close(second)
    assert not store.active(second)


@pytest.mark.parametrize(
    ("setting", "proxies", "proto", "secure"),
    [
        ("auto", [], None, False),
        ("auto", [], "https", False),  # anyone may write X-Forwarded-Proto
        ("auto", ["127.0.0.1"], "https", True),  # a trusted proxy says it was https
        ("auto", ["127.0.0.1"], "http", False),
        (True, [], None, True),
        (False, ["127.0.0.1"], "https", False),
    ],
)
def test_cookie_secure(
    tmp_path: Path, setting: object, proxies: list[str], proto: str | None, secure: bool
) -> None:
    gateway = {"cookie_secure": setting, "trusted_proxies": proxies}
    settings = gateway_settings(f"sqlite:///{tmp_path / 'gw.db'}", gateway=gateway)
    forwarded = {} if proto is None else {"x_forwarded_proto": proto}
    with running_gateway(settings) as gw, httpx2.Client(base_url=gw.url, timeout=10) as http:
        login = _login(http, ADMIN_KEY, **forwarded)
        session = login.headers["set-cookie"]
        headers = {"cookie": session.split(";")[0]}  # a Secure cookie is not sent over http
        if proto is not None:
            headers["x-forwarded-proto"] = proto
        logout = http.post("/dashboard/logout", headers=headers)
    assert login.status_code == 303 and session.startswith(f"{COOKIE}=")
    for cookie in (session, logout.headers["set-cookie"]):
        assert ("; secure" in cookie.lower()) is secure, cookie


def test_tierwise_serve_believes_no_forwarded_for_by_default(tmp_path: Path) -> None:
    """``tierwise serve`` with the shipped defaults: X-Forwarded-Proto does not make the
    cookie Secure, and guesses from one peer rotating X-Forwarded-For are throttled
    (uvicorn's own proxy headers would believe both from 127.0.0.1)."""
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'ledger_url = "sqlite:///{tmp_path / "ledger.db"}"\n[gateway]\nport = {port}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWISE_")}
    env["TIERWISE_ADMIN_KEY"] = ADMIN_KEY
    command = [sys.executable, "-m", "tierwise", "--config", str(config), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            _wait_ready(http, process)
            signed_in = _login(http, ADMIN_KEY, x_forwarded_proto="https")
            assert signed_in.status_code == 303
            assert "secure" not in signed_in.headers["set-cookie"].lower()
            statuses = [
                _login(http, "guess", x_forwarded_for=f"203.0.113.{i}").status_code
                for i in range(10)
            ]
            assert statuses == [401] * 10
            assert _login(http, ADMIN_KEY, x_forwarded_for="198.51.100.1").status_code == 429
            models = http.get("/v1/models", headers={**BEARER, "x-forwarded-for": "192.0.2.3"})
            assert (
                models.status_code == 429 and models.json()["error"]["type"] == "rate_limit_error"
            )
    finally:
        process.kill()
        process.wait(10)


def test_a_ledger_failure_is_a_503_without_its_detail(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    detail = "could not read: postgresql://tierwise:hunter2@db.internal/ledger refused"

    def down(*_: object, **__: object) -> None:
        raise LedgerError(detail)

    monkeypatch.setattr(queries, "summary", down)
    monkeypatch.setattr(SessionStore, "active", down)
    refused = _get(filled, "/dashboard/api/summary", headers=BEARER)
    assert refused.status_code == 503 and "hunter2" not in refused.text
    assert (
        refused.json()["error"]["message"]
        == "The gateway's ledger is unavailable: try again shortly."
    )
    cookie = {COOKIE: DashboardAuth(ADMIN_KEY).issue(new_session_id())}
    page = _get(filled, "/dashboard", cookies=cookie)
    assert page.status_code == 503 and "db.internal" not in page.text


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_window_slides_per_address() -> None:
    clock = _Clock()
    throttle = FailureThrottle(2, 60, clock=clock)
    throttle.failed("10.0.0.1")
    clock.now += 20
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 40  # until the first failure is 60 s old
    assert throttle.retry_after("10.0.0.2") is None  # another address is not blocked
    clock.now += 40
    assert throttle.retry_after("10.0.0.1") is None  # one failure left in the window
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 20


def test_the_throttle_forgets_old_and_excess_addresses() -> None:
    clock = _Clock()
    throttle = FailureThrottle(5, 60, max_clients=3, clock=clock)
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert len(throttle) == 3  # "a", the least recently failed, is forgotten
    for _ in range(5):
        throttle.failed("b")
    assert throttle.retry_after("b") == 60 and throttle.retry_after("a") is None
    clock.now += 61
    throttle.failed("e")
    assert len(throttle) == 1  # every other address's failures left the window


def test_the_throttle_blocks_for_a_while_and_forgives_one_failure() -> None:
    clock = _Clock()
    throttle = FailureThrottle(3, 60, clock=clock)
    throttle.block("a", 25)  # other processes counted "a" past the limit
    assert throttle.retry_after("a") == 25
    clock.now += 25
    assert throttle.retry_after("a") is None and "a" not in throttle.failing
    throttle.failed("b")
    throttle.failed("b")
    throttle.forgive("b")  # the check counted in advance found the key good
    throttle.failed("b")
    assert throttle.retry_after("b") is None  # two failures, not three
    throttle.forgive("b")
    throttle.forgive("b")
    throttle.forgive("b")  # nothing left to forgive: no error, nothing tracked
    assert len(throttle) == 0


# --- the page in a real browser ---------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


_CHART_STATE = """ids => ids.map(id => {
  const canvas = document.getElementById(id);
  const chart = Chart.getChart(canvas);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  const sum = chart.data.datasets.reduce((t, d) => t + d.data.reduce((a, b) => a + b, 0), 0);
  return {id, type: chart.config.type, datasets: chart.data.datasets.length, sum, painted};
})"""


def test_the_dashboard_in_headless_chromium(filled: Filled, chromium: Browser) -> None:
    api = _get(filled, "/dashboard/api/summary", headers=BEARER).json()
    context = chromium.new_context(viewport={"width": 1400, "height": 1700})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    page.goto(f"{filled.url}/dashboard")
    assert page.url == f"{filled.url}/dashboard/login"  # no key: the login form
    assert page.request.get(f"{filled.url}/dashboard/api/summary").status == 401
    page.fill("#key", "not-the-key")
    page.click("button[type=submit]")
    assert page.url.endswith("/dashboard/login")
    assert page.text_content(".message") == "That is not the admin key."
    assert [p for p in problems if "401" not in p] == []  # only the refused login's status
    problems.clear()
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-summary=ready][data-decisions=ready]")
    assert page.url == f"{filled.url}/dashboard"

    charts = {c["id"]: c for c in page.evaluate(_CHART_STATE, [*CHARTS, "chart-distribution"])}
    assert all(chart["painted"] > 500 for chart in charts.values()), charts
    assert charts["chart-over-time"]["datasets"] == 4  # stacked by model
    assert charts["chart-over-time"]["sum"] == pytest.approx(float(api["cost_usd"]))
    assert charts["chart-by-model"]["sum"] == pytest.approx(float(api["cost_usd"]))
    assert charts["chart-savings"]["datasets"] == 2  # actual and all-on-the-strongest
    assert charts["chart-distribution"]["type"] == "doughnut"
    assert charts["chart-distribution"]["sum"] == 7
    assert page.text_content("#tile-escalation") == "14.3%"
    assert page.text_content("#tile-advisor") == "14.3%"
    assert page.text_content("#tile-failover") == "0.0%"
    assert (
        page.text_content("#tile-advisor-note") == "1 task(s) consulted an advisor · 1 consult(s)"
    )
    routed = page.text_content("#routed-note") or ""
    assert routed.startswith("Chosen per task: ") and f"{HAIKU} 50.0%" in routed  # 4 of 8
    assert page.text_content("#tile-volume") == "7 · 7"

    rows = page.locator("#decisions tbody tr")
    assert rows.count() == 8
    assert rows.first.locator("td.reason div").text_content() == XSS  # shown, not run
    assert page.locator("#decisions tbody img, #decisions tbody script").count() == 0
    assert page.evaluate("window.__xss") is None
    assert "8 decision(s)" in (page.text_content("#page-info") or "")
    screenshot = os.environ.get("DASHBOARD_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)

    page.fill("#search", "strongest")
    expect(rows).to_have_count(2)  # the page's CSP forbids eval, so no wait_for_function
    page.wait_for_selector("body[data-decisions=ready]")
    models = page.locator("#decisions tbody td.model:nth-child(3)").all_text_contents()
    assert models == [OPUS, OPUS]
    assert problems == []

    page.click("text=Sign out")
    page.wait_for_url(f"{filled.url}/dashboard/login")
    page.goto(f"{filled.url}/dashboard")
    assert page.url == f"{filled.url}/dashboard/login"
    context.close()
