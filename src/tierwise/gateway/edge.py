"""The gateway's edge: a request's declared size and its key are checked before anything else.

The first layer after the drain, in front of admission, idempotency and the routes: a
declared ``Content-Length`` over ``[gateway] max_body_bytes`` is a 413, then every ``/v1/``
path and ``/metrics`` is authenticated from the headers alone — a missing or unknown key
is a 401 in the API's envelope before one byte of the body is read, so nothing an
unauthenticated client sends is buffered, claimed or stored. The caller found is left in
the scope (:func:`tierwise.gateway.auth.principal_of`) for the layers after. ``/healthz``,
``/readyz`` and the dashboard (its own sign-in) are not authenticated here.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from tierwise.gateway.auth import PRINCIPAL
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.reading import check_declared
from tierwise.gateway.routes import error_response
from tierwise.gateway.service import Gateway

AUTHENTICATED = "/v1/"
METRICS = "/metrics"
MODEL_PATHS = frozenset({"/v1/messages", "/v1/chat/completions"})


def authenticated(path: str) -> bool:
    """Whether ``path`` needs a key (when auth is on)."""
    return path.startswith(AUTHENTICATED) or path == METRICS


class EdgeMiddleware:
    """Size limit, then authentication; the one place the gateway checks an API key."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_declared(scope, self.gateway.config.max_body_bytes)
            if authenticated(scope["path"]):
                auth, client = self.gateway.running.auth, self.gateway.client_address(scope)
                scope[PRINCIPAL] = await auth.authenticate(Headers(scope=scope), client=client)
        except Exception as exc:  # 413, 401; 503 when the key store is down
            await self._refuse(exc, scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_for_path(scope["path"], Headers(scope=scope))
        response = error_response(dialect, exc)
        if scope["path"] in MODEL_PATHS:
            self.gateway.metrics.finished(dialect.api, None, response.status_code, 0.0)
        await response(scope, receive, send)
