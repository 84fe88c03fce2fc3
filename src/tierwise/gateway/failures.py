"""Any exception -> the HTTP status and message the gateway answers with (one place).

The wire envelope is the dialect's business (:mod:`tierwise.gateway.dialects`); this module
only decides *what* went wrong in HTTP terms. Upstream errors keep their meaning but not
always their status: an upstream 401/403 is the gateway's own credentials failing, which is
a 502 for the client (whose key was fine), not a 401 that would blame the client's key.

A store that is down (the ledger, the budget store, the ``Idempotency-Key`` store) is a 503
naming the store and a fresh request id, nothing more: its driver's error and URL go to the
server log once, under that id. An unexpected exception is a 500 logged the same way.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from tierwise.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    CircuitOpenError,
    ConfigError,
    GatewayError,
    IdempotencyUnavailableError,
    InvalidRequestError,
    LedgerError,
    OverloadedError,
    PolicyError,
    ProviderError,
    RateLimitError,
    TierwiseError,
    UnknownModelError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)

log = logging.getLogger("tierwise.gateway")

DEFAULT_RETRY_AFTER_S = 1
"""Sent with a 429 when the upstream gave no ``retry-after`` of its own."""

QUOTA_CODE = "insufficient_quota"
"""A budget that cannot cover the request: retrying will not help (``x-should-retry: false``)."""

_PASSED_THROUGH = frozenset({400, 404, 409, 413, 422})
"""Upstream statuses that describe the client's request and keep their status."""


@dataclass(frozen=True)
class Failure:
    """What the client is told: a status, a one-line message, and retry advice for a 429."""

    status: int
    message: str
    request_id: str | None = None
    """Names a failure whose detail is only in the server log (sent as ``x-request-id``)."""
    retry_after_s: int | None = None
    code: str | None = None
    """A gateway refusal's machine-readable reason (:attr:`GatewayError.code`)."""
    param: str | None = None
    """The request field at fault (:attr:`~tierwise.errors.InvalidRequestError.param`)."""


def _retry_later(exc: RateLimitError | CircuitOpenError) -> Failure:
    """429 (the upstream's limit) or 503 (its circuit is open), with ``retry-after``."""
    wait = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S
    status = 429 if isinstance(exc, RateLimitError) else 503
    return Failure(status, str(exc), retry_after_s=max(1, math.ceil(wait)))


def _upstream(exc: ProviderError) -> Failure:
    text = str(exc)
    if isinstance(exc, RateLimitError | CircuitOpenError):
        return _retry_later(exc)
    if isinstance(exc, OverloadedError):
        return Failure(529, text)
    if isinstance(exc, UpstreamTimeoutError):
        return Failure(504, text)
    if isinstance(exc, UpstreamStatusError) and exc.status in _PASSED_THROUGH:
        return Failure(exc.status or 400, text)
    if isinstance(exc, UpstreamStatusError) and exc.status in (401, 403):
        return Failure(502, f"the upstream refused the gateway's credentials: {text}")
    return Failure(502, text)  # other statuses, a dropped connection, a malformed response


_UNAVAILABLE: tuple[tuple[type[TierwiseError], str], ...] = (
    (LedgerError, "ledger"),
    (BudgetUnavailableError, "budget store"),
    (IdempotencyUnavailableError, "Idempotency-Key store"),
)
"""Stores whose failures are told to the client by name only."""


def new_request_id() -> str:
    """An id naming one failure in the client's answer and the server log."""
    return f"req_{uuid.uuid4().hex}"


def _unavailable(exc: TierwiseError, store: str) -> Failure:
    request_id = new_request_id()
    log.error("%s unavailable [request %s]: %s", store, request_id, exc.message)
    message = f"{store} unavailable; retry later (request id {request_id})"
    return Failure(503, message, request_id=request_id)


_LOCAL: tuple[tuple[type[TierwiseError] | tuple[type[TierwiseError], ...], int, str], ...] = (
    (InvalidRequestError, 400, ""),
    (BudgetExceededError, 402, ""),  # the task's own budget: retrying cannot help
    ((ConfigError, PolicyError), 500, "the gateway is misconfigured: "),
)


def _local(exc: TierwiseError) -> Failure:
    if isinstance(exc, UnknownModelError):
        hint = (
            f" (did you mean {', '.join(map(repr, exc.suggestions))}?)" if exc.suggestions else ""
        )
        return Failure(404, f"unknown model {exc.model!r}{hint}; GET /v1/models lists them")
    for kinds, status, prefix in _LOCAL:
        if isinstance(exc, kinds):
            param = exc.param if isinstance(exc, InvalidRequestError) else None
            return Failure(status, prefix + exc.message, param=param)
    return Failure(500, exc.message)


def failure(exc: BaseException) -> Failure:
    """The status and message for ``exc``; unexpected exceptions are logged with a traceback."""
    for kind, store in _UNAVAILABLE:
        if isinstance(exc, kind):
            return _unavailable(exc, store)
    if isinstance(exc, GatewayError):
        return Failure(exc.status, exc.message, retry_after_s=exc.retry_after_s, code=exc.code)
    if isinstance(exc, ProviderError):
        return _upstream(exc)
    if isinstance(exc, TierwiseError):
        return _local(exc)
    request_id = new_request_id()
    log.error("unexpected error in the gateway [request %s]", request_id, exc_info=exc)
    message = f"internal gateway error (request id {request_id}, logged on the server)"
    return Failure(500, message, request_id=request_id)
