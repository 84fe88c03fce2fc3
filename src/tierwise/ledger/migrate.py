"""Numbered schema migrations, run in code when a ledger is opened (no ``alembic.ini``).

The migration scripts ship inside the package (``migrations/versions/NNNN_*.py``, revision
ids ``"0001"``, ``"0002"`` …). :func:`upgrade` brings a database to the newest revision in one
transaction, serialized against other processes opening the same ledger: a PostgreSQL
advisory lock, or SQLite's write lock (the caller begins the transaction ``IMMEDIATE``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from tierwise.errors import LedgerError
from tierwise.ledger.schema import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = zlib.crc32(b"tierwise.ledger.migrate")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the shipped migrations, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision this version of tierwise knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(connection: Connection) -> None:
    """Migrate ``connection``'s database to head inside its open transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    script = ScriptDirectory.from_config(alembic_config())
    current = current_revision(connection)
    if current == script.get_current_head():
        return
    _refuse_unknown(script, current)
    command.upgrade(alembic_config(connection), "head")


def _refuse_unknown(script: ScriptDirectory, revision: str | None) -> None:
    """A LedgerError if the database is at a revision this tierwise does not ship."""
    known = {rev.revision for rev in script.walk_revisions()}
    if revision is not None and revision not in known:
        raise LedgerError(
            f"the ledger schema is at revision {revision}, newer than this tierwise knows "
            f"({script.get_current_head()}); upgrade tierwise"
        )
