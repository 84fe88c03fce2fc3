"""The one error tree of tierwise.

Every error tierwise raises on purpose is a :class:`TierwiseError`. Each carries a one-line
``message`` fit to show a user as it is, and ``exit_code`` for the CLI. Errors that come from
an upstream call also carry ``provider``, ``model``, ``status`` and ``request_id``.

::

    TierwiseError                       exit 1
    ├── ConfigError                     exit 2  malformed or invalid config file / settings
    │   └── MissingCredentialsError     exit 2  a provider needs an API key that is not set
    ├── UnknownModelError               exit 2  model id not in the catalog (with suggestions)
    ├── PolicyError                     exit 2  unknown or malformed policy name
    │   └── GateError                   exit 2  a gate cannot be built or run (bad spec, no command)
    ├── InvalidRequestError             exit 2  a request tierwise cannot send (e.g. no messages)
    ├── ArtifactError                   exit 2  router artifact missing, corrupt or incompatible
    ├── CalibrationError                exit 2  a calibration objective no threshold can meet
    │   └── InsufficientDataError       exit 2  too few labelled outcomes to learn or check drift
    ├── DatasetError                    exit 1  dataset missing, download or checksum failed
    ├── TaskFileError                   exit 2  a workflow task file is missing or malformed
    ├── WorkflowError                   exit 1  a plan/execute workflow could not finish
    │   └── PlanError                   exit 1  the planner's plan stayed invalid after a re-ask
    ├── LedgerError                     exit 1  ledger database unreachable or migration failed
    ├── BudgetExceededError             exit 1  a task's own budget ran out (best answer kept)
    ├── GatewayError                    exit 1  the gateway refused a request (``status``: HTTP)
    │   ├── UnauthorizedError    401            no or unknown gateway API key
    │   ├── ForbiddenError       403            the key may not use this model or policy
    │   │   ├── ModelNotAllowedError            a model the request would run is not allowed
    │   │   └── PolicyNotAllowedError           an inline policy or operator-only part
    │   ├── TaskNotFoundError    404            no such task (or another key's: not revealed)
    │   ├── RequestTooLargeError 413            the request body is over the size limit
    │   ├── RequestTimeoutError  408            the request body did not arrive in time
    │   ├── HeadersTooLargeError 431            the request line and headers are over the limit
    │   ├── IdempotencyConflictError 409        a request with this Idempotency-Key is running
    │   ├── IdempotencyMismatchError 422        the Idempotency-Key was used with another body
    │   ├── GatewayBusyError     503            too many requests in flight (``retry-after``)
    │   ├── KeyRateLimitError    429            over a key's requests or tokens per minute
    │   ├── AuthThrottledError   429            too many failed key checks from this address
    │   ├── BudgetExhaustedError 429            a key's budget cannot cover the request (``code``)
    │   ├── BudgetUnavailableError 503          the budget store is down and budgets fail closed
    │   ├── IdempotencyUnavailableError 503     the Idempotency-Key store is down
    │   └── ClientDisconnectedError 499         the client hung up before its answer (no reply)
    └── ProviderError                   exit 1  anything that went wrong calling an upstream
        ├── CircuitOpenError                    the upstream's circuit breaker is open (no call)
        ├── UpstreamConnectionError             could not connect / connection dropped
        │   └── UpstreamTimeoutError            the upstream did not answer in time
        ├── MalformedResponseError              the upstream answered with a body we cannot parse
        └── UpstreamStatusError                 the upstream answered with an HTTP error status
            ├── BadRequestError          400
            │   └── ContextLengthError   400    the prompt does not fit the context window
            ├── AuthenticationError      401
            ├── PermissionDeniedError    403
            ├── NotFoundError            404
            ├── ConflictError            409
            ├── UnprocessableError       422
            ├── RateLimitError           429    ``retry_after`` in seconds when the upstream said
            └── ServerError              5xx
                └── OverloadedError      529

Upstream HTTP failures become these in ``tierwise.providers.vendor_errors`` (shared) and
``tierwise.providers.sdk`` (SDK exceptions) / ``tierwise.providers.direct`` (aiohttp).
Retryable means: connection errors and 408/409/429/5xx (see :attr:`ProviderError.retryable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tierwise.engine import Result
    from tierwise.messages import Response


class TierwiseError(Exception):
    """Base of every error tierwise raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(TierwiseError):
    """The config file or settings are malformed or invalid."""

    exit_code = 2


class MissingCredentialsError(ConfigError):
    """A provider needs an API key that is not set."""


class UnknownModelError(TierwiseError):
    """A model id is not in the catalog."""

    exit_code = 2

    def __init__(self, model: str, suggestions: Sequence[str] = (), *, hint: str = "") -> None:
        """``hint``: why a model tierwise knows is not served (how to enable its provider);
        the CLI says it, the gateway does not."""
        close = f" (did you mean {', '.join(repr(s) for s in suggestions)}?)" if suggestions else ""
        where = hint or "`tierwise models` lists the catalog"
        super().__init__(f"unknown model {model!r}{close}; {where}")
        self.model = model
        self.suggestions = list(suggestions)
        self.hint = hint


class PolicyError(TierwiseError):
    """A policy name cannot be resolved."""

    exit_code = 2


class InvalidRequestError(TierwiseError):
    """A request that cannot be sent as it is; ``param``: the body field at fault, when one is
    (``messages[0].content``), which an OpenAI client gets as the error's ``param``."""

    exit_code = 2

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ArtifactError(TierwiseError):
    """A router artifact is missing, corrupt, or written by an incompatible version."""

    exit_code = 2


class CalibrationError(TierwiseError):
    """A calibration objective (quality target, cost cap, strong share) cannot be met."""

    exit_code = 2


class InsufficientDataError(CalibrationError):
    """Too few labelled outcomes in the ledger to learn from or to check drift against."""


class DatasetError(TierwiseError):
    """A dataset is missing, could not be downloaded or failed its checksum."""


class TaskFileError(TierwiseError):
    """A workflow task file (JSONL) is missing or malformed."""

    exit_code = 2


class WorkflowError(TierwiseError):
    """A plan/execute workflow could not finish (its steps kept failing after re-plans)."""


class PlanError(WorkflowError):
    """The planner's plan was still invalid after one re-ask."""


class LedgerError(TierwiseError):
    """The ledger database is unreachable or could not be migrated."""


class GateError(PolicyError):
    """A gate cannot be built (bad spec) or run (its command does not exist)."""


class BudgetExceededError(TierwiseError):
    """A task's budget (dollars or tokens over all its calls) would be or was exceeded.

    The task stopped there; ``partial`` is its best answer so far (``None`` when no call was
    made) and ``result`` the engine's partial :class:`~tierwise.engine.Result` around it.
    """

    def __init__(self, message: str, *, partial: Response | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.result: Result | None = None


class GatewayError(TierwiseError):
    """The gateway refused a request before calling any model; ``status`` is its HTTP code."""

    status = 400
    retry_after_s: int | None = None
    """Sent as ``retry-after`` (seconds) when set, e.g. with a 429 or 503."""
    code: str | None = None
    """A machine-readable reason the dialects may render (e.g. ``insufficient_quota``)."""


class UnauthorizedError(GatewayError):
    """401: no gateway API key, or one the gateway does not know."""

    status = 401


class ForbiddenError(GatewayError):
    """403: the key is valid but may not use this model or policy."""

    status = 403


class ModelNotAllowedError(ForbiddenError):
    """403: the key's allow-list does not cover a model the request would run."""

    code = "model_not_allowed"


class PolicyNotAllowedError(ForbiddenError):
    """403: a policy expression from a client that its key may not send (inline expressions
    without the key's scope, or parts that only the operator's config may use)."""

    code = "policy_not_allowed"


class TaskNotFoundError(GatewayError):
    """404: no task with this id that the key may see (another key's task looks the same)."""

    status = 404
    code = "task_not_found"


class RequestTooLargeError(GatewayError):
    """413: the request body is larger than the gateway accepts."""

    status = 413


class RequestTimeoutError(GatewayError):
    """408: the request body did not finish arriving within ``[gateway] body_timeout_s``."""

    status = 408


class HeadersTooLargeError(GatewayError):
    """431: the request line and headers are larger than ``[gateway] max_header_bytes``."""

    status = 431


class IdempotencyConflictError(GatewayError):
    """409: a request with the same ``Idempotency-Key`` is still in progress."""

    status = 409


class IdempotencyMismatchError(GatewayError):
    """422: the ``Idempotency-Key`` was already used with a different request body."""

    status = 422


class GatewayBusyError(GatewayError):
    """503: the gateway is at its limit of requests in flight; retry after ``retry_after_s``."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class KeyRateLimitError(GatewayError):
    """429: the key is over its requests or tokens per minute; retry after ``retry_after_s``."""

    status = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthThrottledError(GatewayError):
    """429: too many failed key checks from this address; retry after ``retry_after_s``
    (refused even with the right key until then)."""

    status = 429
    retry_after_s: int

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BudgetExhaustedError(GatewayError):
    """A key's budget cannot cover the request until its period resets or it is raised.

    OpenAI clients get a 429 ``insufficient_quota``; Anthropic clients a 400
    ``invalid_request_error``, as Anthropic answers a spend limit reached.
    """

    status = 429
    code = "insufficient_quota"


class BudgetUnavailableError(GatewayError):
    """503: the budget store cannot be reached and budgets fail closed."""

    status = 503


class IdempotencyUnavailableError(GatewayError):
    """503: the ``Idempotency-Key`` store cannot be reached."""

    status = 503


class ClientDisconnectedError(GatewayError):
    """499: the client disconnected before its answer; the work was stopped (nobody reads
    the reply, the status is for the logs and metrics)."""

    status = 499


class ProviderError(TierwiseError):
    """Something went wrong calling an upstream model."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status
        self.request_id = request_id

    @property
    def may_be_billed(self) -> bool:
        """Whether the upstream may bill the failed request: it reached the upstream and may
        have run there unseen (an error status or a refused connection is not billed)."""
        return False

    def __str__(self) -> str:
        where = f"{self.provider}:{self.model}" if self.model else self.provider
        parts = [f"{where}: {self.message}"]
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.request_id:
            parts.append(f"request id {self.request_id}")
        return " · ".join(parts)


class CircuitOpenError(ProviderError):
    """The upstream's circuit breaker is open: no call was made; ``retry_after`` in seconds."""

    def __init__(self, message: str, *, provider: str, model: str, retry_after: float) -> None:
        super().__init__(message, provider=provider, model=model)
        self.retry_after = retry_after


class UpstreamConnectionError(ProviderError):
    """Could not connect to the upstream, or the connection dropped."""

    retryable = True


class UpstreamTimeoutError(UpstreamConnectionError):
    """The upstream did not answer in time. ``request_sent``: the request had reached it (a
    read timeout, a first-token deadline), so it may have run and be billed; False when the
    connection (or a free one from the pool) never came."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.request_sent = request_sent

    @property
    def may_be_billed(self) -> bool:
        return self.request_sent


class MalformedResponseError(ProviderError):
    """The upstream answered, but not in a format we can read."""


class UpstreamStatusError(ProviderError):
    """The upstream answered with an HTTP error status."""


class BadRequestError(UpstreamStatusError):
    """400: the upstream rejected the request."""


class ContextLengthError(BadRequestError):
    """400: the prompt does not fit the model's context window."""


class AuthenticationError(UpstreamStatusError):
    """401: the API key was rejected."""


class PermissionDeniedError(UpstreamStatusError):
    """403: the key may not use this model or endpoint."""


class NotFoundError(UpstreamStatusError):
    """404: the model or endpoint does not exist upstream."""


class ConflictError(UpstreamStatusError):
    """409: a conflicting request; retryable."""

    retryable = True


class UnprocessableError(UpstreamStatusError):
    """422: the upstream could not process the request."""


class RateLimitError(UpstreamStatusError):
    """429: too many requests; ``retry_after`` holds the upstream's advice in seconds."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        status: int | None = 429,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, model=model, status=status, request_id=request_id
        )
        self.retry_after = retry_after


class ServerError(UpstreamStatusError):
    """5xx: the upstream failed."""

    retryable = True


class OverloadedError(ServerError):
    """529: the upstream is overloaded."""


STATUS_ERRORS: dict[int, type[UpstreamStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    429: RateLimitError,
    529: OverloadedError,
}


def status_error_class(status: int) -> type[UpstreamStatusError]:
    """The error class for an HTTP status (408 counts as a retryable server-side failure)."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500 or status == 408:
        return ServerError
    return UpstreamStatusError
