"""The one place where vendor SDK exceptions become tierwise errors."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anthropic
import httpx2
import openai

from tierwise.errors import (
    ContextLengthError,
    MalformedResponseError,
    ProviderError,
    RateLimitError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
    status_error_class,
)

_CONTEXT_MARKERS = ("context_length_exceeded", "prompt is too long", "maximum context length")


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
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


def _error_message(body: object, fallback: str) -> str:
    """The upstream's own message: ``{"error": {"message": ...}}`` in both wire formats."""
    if isinstance(body, dict):
        inner: Any = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return fallback


def _status_error(
    exc: anthropic.APIStatusError | openai.APIStatusError, provider: str, model: str | None
) -> ProviderError:
    status = exc.status_code
    message = _error_message(exc.body, str(exc))
    fields: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "request_id": exc.request_id,
    }
    if status == 400 and any(m in f"{message} {exc.body}".lower() for m in _CONTEXT_MARKERS):
        return ContextLengthError(message, **fields)
    if status == 429:
        return RateLimitError(
            message, retry_after=parse_retry_after(exc.response.headers), **fields
        )
    return status_error_class(status)(message, **fields)


def translate_vendor_error(exc: BaseException, provider: str, model: str | None) -> ProviderError:
    """A :class:`ProviderError` for any exception raised by an SDK or its HTTP client."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APIStatusError | openai.APIStatusError):
        return _status_error(exc, provider, model)
    if isinstance(
        exc, anthropic.APITimeoutError | openai.APITimeoutError | httpx2.TimeoutException
    ):
        return UpstreamTimeoutError("upstream timed out", provider=provider, model=model)
    if isinstance(
        exc, anthropic.APIConnectionError | openai.APIConnectionError | httpx2.TransportError
    ):
        return UpstreamConnectionError(f"connection failed: {exc}", provider=provider, model=model)
    if isinstance(exc, anthropic.APIResponseValidationError | openai.APIResponseValidationError):
        return MalformedResponseError(
            f"unreadable upstream response: {exc}", provider=provider, model=model
        )
    return MalformedResponseError(
        f"unexpected upstream failure: {type(exc).__name__}: {exc}", provider=provider, model=model
    )
