"""Advisor consults: turn index, tokens and cost on each side, and what followed.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision: str | None = "0003"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(30, 18).with_variant(sa.String(48), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "consults",
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("executor_model", sa.String(), nullable=False),
        sa.Column("advisor_model", sa.String(), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("consult_index", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(), nullable=False),
        sa.Column("followed_by", sa.String(), nullable=False),
        sa.Column("executor_call_id", sa.String(), nullable=True),
        sa.Column("advisor_call_id", sa.String(), nullable=True),
        sa.Column("executor_tokens", JSON, nullable=False),
        sa.Column("advisor_tokens", JSON, nullable=False),
        sa.Column("executor_cost_usd", MONEY, nullable=True),
        sa.Column("advisor_cost_usd", MONEY, nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_consults"),
        sa.UniqueConstraint("id", name="uq_consults_id"),
    )
    for column in ("created_at", "task_id"):
        op.create_index(f"ix_consults_{column}", "consults", [column])


def downgrade() -> None:
    op.drop_table("consults")
