"""The ASGI app: ``create_app(settings)`` -> a Starlette app serving both wire formats.

::

    POST /v1/chat/completions        OpenAI Chat Completions (streaming and not)
    POST /v1/messages                Anthropic Messages (streaming and not)
    POST /v1/messages/count_tokens   Anthropic token count (an estimate)
    GET  /v1/models                  catalog and virtual models (format by ``anthropic-version``)
    GET  /healthz /readyz /metrics   liveness, ledger reachable, Prometheus
    POST /v1/tierwise/feedback       a user's verdict on a task's answer (``tierwise learn``)
    GET  /dashboard                  spend, routing and savings (admin key; see dashboard/)

Each model request passes, in order: the drain, the declared size limit and authentication
(:mod:`~tierwise.gateway.edge`), admission, ``Idempotency-Key``, then the route (body read
within the limits, policy resolved, the key's scope checked, the budget reserved).

Nothing happens at import or in ``create_app``: the engine, the ledger and the key store are
opened by the lifespan and closed with it. An ``engine`` passed in is used as it is (tests
inject fake-upstream providers this way) and left open for its owner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.errors import GatewayError
from tierwise.failover import Failover
from tierwise.gateway.admission import AdmissionControl
from tierwise.gateway.circuits import CircuitCollector
from tierwise.gateway.dashboard.views import dashboard_routes
from tierwise.gateway.dialects import dialect_for_path
from tierwise.gateway.drain import Drain, DrainMiddleware
from tierwise.gateway.edge import EdgeMiddleware
from tierwise.gateway.feedback import feedback_endpoint
from tierwise.gateway.idempotency import IdempotencyMiddleware
from tierwise.gateway.routes import Routes, error_response
from tierwise.gateway.service import Gateway


class _NoRoute(GatewayError):
    """A path or method the gateway does not serve."""


def _routes(routes: Routes) -> list[Route]:
    return [
        Route("/v1/chat/completions", routes.chat_completions, methods=["POST"]),
        Route("/v1/messages", routes.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", routes.count_tokens, methods=["POST"]),
        Route("/v1/models", routes.list_models, methods=["GET"]),
        Route("/healthz", routes.healthz, methods=["GET"]),
        Route("/readyz", routes.readyz, methods=["GET"]),
        Route("/metrics", routes.metrics, methods=["GET"]),
        Route("/v1/tierwise/feedback", feedback_endpoint(routes.gateway), methods=["POST"]),
    ]


async def _http_error(request: HttpRequest, exc: Exception) -> Response:
    """Starlette's own 404 / 405 in the envelope of the API the path belongs to."""
    dialect = dialect_for_path(request.url.path, request.headers)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error = _NoRoute(f"{request.method} {request.url.path}: {exc}")
    error.status = status
    return error_response(dialect, error)


def _failover(gateway: Gateway) -> Failover | None:
    try:
        return gateway.running.engine.failover
    except RuntimeError:  # not started, or stopped
        return None


def create_app(settings: Settings, engine: Engine | None = None) -> Starlette:
    """The gateway app for ``settings``; ``engine`` (optional) replaces the one it would build."""
    gateway = Gateway(settings, engine)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    drain = Drain()
    app = Starlette(
        routes=[*_routes(Routes(gateway)), *dashboard_routes(gateway)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[
            Middleware(DrainMiddleware, drain=drain),
            Middleware(EdgeMiddleware, gateway=gateway),  # size limit, then the API key
            Middleware(AdmissionControl, gateway=gateway),
            Middleware(IdempotencyMiddleware, gateway=gateway),
        ],
    )
    gateway.metrics.registry.register(CircuitCollector(lambda: _failover(gateway)))
    app.state.gateway = gateway
    app.state.drain = drain
    return app
