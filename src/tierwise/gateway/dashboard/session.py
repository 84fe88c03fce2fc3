"""Who may see the dashboard: the admin key, as a bearer token or through a login session.

Logging in with the admin key opens a session: a random id, kept in the ledger database
(table ``dashboard_sessions``, as a SHA-256 of the id) and carried in a cookie signed
(itsdangerous, HMAC-SHA256) with a secret derived from the admin key, so changing the key ends
every session. A cookie is honoured only while its session's row exists and is unexpired:
logout deletes the row, which every worker and instance on that database sees at its next
request (nothing is cached: the revocation lag is none). A cookie without an id (issued before
sessions were kept) is refused. It is HttpOnly, SameSite=Strict, limited to ``/dashboard``,
expires after :data:`SESSION_MAX_AGE_S` and is ``Secure`` by ``[gateway] cookie_secure``.
``Authorization: Bearer <admin key>`` (or ``x-api-key``) works without a session.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from itsdangerous import BadSignature, TimestampSigner
from sqlalchemy import delete, insert, select

from tierwise.ledger.schema import dashboard_sessions
from tierwise.ledger.store import Ledger

COOKIE = "tierwise_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_MAX_AGE_S = 12 * 3600
_PURPOSE = b"tierwise dashboard session v2"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")
"""A session id: :func:`secrets.token_urlsafe` of 32 bytes."""


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class DashboardAuth:
    """Checks the admin key and signs and verifies session cookies for it."""

    def __init__(self, admin_key: str | None) -> None:
        self._key = admin_key.encode() if admin_key else None
        self._signer: TimestampSigner | None = None
        if self._key is not None:
            secret = hmac.new(self._key, _PURPOSE, hashlib.sha256).digest()
            self._signer = TimestampSigner(
                secret, salt="tierwise.dashboard", digest_method=hashlib.sha256
            )

    @property
    def enabled(self) -> bool:
        """Whether an admin key is configured (without one, nobody may see the dashboard)."""
        return self._key is not None

    def is_admin_key(self, key: str | None) -> bool:
        if self._key is None or not key:
            return False
        return hmac.compare_digest(key.encode(), self._key)

    def issue(self, session_id: str) -> str:
        """The cookie value for session ``session_id``."""
        if self._signer is None:
            raise RuntimeError("no admin key: the dashboard has no sessions")
        return self._signer.sign(session_id).decode()

    def session_id(self, cookie: str | None) -> str | None:
        """The session id a cookie signed by this admin key carries (unexpired), or None."""
        if self._signer is None or not cookie:
            return None
        try:
            found = self._signer.unsign(cookie, max_age=SESSION_MAX_AGE_S).decode()
        except (BadSignature, UnicodeDecodeError):  # a forged, altered or expired cookie
            return None
        return found if _ID.fullmatch(found) else None


def _row_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """The open sessions, in the ledger database (blocking: call it from a thread)."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._clock = clock

    def open(self, session_id: str, max_age_s: float = SESSION_MAX_AGE_S) -> None:
        """Record a new session; expired ones are swept on the way."""
        now = self._clock()
        table = dashboard_sessions
        row = {
            "id": _row_id(session_id),
            "created_at": datetime.fromtimestamp(now, UTC),
            "expires_at": now + max_age_s,
        }
        with self._ledger.transaction("could not open the session", write=True) as conn:
            conn.execute(delete(table).where(table.c.expires_at <= now))
            conn.execute(insert(table).values(row))

    def active(self, session_id: str) -> bool:
        table = dashboard_sessions
        query = select(table.c.id).where(
            table.c.id == _row_id(session_id), table.c.expires_at > self._clock()
        )
        with self._ledger.transaction("could not read the session") as conn:
            return conn.execute(query).first() is not None

    def close(self, session_id: str) -> None:
        """End the session, for every process that reads this database."""
        table = dashboard_sessions
        with self._ledger.transaction("could not end the session", write=True) as conn:
            conn.execute(delete(table).where(table.c.id == _row_id(session_id)))
