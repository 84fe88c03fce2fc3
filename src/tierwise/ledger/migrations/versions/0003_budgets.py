"""Gateway budgets: counters per scope, reservations by request id, per-key limits.

Money is in integer nano-dollars (``BIGINT``) so that ``spent + reserved + amount <= limit``
is exact arithmetic inside one ``UPDATE`` on SQLite and PostgreSQL alike.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: tuple[str, ...] | None = None
depends_on: tuple[str, ...] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "budget_counters",
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("limit_nanousd", sa.BigInteger(), nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        _counter("spent_nanousd"),
        _counter("spent_tokens"),
        _counter("reserved_nanousd"),
        _counter("reserved_tokens"),
        sa.PrimaryKeyConstraint("scope", name="pk_budget_counters"),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("nanousd", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_budget_reservations"),
    )
    op.create_index("ix_budget_reservations_state", "budget_reservations", ["state", "expires_at"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("limits", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limits")
    op.drop_index("ix_budget_reservations_state", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_counters")
