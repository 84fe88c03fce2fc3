"""``Idempotency-Key``: a retried request gets the first answer instead of paying twice.

A model request carrying the header — authenticated and admitted already, so nothing is
claimed for a caller without a valid key — has its body read (within the size and depth
limits) and fingerprinted (path and canonical JSON), then is claimed under the key, scoped
to the authenticated caller (a stored key by its id, the admin, or anyone when auth is off).
A key longer than 255 characters, not printable ASCII, or sent twice is a 400. While the
first is running, the same key answers 409; with a different body, 422. When the first ends
in a clean 200 — for a stream: it reached its final event, with no in-band error — the bytes
the client received are stored for ``[gateway] idempotency_ttl_s`` and a retry gets them
again (a stream replays as the same stream), marked ``idempotent-replayed: true``, without
calling any model — once the key store has confirmed, right then, that the caller's API key
is still active (a revoked key's answers are never replayed: 401). Any other ending releases
the key, so a retry is a new attempt.

Stores: ``memory`` (one process, the default), ``ledger`` (the ledger database, table
``idempotency_keys``) or a ``redis://`` URL (:mod:`tierwise.gateway.idempotency_redis`) —
both shared by every instance using them; ``off`` ignores the header.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import delete, insert, select, update
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierwise.errors import (
    ConfigError,
    GatewayError,
    IdempotencyConflictError,
    IdempotencyMismatchError,
    InvalidRequestError,
    LedgerError,
)
from tierwise.gateway.auth import Principal, principal_of
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.reading import request_json
from tierwise.gateway.routes import error_response
from tierwise.gateway.service import Gateway
from tierwise.ledger.schema import idempotency_keys
from tierwise.ledger.store import Ledger
from tierwise.messages import JsonObject

_log = logging.getLogger(__name__)

HEADER = "idempotency-key"
MODEL_PATHS = frozenset({"/v1/messages", "/v1/chat/completions"})
MAX_KEY_CHARS = 255
MAX_STORED_BYTES = 8 * 1024 * 1024
MEMORY_ENTRIES = 10_000
MEMORY_BYTES = 256 * 1024 * 1024
"""The memory store keeps at most this many bytes of answers (``MAX_STORED_BYTES`` each)."""
REPLAYED = (b"idempotent-replayed", b"true")
_IN_PROGRESS = "a request with this Idempotency-Key is still in progress; retry when it is done"
_MISMATCH = "this Idempotency-Key was used with a different request; use a new key"


@dataclass(frozen=True)
class Stored:
    """A finished answer: status, headers and every byte of the body the client got."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class IdempotencyStore(Protocol):
    async def begin(self, key: str, fingerprint: str, ttl_s: float) -> Stored | None:
        """Claim ``key`` (``None``: go ahead) or return its stored answer; 409 while it is
        claimed, 422 when it was claimed with another fingerprint."""
        ...

    async def finish(self, key: str, stored: Stored, ttl_s: float) -> None: ...

    async def release(self, key: str) -> None: ...

    async def aclose(self) -> None:
        """Release what the store holds open (a Redis client's connections)."""
        ...


def decide(fingerprint: str, claimed: str, stored: Stored | None) -> Stored:
    if fingerprint != claimed:
        raise IdempotencyMismatchError(_MISMATCH)
    if stored is None:
        raise IdempotencyConflictError(_IN_PROGRESS)
    return stored


@dataclass
class _Entry:
    fingerprint: str
    expires_at: float
    stored: Stored | None = None


@dataclass
class MemoryStore:
    """One process's keys: oldest dropped past ``MEMORY_ENTRIES`` keys, and the oldest stored
    answers past ``MEMORY_BYTES`` of them (a retry of a dropped one runs again)."""

    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)
    size: int = 0
    """Bytes of the stored answers' bodies."""

    async def begin(self, key: str, fingerprint: str, ttl_s: float) -> Stored | None:
        now = time.monotonic()
        entry = self.entries.get(key)
        if entry is None or entry.expires_at <= now:
            self._drop(key)
            self.entries[key] = _Entry(fingerprint, now + ttl_s)
            self._trim()
            return None
        return decide(fingerprint, entry.fingerprint, entry.stored)

    async def finish(self, key: str, stored: Stored, ttl_s: float) -> None:
        if (entry := self.entries.get(key)) is not None:
            self.size += len(stored.body) - (len(entry.stored.body) if entry.stored else 0)
            entry.stored, entry.expires_at = stored, time.monotonic() + ttl_s
            self._trim()

    async def release(self, key: str) -> None:
        entry = self.entries.get(key)
        if entry is not None and entry.stored is None:
            del self.entries[key]

    async def aclose(self) -> None:
        return None

    def _drop(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None and entry.stored is not None:
            self.size -= len(entry.stored.body)

    def _trim(self) -> None:
        while len(self.entries) > MEMORY_ENTRIES:
            self._drop(next(iter(self.entries)))
        if self.size > MEMORY_BYTES:  # keys still running keep their claims
            for key in [key for key, entry in self.entries.items() if entry.stored is not None]:
                self._drop(key)
                if self.size <= MEMORY_BYTES:
                    break


class LedgerStore:
    """Keys in the ledger database (``idempotency_keys``), shared by every instance."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def begin(self, key: str, fingerprint: str, ttl_s: float) -> Stored | None:
        try:
            return await asyncio.to_thread(self._claim, key, fingerprint, ttl_s)
        except LedgerError:  # most likely a concurrent claim of the same key: look again
            found = await asyncio.to_thread(self._row, key)
            if found is None:
                raise
            return decide(fingerprint, *found)

    async def finish(self, key: str, stored: Stored, ttl_s: float) -> None:
        await asyncio.to_thread(self._store, key, stored, ttl_s)

    async def aclose(self) -> None:
        return None  # the ledger is the engine's to close

    async def release(self, key: str) -> None:
        await asyncio.to_thread(self._release, key)

    def _claim(self, key: str, fingerprint: str, ttl_s: float) -> Stored | None:
        table, now = idempotency_keys, time.time()
        with self._ledger.transaction("could not claim the Idempotency-Key", write=True) as conn:
            conn.execute(delete(table).where(table.c.expires_at <= now))
            row = conn.execute(select(table).where(table.c.key == key)).mappings().first()
            if row is None:
                values = {"key": key, "fingerprint": fingerprint, "expires_at": now + ttl_s}
                conn.execute(insert(table).values(values))
                return None
        return decide(fingerprint, row["fingerprint"], _stored(row))

    def _row(self, key: str) -> tuple[str, Stored | None] | None:
        table = idempotency_keys
        with self._ledger.transaction("could not read the Idempotency-Key") as conn:
            row = conn.execute(select(table).where(table.c.key == key)).mappings().first()
        return None if row is None else (row["fingerprint"], _stored(row))

    def _store(self, key: str, stored: Stored, ttl_s: float) -> None:
        table = idempotency_keys
        values = {
            "status": stored.status,
            "headers": [list(pair) for pair in stored.headers],
            "body": stored.body,
            "expires_at": time.time() + ttl_s,
        }
        with self._ledger.transaction("could not store the answer", write=True) as conn:
            conn.execute(update(table).where(table.c.key == key).values(values))

    def _release(self, key: str) -> None:
        table = idempotency_keys
        unfinished = (table.c.key == key) & table.c.status.is_(None)
        with self._ledger.transaction("could not release the key", write=True) as conn:
            conn.execute(delete(table).where(unfinished))


def _stored(row: object) -> Stored | None:
    data = dict(row)  # type: ignore[call-overload]
    if data["status"] is None:
        return None
    headers = [(str(name), str(value)) for name, value in data["headers"]]
    return Stored(int(data["status"]), headers, bytes(data["body"]))


# --- the middleware ---------------------------------------------------------------------------


def _clean_ending(status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
    """A 200 whose stream (if it is one) reached its final event without an in-band error."""
    if status != 200:
        return False
    kind = next((v for k, v in headers if k.lower() == "content-type"), "")
    if not kind.startswith("text/event-stream"):
        return True
    if body.rstrip().endswith(b"data: [DONE]"):
        return True
    return b"event: message_stop" in body and b"event: error\n" not in body


def _ends_stream(chunk: bytes) -> bool:
    """The chunk carries a stream's final event: a client may stop reading after it."""
    return b"data: [DONE]" in chunk or b"event: message_stop" in chunk


Settle = Callable[["Stored | None"], Awaitable[None]]


class _Recorder:
    """Passes a response through to the client and keeps a copy of it.

    The key is settled (answer stored, or released) *before* the bytes that end the answer go
    out: a client that retries as soon as it has read the answer must find it stored, not
    "still in progress".
    """

    def __init__(self, send: Send, settle: Settle) -> None:
        self._send = send
        self._settle = settle
        self.settled = False
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            raw = message.get("headers", [])
            self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        elif message["type"] == "http.response.body" and not self.settled:
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size <= MAX_STORED_BYTES:
                self.chunks.append(chunk)
            self.complete = not message.get("more_body", False) or _ends_stream(chunk)
            if self.complete:
                await self._settle_before_the_end()
        await self._send(message)

    async def _settle_before_the_end(self) -> None:
        try:
            await self.settle()
        except (GatewayError, LedgerError) as exc:  # the store went down: still deliver
            _log.warning("Idempotency-Key answer not stored: %s", exc)

    async def settle(self) -> None:
        """Store the answer if it ended cleanly, else release the key; once."""
        if not self.settled:
            self.settled = True
            await asyncio.shield(self._settle(self.stored()))

    def stored(self) -> Stored | None:
        body = b"".join(self.chunks)
        if not self.complete or self.size > MAX_STORED_BYTES:
            return None
        if not _clean_ending(self.status, self.headers, body):
            return None
        kept = [(k, v) for k, v in self.headers if k.lower() != "content-length"]
        return Stored(self.status, kept, body)


def valid_key(values: list[str]) -> str:
    """The one ``Idempotency-Key`` sent: 1 to 255 printable ASCII characters, else a 400
    (a key the gateway cannot honour must not let the request run as a new one)."""
    if len(values) != 1:
        raise InvalidRequestError("send one Idempotency-Key header, not several")
    key = values[0].strip()
    if not key or len(key) > MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise InvalidRequestError(
            f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters"
        )
    return key


def caller_scope(principal: Principal) -> str:
    """Whose keys these are: a stored key (by id), the admin, or anyone when auth is off."""
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    return "admin" if principal.admin else "anonymous"


def scoped_key(principal: Principal, key: str) -> str:
    """``key`` under the authenticated caller: callers never see each other's answers."""
    return f"{caller_scope(principal)}:{key}"


def fingerprint(path: str, body: JsonObject) -> str:
    """The request's identity: its path and its JSON body with keys in a canonical order."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(path.encode() + b"\0" + canonical).hexdigest()


async def replay(stored: Stored, send: Send) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.headers]
    await send(
        {"type": "http.response.start", "status": stored.status, "headers": [*headers, REPLAYED]}
    )
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})


def build_store(kind: str, gateway: Gateway) -> IdempotencyStore | None:
    """The store ``[gateway] idempotency`` names: memory, ledger, a Redis URL, or off."""
    if kind == "memory":
        return MemoryStore()
    if kind == "ledger":
        return LedgerStore(gateway.running.ledger)
    if kind.startswith(("redis://", "rediss://", "unix://")):
        from tierwise.gateway.idempotency_redis import RedisStore  # noqa: PLC0415

        return RedisStore(kind)
    if kind == "off":
        return None
    raise ConfigError(
        f"gateway.idempotency must be memory, ledger, a redis:// URL or off, not {kind!r}"
    )


class IdempotencyMiddleware:
    """Answers retried model requests (same ``Idempotency-Key``) from the store."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway
        self._store: IdempotencyStore | None = None

    def store(self) -> IdempotencyStore | None:
        if self._store is None:
            self._store = build_store(self.gateway.config.idempotency, self.gateway)
            if self._store is not None:
                self.gateway.on_stop(self._close_store)
        return self._store

    async def _close_store(self) -> None:
        """At shutdown; a restarted gateway builds a new store."""
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = scope["type"] == "http" and scope["path"] in MODEL_PATHS
        headers = Headers(scope=scope) if model and scope["method"] == "POST" else None
        values = headers.getlist(HEADER) if headers is not None else []
        store = self.store() if values else None
        if store is None or headers is None:
            await self.app(scope, receive, send)
            return
        try:
            claim = await self._claim(scope, receive, headers, store, valid_key(values))
        except Exception as exc:  # 400, 401, 409, 413, 422; 503 when the store is down
            await error_response(dialect_for_path(scope["path"], headers), exc)(
                scope, receive, send
            )
            return
        if isinstance(claim, Stored):
            await replay(claim, send)
            return
        recorder = _Recorder(send, claim)
        try:
            await self.app(scope, receive, recorder.send)
        finally:
            await recorder.settle()

    async def _claim(
        self, scope: Scope, receive: Receive, headers: Headers, store: IdempotencyStore, key: str
    ) -> Stored | Settle:
        """The stored answer to replay, or how to settle the claim just made."""
        config, principal = self.gateway.config, principal_of(scope)
        body = await request_json(scope, receive, config.max_body_bytes, config.max_json_depth)
        scoped, ttl = scoped_key(principal, key), config.idempotency_ttl_s
        stored = await store.begin(scoped, fingerprint(scope["path"], body), ttl)
        if stored is not None:  # its key may have been revoked since: ask the key store
            await self.gateway.running.auth.revalidate(headers, principal)
            return stored

        async def settle(answer: Stored | None) -> None:
            if answer is None:
                await store.release(scoped)
            else:
                await store.finish(scoped, answer, ttl)

        return settle
