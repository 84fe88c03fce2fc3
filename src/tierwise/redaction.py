"""Keeping configured secrets out of error messages, logs, the ledger and exports.

A :class:`Redactor` is built once from the secrets the process holds (provider keys, the
admin key, passwords in configured URLs: :meth:`tierwise.config.Settings.redactor`) and
replaces each of them with :data:`REDACTED` in a text, also where an upstream echoed it
URL-encoded or as an escaped JSON string. Any ``scheme://user:password@`` in a text loses
its password too, configured or not. It runs where an upstream error becomes a tierwise
error (:mod:`tierwise.providers`), again before a failed call's record is stored, in
``tierwise export`` and as a logging filter: only on failures, never on an answered request.

This module imports nothing of tierwise's: every layer may use it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 6
"""Shorter values are not redacted as text (they would blank out ordinary words); a short
password in a URL is still hidden by the ``user:password@`` rule."""
SECRET_NAME_PARTS = ("auth", "key", "token", "secret", "password", "passwd", "cookie", "signature")
"""A header or URL query parameter whose name holds one of these carries a secret."""

TEXT_ATTRIBUTES = ("message", "request_id")
"""Attributes of an error that hold upstream text (an upstream names its request id)."""

_USERINFO_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]*):[^@/\s]+@")


def is_secret_name(name: str) -> bool:
    """Whether a header or parameter named ``name`` carries a credential."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def url_secrets(url: str | None) -> list[str]:
    """The password and credential-like query values in ``url`` (as written and decoded)."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:  # e.g. a port that is not a number
        parts, found = None, []
    if parts is not None and parts.query:
        found += [value for name, value in parse_qsl(parts.query) if is_secret_name(name)]
    return [*found, *(unquote(value) for value in found)]


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The values of credential headers (``x-api-key``, ``authorization``...), and the
    token alone of an ``authorization: Bearer <token>``."""
    values = [value for name, value in headers.items() if is_secret_name(name)]
    return values + [value.split(None, 1)[1] for value in values if " " in value.strip()]


def _variants(secret: str) -> set[str]:
    """How an echoed ``secret`` may read: as it is, URL-encoded, inside a JSON string, or
    inside a Python string's ``repr`` (an error body printed as a dict)."""
    escaped = json.dumps(secret)[1:-1]
    encoded = {quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}
    lower_hex = {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded}
    return {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        escaped.replace("/", "\\/"),
        repr(secret)[1:-1],
        *encoded,
        *lower_hex,
    }


class Redactor:
    """Replaces known secrets (and URL passwords) in texts with :data:`REDACTED`."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        kept = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_CHARS}
        self._secrets = frozenset(kept)
        variants = {v for secret in kept for v in _variants(secret)}
        alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
        self._pattern = re.compile(alternatives) if alternatives else None

    def __call__(self, text: str) -> str:
        """``text`` without any secret; returned as it is when it holds none."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        if "@" in text:
            text = _USERINFO_PASSWORD.sub(rf"\1:{REDACTED}@", text)
        return text

    def __len__(self) -> int:
        return len(self._secrets)

    def merged(self, other: Redactor) -> Redactor:
        """A redactor of both sets of secrets."""
        return Redactor(self._secrets | other._secrets)

    def scrub(self, exc: BaseException) -> BaseException:
        """Redact ``exc`` in place, and every exception it was raised from or during (their
        text is in any traceback logged): its ``args`` and its :data:`TEXT_ATTRIBUTES`."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            self._scrub_one(current)
            current = current.__cause__ or current.__context__
        return exc

    def _scrub_one(self, exc: BaseException) -> None:
        try:
            exc.args = tuple(self(a) if isinstance(a, str) else a for a in exc.args)
            for name in TEXT_ATTRIBUTES:
                if isinstance(value := getattr(exc, name, None), str):
                    setattr(exc, name, self(value))
        except (AttributeError, TypeError):  # an exception type that refuses new values
            pass


class RedactingFilter(logging.Filter):
    """Redacts each record's message and formatted traceback before any handler sees it."""

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self._redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


LOGGERS = ("tierwise", "tierwise.gateway", "tierwise.ledger", "tierwise.budgets", "uvicorn.error")
"""Loggers the filter goes on, besides every ``tierwise.*`` logger existing at the time
(a filter on a logger does not see its children's records)."""


def install_log_filter(redact: Callable[[str], str]) -> Callable[[], None]:
    """Put a :class:`RedactingFilter` on tierwise's loggers; returns the undo."""
    existing = [name for name in logging.root.manager.loggerDict if name.startswith("tierwise.")]
    loggers = [logging.getLogger(name) for name in dict.fromkeys([*LOGGERS, *existing])]
    log_filter = RedactingFilter(redact)
    for logger in loggers:
        logger.addFilter(log_filter)

    def undo() -> None:
        for logger in loggers:
            logger.removeFilter(log_filter)

    return undo
