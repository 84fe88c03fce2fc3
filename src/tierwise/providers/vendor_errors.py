"""Upstream HTTP errors as tierwise errors: what both transports (SDK and direct) share.

An error status becomes its :class:`tierwise.errors.UpstreamStatusError` subclass, with the
upstream's own message, a :class:`ContextLengthError` when the prompt did not fit and the
``retry-after`` of a 429. The SDK-specific half (reading an SDK exception) lives with the SDK
clients in :mod:`tierwise.providers.sdk`; the direct transport
(:mod:`tierwise.providers.direct`) calls :func:`status_error` itself. No SDK is imported here.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

from tierwise.errors import ContextLengthError, ProviderError, RateLimitError, status_error_class

CONTEXT_MARKERS = ("context_length_exceeded", "prompt is too long", "maximum context length")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date).

    ``headers`` is looked up in lower case (``httpx2.Headers`` and aiohttp's headers both
    ignore case)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def error_message(body: object, fallback: str) -> str:
    """The upstream's own message: ``{"error": {"message": ...}}`` in both wire formats."""
    if isinstance(body, dict):
        inner: Any = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return fallback


def error_body(content: bytes) -> object:
    """An error response's body as the SDKs read it: JSON if it parses, else its text."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text or None


def status_error(
    status: int,
    body: object,
    headers: Mapping[str, str],
    *,
    provider: str,
    model: str | None,
    request_id: str | None,
    fallback: str,
) -> ProviderError:
    """The error for an upstream's HTTP error ``status``; ``fallback`` is the message when
    the body carries none."""
    message = error_message(body, fallback)
    fields: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "request_id": request_id,
    }
    if status == 400 and any(m in f"{message} {body}".lower() for m in CONTEXT_MARKERS):
        return ContextLengthError(message, **fields)
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(headers), **fields)
    return status_error_class(status)(message, **fields)
