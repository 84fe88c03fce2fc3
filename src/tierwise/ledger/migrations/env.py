"""Alembic environment of the ledger: migrates the connection tierwise hands it.

tierwise runs this through :func:`tierwise.ledger.migrate.upgrade` when a ledger is opened;
there is no ``alembic.ini``. To write a new migration, add ``versions/NNNN_name.py`` by hand
(``revision = "NNNN"``, ``down_revision`` = the previous one), or autogenerate a draft with
``alembic.command.revision(alembic_config(connection), autogenerate=True, message=...)``
against a database at head, then review it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from tierwise.ledger.schema import VERSION_TABLE, metadata


def run_migrations(connection: Connection) -> None:
    """Upgrade ``connection``'s database inside its (caller-owned) transaction."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _connection() -> Connection:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("the ledger migrates only through tierwise.ledger.migrate.upgrade()")
    return connection


run_migrations(_connection())
