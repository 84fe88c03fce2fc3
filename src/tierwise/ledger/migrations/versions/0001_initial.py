"""Initial ledger schema: tasks, calls, decisions, escalations, gate_results, outcomes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(30, 18).with_variant(sa.String(48), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _create(table: str, *columns: sa.Column[object], indexes: tuple[str, ...] = ()) -> None:
    """A record table: ``seq``, ``id`` and ``created_at`` first, then ``columns``."""
    op.create_table(
        table,
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("seq", name=f"pk_{table}"),
        sa.UniqueConstraint("id", name=f"uq_{table}_id"),
    )
    for column in ("created_at", *indexes):
        op.create_index(f"ix_{table}_{column}", table, [column])


def _task_id() -> sa.Column[object]:
    return sa.Column("task_id", sa.String(), nullable=False)


def upgrade() -> None:
    _create(
        "tasks",
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("policy", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        indexes=("parent_id",),
    )
    _create(
        "calls",
        _task_id(),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_write_5m_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_write_1h_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("iterations", JSON, nullable=False),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("stop_reason", sa.String(), nullable=True),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("response_text", sa.Text(), nullable=True),
        indexes=("task_id", "model"),
    )
    _create(
        "decisions",
        _task_id(),
        sa.Column("router", sa.String(), nullable=False),
        sa.Column("chosen_model", sa.String(), nullable=False),
        sa.Column("candidates", JSON, nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        indexes=("task_id", "chosen_model"),
    )
    _create(
        "escalations",
        _task_id(),
        sa.Column("from_model", sa.String(), nullable=False),
        sa.Column("to_model", sa.String(), nullable=False),
        sa.Column("trigger", sa.String(), nullable=False),
        indexes=("task_id",),
    )
    _create(
        "gate_results",
        _task_id(),
        sa.Column("call_id", sa.String(), nullable=True),
        sa.Column("gate", sa.String(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        indexes=("task_id",),
    )
    _create(
        "outcomes",
        _task_id(),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        indexes=("task_id",),
    )


def downgrade() -> None:
    for table in ("outcomes", "gate_results", "escalations", "decisions", "calls", "tasks"):
        op.drop_table(table)
