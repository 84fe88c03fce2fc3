"""The ledger's tables in SQLAlchemy Core: one table per record type.

Columns mirror the fields of the records in :mod:`tierwise.ledger.records` one to one, plus
a ``seq`` primary key that keeps insertion order (ties in ``created_at`` are common on coarse
clocks). ``id`` is unique. There are no foreign keys: a call may be recorded before its task,
and an append-only ledger never refuses a record for that.

Portable types, same behaviour on SQLite and PostgreSQL:

* :class:`Money` — exact ``Decimal`` dollars: ``NUMERIC(30, 18)`` on PostgreSQL, text on
  SQLite (whose NUMERIC affinity would round through a float); ``NULL`` is an unknown cost.
* :class:`UTCDateTime` — timezone-aware UTC in and out (naive values are taken as UTC).
* :class:`JSONValue` — JSON (``JSONB`` on PostgreSQL); values pass through pydantic's JSON
  encoder first, so a ``Decimal`` or ``datetime`` in ``metadata`` is stored, not rejected.

This module describes the *current* schema; the database gets there through the numbered
migrations in ``migrations/versions``. A test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.expression import false
from sqlalchemy.types import TypeEngine

from tierwise.ledger.records import (
    CallRecord,
    ConsultRecord,
    DecisionRecord,
    EscalationRecord,
    GateRecord,
    OutcomeRecord,
    TaskRecord,
)

VERSION_TABLE = "tierwise_ledger_version"
"""Where Alembic keeps the schema revision (not ``alembic_version``: the database may be shared)."""

MONEY_PRECISION, MONEY_SCALE = 30, 18
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def canonical_decimal(value: Decimal) -> Decimal:
    """``value`` without trailing zeros, never in exponent form (``1E+1`` -> ``10``)."""
    reduced = value.normalize()
    exponent = reduced.as_tuple().exponent
    return reduced.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else reduced


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Money(TypeDecorator[Decimal]):
    """Exact dollars, rounded to 18 places; ``None`` (an unknown cost) stays ``NULL``."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(48))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not value.is_finite():
            raise ValueError(f"a cost must be a finite Decimal, not {value}")
        with localcontext() as ctx:
            ctx.prec = MONEY_PRECISION + 10
            exact = canonical_decimal(value.quantize(_MONEY_QUANTUM))
        return str(exact) if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else canonical_decimal(Decimal(value))


class JSONValue(TypeDecorator[Any]):
    """JSON on every backend, ``JSONB`` on PostgreSQL."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return to_jsonable_python(value)


def _record_table(name: str, *columns: Column[Any]) -> Table:
    """A table with the columns every record has: ``seq``, ``id`` and ``created_at``."""
    return Table(
        name,
        metadata,
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("id", String(), nullable=False, unique=True),
        Column("created_at", UTCDateTime(), nullable=False, index=True),
        *columns,
    )


def _task_id() -> Column[str]:
    return Column("task_id", String(), nullable=False, index=True)


tasks = _record_table(
    "tasks",
    Column("parent_id", String(), index=True),
    Column("policy", String()),
    Column("source", String(), nullable=False),
    Column("prompt_text", Text()),
    Column("metadata", JSONValue(), nullable=False),
)

calls = _record_table(
    "calls",
    _task_id(),
    Column("parent_id", String()),
    Column("role", String(), nullable=False),
    Column("provider", String(), nullable=False),
    Column("model", String(), nullable=False, index=True),
    Column("request_id", String()),
    Column("stream", Boolean(), nullable=False),
    Column("status", String(), nullable=False),
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
    Column("cache_write_5m_tokens", Integer(), nullable=False),
    Column("cache_write_1h_tokens", Integer(), nullable=False),
    Column("cache_read_tokens", Integer(), nullable=False),
    Column("iterations", JSONValue(), nullable=False),
    Column("tokens_estimated", Boolean(), nullable=False),
    Column("cost_usd", Money()),
    Column("latency_ms", Float()),
    Column("ttft_ms", Float()),
    Column("stop_reason", String()),
    Column("error_type", String()),
    Column("error_message", Text()),
    Column("http_status", Integer()),
    Column("prompt_text", Text()),
    Column("response_text", Text()),
)

decisions = _record_table(
    "decisions",
    _task_id(),
    Column("router", String(), nullable=False),
    Column("chosen_model", String(), nullable=False, index=True),
    Column("candidates", JSONValue(), nullable=False),
    Column("threshold", Float()),
    Column("reason", Text(), nullable=False),
)

escalations = _record_table(
    "escalations",
    _task_id(),
    Column("from_model", String(), nullable=False),
    Column("to_model", String(), nullable=False),
    Column("trigger", String(), nullable=False),
)

gate_results = _record_table(
    "gate_results",
    _task_id(),
    Column("call_id", String()),
    Column("gate", String(), nullable=False),
    Column("passed", Boolean(), nullable=False),
    Column("score", Float()),
    Column("reason", Text(), nullable=False),
)

outcomes = _record_table(
    "outcomes",
    _task_id(),
    Column("outcome", String(), nullable=False),
    Column("correct", Boolean()),
    Column("source", String(), nullable=False),
    Column("detail", Text(), nullable=False),
)

consults = _record_table(
    "consults",
    _task_id(),
    Column("mode", String(), nullable=False),
    Column("executor_model", String(), nullable=False),
    Column("advisor_model", String(), nullable=False),
    Column("turn_index", Integer(), nullable=False),
    Column("consult_index", Integer(), nullable=False),
    Column("result", String(), nullable=False),
    Column("followed_by", String(), nullable=False),
    Column("executor_call_id", String()),
    Column("advisor_call_id", String()),
    Column("executor_tokens", JSONValue(), nullable=False),
    Column("advisor_tokens", JSONValue(), nullable=False),
    Column("executor_cost_usd", Money()),
    Column("advisor_cost_usd", Money()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(), primary_key=True),
    Column("name", String(), nullable=False, unique=True),
    Column("salt", String(), nullable=False),
    Column("secret_hash", String(), nullable=False),
    Column("models", JSONValue(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("limits", JSONValue()),
    Column("inline_policies", Boolean(), nullable=False, server_default=false()),
)
"""Gateway API keys (not ledger records): only a salted hash of each secret is stored."""


def _counter(name: str) -> Column[int]:
    return Column(name, BigInteger(), nullable=False, server_default="0")


budget_counters = Table(
    "budget_counters",
    metadata,
    Column("scope", String(), primary_key=True),
    Column("limit_nanousd", BigInteger()),
    Column("limit_tokens", BigInteger()),
    _counter("spent_nanousd"),
    _counter("spent_tokens"),
    _counter("reserved_nanousd"),
    _counter("reserved_tokens"),
)
"""Gateway budgets: one row per scope (key and period), money in integer nano-dollars."""

budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("request_id", String(), primary_key=True),
    Column("scopes", JSONValue(), nullable=False),
    Column("nanousd", BigInteger(), nullable=False),
    Column("tokens", BigInteger(), nullable=False),
    Column("state", String(), nullable=False),
    Column("expires_at", Float(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_budget_reservations_state", "state", "expires_at"),
)
"""What each request holds against its scopes until it is committed, released or expires."""

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(), primary_key=True),
    Column("fingerprint", String(), nullable=False),
    Column("status", Integer()),
    Column("headers", JSONValue()),
    Column("body", LargeBinary()),
    Column("expires_at", Float(), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)
"""The gateway's ``Idempotency-Key`` claims and stored answers (``status`` null: running)."""

dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id", String(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", Float(), nullable=False),
    Index("ix_dashboard_sessions_expires_at", "expires_at"),
)
"""Signed-in dashboard sessions (``id``: a SHA-256 of the cookie's random id); a session is
valid only while its row exists: logout deletes it, for every worker and instance at once."""

RECORD_TABLES: Mapping[type[BaseModel], Table] = {
    TaskRecord: tasks,
    CallRecord: calls,
    DecisionRecord: decisions,
    EscalationRecord: escalations,
    GateRecord: gate_results,
    OutcomeRecord: outcomes,
    ConsultRecord: consults,
}
"""The table each record type is stored in."""


def table_for(record_type: type[BaseModel]) -> Table:
    """The table for a record type (or a subclass of one); ``TypeError`` otherwise."""
    for cls in record_type.__mro__:
        if cls in RECORD_TABLES:
            return RECORD_TABLES[cls]
    raise TypeError(f"{record_type.__name__} is not a ledger record type")


def record_columns(table: Table) -> list[Column[Any]]:
    """The columns that hold record fields (all but ``seq``)."""
    return [column for column in table.columns if column.name != "seq"]
