"""The ledger on real databases: a SQLite file and the machine's PostgreSQL.

PostgreSQL tests run in a fresh schema per test (dropped afterwards) at
``TIERWISE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``); they
are skipped when it is unreachable, unless ``CI`` is set, where that is a failure.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import create_engine, inspect, text

from tierwise.catalog import CapabilityProfile, Catalog, ModelSpec, Prices
from tierwise.errors import LedgerError, UnknownModelError
from tierwise.ledger import (
    CallRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    Ledger,
    OutcomeRecord,
    TaskRecord,
    default_ledger_url,
)
from tierwise.ledger.export import SCHEMA_VERSION, export_traces, read_traces
from tierwise.ledger.migrate import head_revision
from tierwise.ledger.report import SpendLine, spend_report
from tierwise.ledger.schema import RECORD_TABLES, VERSION_TABLE, metadata, record_columns
from tierwise.ledger.store import normalize_url
from tierwise.messages import TokenCounts

POSTGRES_URL = os.environ.get(
    "TIERWISE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TABLES = {"tasks", "calls", "decisions", "escalations", "gate_results", "outcomes"}
EXACT = Decimal("0.000123456789")
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        reason = f"PostgreSQL unreachable at {POSTGRES_URL}: {' '.join(str(exc).split())}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to an empty database: a SQLite file in a folder yet to be made, or a PG schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'data' / 'tierwise' / 'ledger.db').as_posix()}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"tierwise_test_{uuid.uuid4().hex[:12]}"
    _admin(base, "CREATE SCHEMA {}", schema)
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        _admin(base, "DROP SCHEMA {} CASCADE", schema)


def _admin(url: str, statement: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(schema)))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url) as opened:
        yield opened


def sample_records() -> list:
    """One record of every type (two calls: exact cost and unknown cost), fixed timestamps."""
    task = TaskRecord(
        id="task-1", created_at=T0, policy="cascade", prompt_text="2+2?", metadata={"k": [1, "x"]}
    )
    cheap = CallRecord(
        created_at=T0 + timedelta(seconds=1),
        task_id=task.id,
        provider="anthropic",
        model="anthropic:claude-haiku",
        input_tokens=1200,
        output_tokens=300,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=20,
        cache_read_tokens=4000,
        iterations=[{"kind": "message", "input_tokens": 1200}],
        cost_usd=EXACT,
        latency_ms=812.5,
        ttft_ms=120.25,
        stop_reason="end_turn",
        prompt_text="2+2?",
        response_text="5",
    )
    strong = CallRecord(
        created_at=T0 + timedelta(seconds=2),
        task_id=task.id,
        role="advisor",
        provider="local",
        model="local:mystery",
        status="error",
        stream=True,
        tokens_estimated=True,
        cost_usd=None,
        error_type="ServerError",
        error_message="boom",
        http_status=503,
    )
    return [
        task,
        cheap,
        strong,
        DecisionRecord(
            created_at=T0,
            task_id=task.id,
            router="rules",
            chosen_model=cheap.model,
            candidates=[{"model": cheap.model, "predicted_quality": 0.8, "predicted_cost": None}],
            threshold=0.7,
            reason="cheapest above target",
        ),
        EscalationRecord(
            created_at=T0 + timedelta(seconds=3),
            task_id=task.id,
            from_model=cheap.model,
            to_model="anthropic:claude-opus",
            trigger="gate:json",
        ),
        GateRecord(
            created_at=T0 + timedelta(seconds=3),
            task_id=task.id,
            call_id=cheap.id,
            gate="json",
            passed=False,
            score=0.25,
            reason="not JSON",
        ),
        OutcomeRecord(
            created_at=T0 + timedelta(seconds=4),
            task_id=task.id,
            outcome="success",
            correct=False,
            source="dataset",
        ),
    ]


def _sa_engine(url: str):
    """A plain SQLAlchemy engine on the ledger's database, to look behind the API."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(parsed)


# --- schema and migrations ---------------------------------------------------------------------


def test_tables_mirror_the_records() -> None:
    for record_type, table in RECORD_TABLES.items():
        assert {c.name for c in record_columns(table)} == set(record_type.model_fields)


def test_open_migrates_and_is_idempotent(ledger_url: str) -> None:
    Ledger.open(ledger_url).close()
    with Ledger.open(ledger_url) as again:
        assert again.revision() == head_revision()
    engine = _sa_engine(ledger_url)
    try:
        found = inspect(engine)
        assert TABLES | {VERSION_TABLE} <= set(found.get_table_names())
        calls_indexed = {tuple(ix["column_names"]) for ix in found.get_indexes("calls")}
        assert {("task_id",), ("created_at",), ("model",)} <= calls_indexed
        with engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
        assert versions == [(head_revision(),)]
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_declared_schema(ledger: Ledger, ledger_url: str) -> None:
    engine = _sa_engine(ledger_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_a_newer_schema_is_refused(ledger: Ledger, ledger_url: str) -> None:
    engine = _sa_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0999'"))
    engine.dispose()
    with pytest.raises(LedgerError, match=r"revision 0999, newer than .* \(\d{4}\); upgrade"):
        Ledger.open(ledger_url)


def test_a_failed_migration_is_one_line(ledger_url: str) -> None:
    engine = _sa_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE calls (x INTEGER)"))
    engine.dispose()
    with pytest.raises(LedgerError) as caught:
        Ledger.open(ledger_url)
    assert caught.value.message.startswith("ledger migration failed at ")
    assert "\n" not in caught.value.message
    engine = _sa_engine(ledger_url)
    assert "tasks" not in inspect(engine).get_table_names()  # the migration rolled back whole
    engine.dispose()


# --- append and read ---------------------------------------------------------------------------


def test_every_record_type_round_trips(ledger: Ledger) -> None:
    records = sample_records()
    ledger.append(*records)
    read_back = [
        *ledger.tasks(),
        *ledger.calls(),
        *ledger.decisions(),
        *ledger.escalations(),
        *ledger.gate_results(),
        *ledger.outcomes(),
    ]
    assert sorted(read_back, key=lambda r: r.id) == sorted(records, key=lambda r: r.id)


def test_costs_are_exact_and_unknown_stays_none(ledger: Ledger) -> None:
    costs = [EXACT, None, Decimal("12345.678901234567890"), Decimal("0"), Decimal("1E+1")]
    calls = [CallRecord(task_id="t", provider="p", model="p:m", cost_usd=c) for c in costs]
    ledger.append(*calls)
    stored = [call.cost_usd for call in ledger.calls()]
    assert stored == [EXACT, None, Decimal("12345.678901234567890"), Decimal(0), Decimal(10)]
    assert [str(c) for c in stored if c is not None] == [
        "0.000123456789",
        "12345.67890123456789",
        "0",
        "10",
    ]


def test_timestamps_come_back_aware_utc(ledger: Ledger) -> None:
    plus_two = timezone(timedelta(hours=2))
    ledger.append(TaskRecord(created_at=datetime(2025, 3, 2, 1, 30, tzinfo=plus_two)))
    (task,) = ledger.tasks()
    assert task.created_at == datetime(2025, 3, 1, 23, 30, tzinfo=UTC)
    assert task.created_at.utcoffset() == timedelta(0)


def test_filters_by_task_since_and_limit(ledger: Ledger) -> None:
    calls = [
        CallRecord(
            created_at=T0 + timedelta(minutes=i), task_id=f"t{i % 2}", provider="p", model="p:m"
        )
        for i in range(6)
    ]
    ledger.append(*reversed(calls))
    assert ledger.calls() == calls
    assert ledger.calls(task_id="t1") == calls[1::2]
    assert ledger.calls(since=T0 + timedelta(minutes=4)) == calls[4:]
    assert ledger.calls(limit=2) == calls[4:]
    assert ledger.calls(task_id="t0", since=T0 + timedelta(minutes=1), limit=1) == [calls[4]]
    assert ledger.tasks() == []


def test_equal_timestamps_keep_insertion_order(ledger: Ledger) -> None:
    calls = [CallRecord(created_at=T0, task_id="t", provider="p", model=f"p:{i}") for i in range(5)]
    ledger.append(*calls)
    assert [c.model for c in ledger.calls()] == [c.model for c in calls]


def test_append_is_all_or_nothing(ledger: Ledger) -> None:
    first = TaskRecord()
    ledger.append(first)
    with pytest.raises(LedgerError) as caught:
        ledger.append(
            TaskRecord(id="new"), CallRecord(task_id="new", provider="p", model="p:m"), first
        )
    assert caught.value.message.startswith("could not write to the ledger at ")
    assert "\n" not in caught.value.message
    assert ledger.tasks() == [first]
    assert ledger.calls() == []


def test_the_ledger_is_append_only() -> None:
    verbs = ("update", "delete", "remove", "upsert", "replace", "truncate", "clear", "purge")
    assert not [name for name in dir(Ledger) if name.startswith(verbs)]


def test_only_records_can_be_appended(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match="str is not a ledger record type"):
        ledger.append("nope")  # type: ignore[arg-type]


def test_concurrent_appends_from_threads(ledger: Ledger) -> None:
    def work(n: int) -> None:
        for i in range(20):
            ledger.append(CallRecord(task_id=f"t{n}", provider="p", model="p:m", input_tokens=i))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ledger.calls()) == 160
    assert len(ledger.calls(task_id="t3")) == 20


def test_closed_ledger_refuses_work(ledger_url: str) -> None:
    opened = Ledger.open(ledger_url)
    opened.close()
    with pytest.raises(LedgerError, match="is closed"):
        opened.append(TaskRecord())


# --- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    path = tmp_path / "ledger.db"
    Ledger.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_writers_wait_for_the_lock(tmp_path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    writer = threading.Thread(target=ledger.append, args=(TaskRecord(id="late"),))
    writer.start()
    time.sleep(0.3)
    assert writer.is_alive()  # waiting (busy_timeout), not failing with "database is locked"
    holder.execute("COMMIT")
    holder.close()
    writer.join(timeout=10)
    assert [t.id for t in ledger.tasks()] == ["late"]
    ledger.close()


def test_sqlite_in_memory_is_shared_across_threads() -> None:
    with Ledger.open("sqlite://") as ledger:
        thread = threading.Thread(target=ledger.append, args=(TaskRecord(id="x"),))
        thread.start()
        thread.join()
        assert [t.id for t in ledger.tasks()] == ["x"]


def test_default_url_is_a_sqlite_file_in_the_user_data_dir() -> None:
    url = default_ledger_url()
    assert url.startswith("sqlite:///")
    assert url.endswith("/ledger.db")
    assert "tierwise" in str(normalize_url(url).database)


# --- errors ------------------------------------------------------------------------------------


def test_unreachable_postgres_is_one_clear_line() -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open("postgresql://postgres:s3cret@127.0.0.1:1/test")
    message = caught.value.message
    assert message.startswith(
        "ledger database unreachable at postgresql://postgres:***@127.0.0.1:1/test: "
    )
    assert "s3cret" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("url", "start"),
    [
        ("not a url", "invalid ledger URL 'not a url': expected sqlite:///"),
        ("nosuchdb://u:pw@h/db", "cannot open the ledger at nosuchdb://u:***@h/db: "),
    ],
)
def test_bad_urls_are_one_clear_line(url: str, start: str) -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open(url)
    assert caught.value.message.startswith(start)
    assert "pw" not in caught.value.message.replace(start, "")
    assert "\n" not in caught.value.message


def test_unusable_sqlite_path_is_one_clear_line(tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(
        LedgerError, match=r"^cannot open the ledger at sqlite:///.*file/ledger\.db"
    ):
        Ledger.open(f"sqlite:///{tmp_path / 'file' / 'ledger.db'}")


def test_postgres_urls_use_psycopg() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"


# --- export ------------------------------------------------------------------------------------


def test_export_round_trips(ledger: Ledger) -> None:
    records = sample_records()
    bare = TaskRecord(id="task-2", created_at=T0 + timedelta(hours=1), source="cli")
    ledger.append(*records, bare)
    out = io.StringIO()
    assert export_traces(ledger, out) == 2
    lines = out.getvalue().splitlines()
    assert all(json.loads(line)["schema"] == SCHEMA_VERSION for line in lines)
    first, second = read_traces(["", *lines, "  "])
    assert TaskRecord.model_validate(first) == records[0]
    rebuilt = [
        *(CallRecord.model_validate(c) for c in first["calls"]),
        *(DecisionRecord.model_validate(d) for d in first["decisions"]),
        *(EscalationRecord.model_validate(e) for e in first["escalations"]),
        *(GateRecord.model_validate(g) for g in first["gate_results"]),
        *(OutcomeRecord.model_validate(o) for o in first["outcomes"]),
    ]
    assert rebuilt == records[1:]
    assert [c["cost_usd"] for c in first["calls"]] == ["0.000123456789", None]
    assert first["outcomes"][0]["correct"] is False
    assert second["id"] == "task-2"
    parts = ("calls", "decisions", "escalations", "gate_results", "outcomes")
    assert all(second[part] == [] for part in parts)


def test_export_since_keeps_later_tasks_whole(ledger: Ledger) -> None:
    ledger.append(*sample_records(), TaskRecord(id="later", created_at=T0 + timedelta(days=1)))
    ledger.append(CallRecord(created_at=T0, task_id="later", provider="p", model="p:m"))
    out = io.StringIO()
    assert export_traces(ledger, out, since=T0 + timedelta(hours=1)) == 1
    (trace,) = read_traces(out.getvalue().splitlines())
    assert trace["id"] == "later"
    assert len(trace["calls"]) == 1  # its call counts though it is older than ``since``


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", "trace line 2: not valid JSON"),
        ("[1, 2]", "trace line 2: expected a JSON object"),
        ('{"schema": 99}', "trace line 2: unsupported trace schema 99"),
    ],
)
def test_read_traces_rejects_bad_lines(line: str, error: str) -> None:
    good = json.dumps({"schema": SCHEMA_VERSION, "id": "t"})
    with pytest.raises(LedgerError, match=error):
        list(read_traces([good, line]))


# --- spend report ------------------------------------------------------------------------------

SMALL = ModelSpec(
    id="test:small",
    prices=Prices(
        input=Decimal("0.25"),
        output=Decimal("1.25"),
        cache_write_5m=Decimal("0.30"),
        cache_write_1h=Decimal("0.50"),
        cache_read=Decimal("0.03"),
    ),
    profile=CapabilityProfile(tier=1),
)
BIG = ModelSpec(
    id="test:big",
    prices=Prices(
        input=Decimal(3),
        output=Decimal(15),
        cache_write_5m=Decimal("3.75"),
        cache_write_1h=Decimal(6),
        cache_read=Decimal("0.30"),
    ),
    profile=CapabilityProfile(tier=5),
)
DAY1, DAY2 = date(2025, 3, 1), date(2025, 3, 2)


def spend_calls() -> list[CallRecord]:
    """Four calls over two UTC days; costs computed by hand at SMALL's and BIG's prices."""

    def call(at: datetime, model: str, cost: str | None, role="executor", **tokens):
        cost_usd = None if cost is None else Decimal(cost)
        return CallRecord(
            created_at=at,
            task_id="t",
            provider="test",
            model=model,
            role=role,
            cost_usd=cost_usd,
            **tokens,
        )

    return [
        # 1000*0.25 + 500*1.25 + 2000*0.03 = 935 per million
        call(datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC), "test:small", "0.000935",
             input_tokens=1000, output_tokens=500, cache_read_tokens=2000),
        # 2000*3 + 100*15 = 7500 per million
        call(datetime(2025, 3, 1, 10, tzinfo=UTC), "test:big", "0.0075", role="advisor",
             input_tokens=2000, output_tokens=100),
        # 400*0.25 + 200*1.25 + 1000*0.30 + 1000*0.50 = 1150 per million
        call(datetime(2025, 3, 2, 0, 0, tzinfo=UTC), "test:small", "0.00115",
             input_tokens=400, output_tokens=200, cache_write_5m_tokens=1000,
             cache_write_1h_tokens=1000),
        # 01:30 at +02:00 is 23:30 UTC on DAY1; its cost is unknown
        call(datetime(2025, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))), "test:other",
             None, input_tokens=100, output_tokens=100),
    ]  # fmt: skip


def test_spend_report_figures(ledger: Ledger) -> None:
    ledger.append(*spend_calls())
    report = spend_report(ledger, Catalog([SMALL, BIG]))
    assert (report.calls, report.unknown_cost_calls) == (4, 1)
    assert report.total_cost_usd == Decimal("0.009585")
    assert report.tokens == TokenCounts(
        input_tokens=3500,
        output_tokens=900,
        cache_write_5m_tokens=1000,
        cache_write_1h_tokens=1000,
        cache_read_tokens=2000,
    )
    assert {m: (s.calls, s.unknown_cost_calls, s.cost_usd) for m, s in report.by_model.items()} == {
        "test:big": (1, 0, Decimal("0.0075")),
        "test:other": (1, 1, Decimal(0)),
        "test:small": (2, 0, Decimal("0.002085")),
    }
    assert {r: (s.calls, s.unknown_cost_calls, s.cost_usd) for r, s in report.by_role.items()} == {
        "advisor": (1, 0, Decimal("0.0075")),
        "executor": (3, 1, Decimal("0.002085")),
    }
    assert list(report.by_day) == [DAY1, DAY2]
    assert report.by_day[DAY1].cost_usd == Decimal("0.008435")
    assert (report.by_day[DAY1].calls, report.by_day[DAY1].unknown_cost_calls) == (3, 1)
    assert report.by_day[DAY2] == SpendLine(
        calls=1,
        cost_usd=Decimal("0.00115"),
        tokens=TokenCounts(
            input_tokens=400,
            output_tokens=200,
            cache_write_5m_tokens=1000,
            cache_write_1h_tokens=1000,
        ),
    )
    # On BIG: 11100 + 7500 + 13950 per million; the unknown-cost call is left out.
    assert report.strongest_model == "test:big"
    assert report.counterfactual_cost_usd == Decimal("0.03255")
    assert report.savings_usd == Decimal("0.022965")
    assert report.savings_pct == Decimal("0.022965") / Decimal("0.03255") * 100
    assert all(isinstance(v, Decimal) for v in (report.total_cost_usd, report.savings_pct))


def test_spend_report_since_uses_utc(ledger: Ledger) -> None:
    ledger.append(*spend_calls())
    report = spend_report(ledger, Catalog([SMALL, BIG]), since=datetime(2025, 3, 2, tzinfo=UTC))
    assert (report.calls, report.unknown_cost_calls, report.total_cost_usd) == (
        1,
        0,
        Decimal("0.00115"),
    )
    assert report.counterfactual_cost_usd == Decimal("0.01395")
    assert list(report.by_day) == [DAY2]


def test_spend_report_against_an_explicit_model(ledger: Ledger) -> None:
    ledger.append(*spend_calls())
    report = spend_report(ledger, Catalog([SMALL, BIG]), strongest="test:small")
    # On SMALL: 935 + (2000*0.25 + 100*1.25 = 625) + 1150 per million: negative savings.
    assert report.counterfactual_cost_usd == Decimal("0.00271")
    assert report.savings_usd == Decimal("-0.006875")
    with pytest.raises(UnknownModelError):
        spend_report(ledger, Catalog([SMALL, BIG]), strongest="test:nope")


def test_spend_report_with_unknown_counterfactual(ledger: Ledger) -> None:
    ledger.append(*spend_calls())
    unpriced = BIG.model_copy(
        update={"prices": BIG.prices.model_copy(update={"cache_write_1h": None})}
    )
    report = spend_report(ledger, Catalog([SMALL, unpriced]))
    assert report.total_cost_usd == Decimal("0.009585")
    assert (report.counterfactual_cost_usd, report.savings_usd, report.savings_pct) == (None,) * 3
    empty = spend_report(ledger, Catalog([]))
    assert (empty.strongest_model, empty.counterfactual_cost_usd) == (None, None)


def test_empty_ledger_reports_zero(ledger: Ledger) -> None:
    report = spend_report(ledger, Catalog([SMALL, BIG]))
    assert (report.calls, report.total_cost_usd, report.counterfactual_cost_usd) == (
        0,
        Decimal(0),
        Decimal(0),
    )
    assert report.savings_pct is None
    assert report.by_day == {}


def test_record_ids_are_version_4_uuids_unique_across_a_fork() -> None:
    from tierwise.ledger.records import new_id  # noqa: PLC0415

    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for each in list(ids)[:100]:
        parsed = uuid.UUID(hex=each)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == each
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child's generator was reseeded: it draws other ids than the parent
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read, "rb") as pipe:
        assert pipe.read().decode() != new_id()


def test_record_ids_do_not_follow_a_seeded_global_generator() -> None:
    """User code seeding ``random`` (as notebooks and experiments do) must not make two
    processes draw the same ledger ids."""
    import random  # noqa: PLC0415

    from tierwise.ledger.records import new_id  # noqa: PLC0415

    random.seed(7)
    first = new_id()
    random.seed(7)
    assert new_id() != first
