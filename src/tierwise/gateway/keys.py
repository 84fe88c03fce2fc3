"""Gateway API keys, stored in the ledger database (table ``api_keys``, migration 0002).

A key is ``tw_<id>_<secret>``: the id finds the row, the secret is checked against a salted
SHA-256 of it. The secret is 256 random bits, so a slow password hash (scrypt, argon2) would
buy nothing against guessing and cost milliseconds per request; the per-key salt keeps equal
hashes from ever lining up. Only the hash is stored: a lost key is revoked, not recovered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, or_, select, update

from tierwise.budgets.limits import Limits
from tierwise.errors import InvalidRequestError
from tierwise.ledger.records import utc_now
from tierwise.ledger.schema import api_keys
from tierwise.ledger.store import Ledger

TOKEN_PREFIX = "tw"
_ID_BYTES = 8
_SECRET_BYTES = 32


class ApiKey(BaseModel):
    """A stored key, without its secret; ``models`` empty means every model and policy."""

    id: str
    name: str
    models: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    limits: Limits | None = None
    """Budgets and rate limits of this key (unset ones fall back to ``[gateway.limits]``)."""
    inline_policies: bool = False
    """The key may send inline policy expressions (the safe subset; off by default)."""

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class NewKey(BaseModel):
    """A key just created: ``token`` is shown once and never stored."""

    key: ApiKey
    token: str


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else ``None``."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or len(key_id) != 2 * _ID_BYTES or not secret:
        return None
    return key_id, secret


def _key(row: Any) -> ApiKey:
    return ApiKey.model_validate(dict(row))


_PUBLIC = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.models,
    api_keys.c.created_at,
    api_keys.c.revoked_at,
    api_keys.c.limits,
    api_keys.c.inline_policies,
)


class KeyStore:
    """Create, list, revoke and verify keys; synchronous (the gateway calls it in a thread)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def create(
        self,
        name: str,
        models: Sequence[str] = (),
        limits: Limits | None = None,
        *,
        inline_policies: bool = False,
    ) -> NewKey:
        """A new key named ``name`` limited to ``models`` (globs over model ids; empty: no
        limit), allowed inline policy expressions when ``inline_policies``."""
        key_id, secret, salt = (
            secrets.token_hex(_ID_BYTES),
            secrets.token_urlsafe(_SECRET_BYTES),
            secrets.token_hex(16),
        )
        key = ApiKey(
            id=key_id,
            name=name,
            models=list(models),
            created_at=utc_now(),
            limits=limits,
            inline_policies=inline_policies,
        )
        row = key.model_dump(exclude={"revoked_at", "limits"}) | {
            "limits": None if limits is None else limits.model_dump(mode="json", exclude_none=True),
            "salt": salt,
            "secret_hash": _digest(salt, secret),
        }
        with self._ledger.transaction("could not store the key", write=True) as conn:
            if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first():
                raise InvalidRequestError(f"a key named {name!r} already exists")
            conn.execute(insert(api_keys), [row])
        return NewKey(key=key, token=f"{TOKEN_PREFIX}_{key_id}_{secret}")

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        stmt = select(*_PUBLIC).order_by(api_keys.c.created_at)
        with self._ledger.transaction("could not read the keys") as conn:
            return [_key(row) for row in conn.execute(stmt).mappings()]

    def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the key with this name or id (revoking twice keeps the first time)."""
        match = or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id)
        with self._ledger.transaction("could not revoke the key", write=True) as conn:
            row = conn.execute(select(*_PUBLIC).where(match)).mappings().first()
            if row is None:
                raise InvalidRequestError(f"no key named {name_or_id!r}")
            key = _key(row)
            if key.active:
                key.revoked_at = utc_now()
                stmt = update(api_keys).where(api_keys.c.id == key.id)
                conn.execute(stmt.values(revoked_at=key.revoked_at))
        return key

    def set_limits(self, name_or_id: str, limits: Limits | None) -> ApiKey:
        """Replace the key's limits (``None``: back to the ``[gateway.limits]`` defaults)."""
        match = or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id)
        stored = None if limits is None else limits.model_dump(mode="json", exclude_none=True)
        with self._ledger.transaction("could not store the key's limits", write=True) as conn:
            row = conn.execute(select(*_PUBLIC).where(match)).mappings().first()
            if row is None:
                raise InvalidRequestError(f"no key named {name_or_id!r}")
            conn.execute(update(api_keys).where(api_keys.c.id == row["id"]).values(limits=stored))
        return _key(row).model_copy(update={"limits": limits})

    def verify(self, token: str) -> ApiKey | None:
        """The active key ``token`` belongs to, or ``None``."""
        parts = split_token(token)
        if parts is None:
            return None
        key_id, secret = parts
        stmt = select(*_PUBLIC, api_keys.c.salt, api_keys.c.secret_hash)
        with self._ledger.transaction("could not read the keys") as conn:
            row = conn.execute(stmt.where(api_keys.c.id == key_id)).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_hash"], _digest(row["salt"], secret)):
            return None
        key = ApiKey.model_validate({k: row[k] for k in ApiKey.model_fields})
        return key if key.active else None
