"""Who may see the dashboard: the admin key, as a bearer token or through a login session.

Logging in with the admin key sets a session cookie signed (itsdangerous, HMAC-SHA256) with a
secret derived from the admin key, so changing the key ends every session; it is HttpOnly,
SameSite=Strict, limited to ``/dashboard`` and expires after :data:`SESSION_MAX_AGE_S`.
``Authorization: Bearer <admin key>`` (or ``x-api-key``) works without a session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from itsdangerous import BadSignature, TimestampSigner

from tierwise.gateway.auth import presented_key

COOKIE = "tierwise_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_MAX_AGE_S = 12 * 3600
_PURPOSE = b"tierwise dashboard session v1"
_SUBJECT = b"admin"


class DashboardAuth:
    """Checks the admin key and issues and verifies session cookies for it."""

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

    def issue(self) -> str:
        """A fresh session cookie value."""
        if self._signer is None:
            raise RuntimeError("no admin key: the dashboard has no sessions")
        return self._signer.sign(_SUBJECT).decode()

    def valid_session(self, cookie: str | None) -> bool:
        if self._signer is None or not cookie:
            return False
        try:
            subject = self._signer.unsign(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:  # a forged, altered or expired cookie
            return False
        return hmac.compare_digest(subject, _SUBJECT)

    def allowed(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """The request carries the admin key or a valid session."""
        return self.is_admin_key(presented_key(headers)) or self.valid_session(cookies.get(COOKIE))
