"""The gateway's endpoints: read, resolve, run through the engine, answer.

The caller is authenticated before a route runs (:mod:`tierwise.gateway.edge`).

Every failure goes through :func:`error_response`, which renders it in the API's own error
envelope. A stream is opened only once its first event is in hand, so any failure before
the first byte is a real HTTP error status; after it, a failure ends the stream with an
in-band error event (Anthropic ``event: error``, OpenAI a ``data: {"error": …}`` chunk and
no ``[DONE]``), never a clean close that looks like success.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from tierwise.budgets.estimate import check_max_tokens
from tierwise.budgets.limits import Limits
from tierwise.errors import (
    ForbiddenError,
    InvalidRequestError,
    LedgerError,
    MalformedResponseError,
    TierwiseError,
)
from tierwise.gateway.auth import ANONYMOUS, Principal, principal_of
from tierwise.gateway.counting import estimate_request_tokens
from tierwise.gateway.dialects import (
    ANTHROPIC,
    OPENAI,
    Dialect,
    StreamEncoder,
    dialect_for_path,
    forward_headers,
)
from tierwise.gateway.disconnect import until_disconnect
from tierwise.gateway.failures import QUOTA_CODE, failure
from tierwise.gateway.models import ListedModel, Target
from tierwise.gateway.reading import request_json
from tierwise.gateway.scopes import checked_strategy
from tierwise.gateway.service import Gateway
from tierwise.gateway.sse import EventStream
from tierwise.gateway.trace import Trace
from tierwise.messages import JsonObject, MessageStart, Request, StreamEvent
from tierwise.strategies.base import Strategy
from tierwise.strategies.reach import reachable_models
from tierwise.wire.validate_anthropic import require_max_tokens

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
TASK_KEY = "gateway_key"
"""The task metadata field naming the gateway key that made the task (feedback checks it)."""


def error_response(dialect: Dialect, exc: BaseException) -> JSONResponse:
    """The one error handler: ``exc`` in ``dialect``'s envelope, with its status."""
    found = failure(exc)
    headers = {} if found.retry_after_s is None else {"retry-after": str(found.retry_after_s)}
    if found.code == QUOTA_CODE:
        headers["x-should-retry"] = "false"  # the SDKs would retry a 429 in vain
    if found.request_id is not None:
        headers["x-request-id"] = found.request_id
    status = dialect.error_status(found)
    return JSONResponse(dialect.error_body(found), status_code=status, headers=headers)


async def read_json(request: HttpRequest, limit: int, max_depth: int) -> JsonObject:
    """The body as a JSON object (:func:`~tierwise.gateway.reading.request_json`): 413 past
    ``limit`` bytes, 400 when it is not JSON or nests deeper than ``max_depth``."""
    return await request_json(request.scope, request.receive, limit, max_depth)


def _model_field(body: JsonObject) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("`model` is required: a model or policy name (GET /v1/models)")
    return model


@dataclass(frozen=True)
class Admitted:
    """A request past auth, parsing, resolution and the key's scope check."""

    dialect: Dialect
    body: JsonObject
    request: Request
    target: Target
    strategy: Strategy
    principal: Principal = ANONYMOUS


async def _close(events: AsyncIterator[StreamEvent]) -> None:
    if isinstance(events, AsyncGenerator):
        await events.aclose()


async def _first(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    """The first event; the stream is closed if it fails before one arrives."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise MalformedResponseError("the stream ended empty", provider="gateway") from None
    except BaseException:
        await _close(events)
        raise


async def _relay(
    encoder: StreamEncoder, first: StreamEvent, events: AsyncIterator[StreamEvent], trace: Trace
) -> AsyncIterator[bytes]:
    status = 200
    try:
        yield encoder.encode(first)
        async for event in events:
            if chunk := encoder.encode(event):
                yield chunk
        if done := encoder.done():
            yield done
    except Exception as exc:  # mid-stream: end with an in-band error event
        found = failure(exc)
        status = found.status
        yield encoder.error(found)
    finally:
        await _close(events)
        trace.finish(status)


class Routes:
    """Endpoint handlers bound to one :class:`Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def messages(self, request: HttpRequest) -> Response:
        return await self._model_request(request, ANTHROPIC)

    async def chat_completions(self, request: HttpRequest) -> Response:
        return await self._model_request(request, OPENAI)

    async def count_tokens(self, request: HttpRequest) -> Response:
        """An estimate (words and punctuation, images at a flat rate): no upstream call."""
        try:
            admitted = await self._admit(request, ANTHROPIC)
        except Exception as exc:
            return error_response(ANTHROPIC, exc)
        return JSONResponse({"input_tokens": estimate_request_tokens(admitted.request)})

    async def list_models(self, request: HttpRequest) -> Response:
        dialect = dialect_for_path(request.url.path, request.headers)
        try:
            running, principal = self.gateway.running, principal_of(request.scope)
        except Exception as exc:
            return error_response(dialect, exc)
        listed = [m for m in running.models.listing() if self._may_list(principal, m)]
        return JSONResponse(dialect.models_body(listed))

    def _may_list(self, principal: Principal, listed: ListedModel) -> bool:
        """Whether ``principal`` may run every model ``listed`` may call."""
        if principal.scope is None:
            return True
        try:
            target = self.gateway.running.models.resolve(listed.id, "openai")
            strategy = self.gateway.running.engine.strategy(target.policy)
        except TierwiseError:  # a policy that cannot be built is listed for nobody scoped
            return False
        return principal.may_use(reachable_models(strategy))

    async def healthz(self, request: HttpRequest) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: HttpRequest) -> Response:
        """Ready when the ledger answers; ``circuits``: each upstream's breaker state."""
        try:
            await asyncio.to_thread(self.gateway.running.ledger.revision)
        except LedgerError as exc:  # the detail only in the server log, under the request id
            unready = {"status": "unavailable", "request_id": failure(exc).request_id}
            return JSONResponse(unready, status_code=503)
        except RuntimeError:  # not started
            return JSONResponse({"status": "unavailable"}, status_code=503)
        circuits = self.gateway.running.engine.failover.states()
        return JSONResponse({"status": "ready", "circuits": circuits})

    async def metrics(self, request: HttpRequest) -> Response:
        """Prometheus text; with auth on, for the admin key only."""
        try:
            principal = principal_of(request.scope)
            if self.gateway.config.auth and not principal.admin:
                raise ForbiddenError("metrics are for the admin key only")
        except Exception as exc:
            return error_response(OPENAI, exc)
        metrics = self.gateway.metrics
        return Response(metrics.render(), media_type=metrics.content_type)

    # --- the model endpoints ---------------------------------------------------------------

    async def _admit(self, request: HttpRequest, dialect: Dialect) -> Admitted:
        """Read the body, resolve its model and check the (authenticated) key may use it."""
        running, config = self.gateway.running, self.gateway.config
        principal = principal_of(request.scope)
        body = await read_json(request, config.max_body_bytes, config.max_json_depth)
        target = running.models.resolve(_model_field(body), dialect.api)
        headers = forward_headers(dialect, request.headers)
        canonical = dialect.parse(body).model_copy(update={"headers": headers})
        strategy = checked_strategy(running.engine, principal, target, canonical)
        return Admitted(dialect, body, canonical, target, strategy, principal)

    async def _model_request(self, request: HttpRequest, dialect: Dialect) -> Response:
        trace = Trace(dialect.api, self.gateway.metrics)
        try:
            admitted = await self._reserve(await self._admit(request, dialect), trace)
            respond = self._stream if admitted.body.get("stream") is True else self._complete
            return await until_disconnect(request.receive, respond(admitted, trace))
        except Exception as exc:
            response = error_response(dialect, exc)
            trace.finish(response.status_code)
            return response
        except asyncio.CancelledError:  # the drain deadline: settle the budget hold now
            trace.finish(499)
            raise

    async def _reserve(self, admitted: Admitted, trace: Trace) -> Admitted:
        """Check ``max_tokens`` against the models the policy may call, the key's rate limits,
        and reserve its budget; ``trace`` settles it at the end."""
        running, principal = self.gateway.running, admitted.principal
        limits = None if principal.admin else (principal.limits or Limits())
        if admitted.dialect.api == "anthropic":
            require_max_tokens(admitted.body)
        unknown = self.gateway.config.default_output_limit
        check_max_tokens(admitted.request, running.budgets.output_limit(admitted.strategy, unknown))
        request, trace.hold = await running.budgets.admit(
            principal.name, limits, admitted.request, admitted.strategy
        )
        return replace(admitted, request=request)

    async def _complete(self, admitted: Admitted, trace: Trace) -> Response:
        running, api = self.gateway.running, admitted.dialect.api
        result = await running.engine.complete(
            admitted.request,
            admitted.target.policy,
            source="gateway",
            observer=trace.observe,
            metadata={TASK_KEY: admitted.principal.name},
            scope=admitted.principal.scope,
        )
        trace.model = result.response.model
        served = running.models.served_name(result.response.model, api)
        response = JSONResponse(admitted.dialect.render(result.response, served))
        response.headers.update(trace.headers(trace.overhead_ms(), result.cost_usd))
        trace.finish(200)
        return response

    async def _stream(self, admitted: Admitted, trace: Trace) -> Response:
        running, api = self.gateway.running, admitted.dialect.api
        events = running.engine.stream(
            admitted.request,
            admitted.target.policy,
            source="gateway",
            observer=trace.observe,
            metadata={TASK_KEY: admitted.principal.name},
            scope=admitted.principal.scope,
        )
        first = await _first(events)
        if isinstance(first, MessageStart):
            trace.model = first.message.model
        served = running.models.served_name(trace.model or admitted.target.requested, api)
        encoder = admitted.dialect.stream_encoder(admitted.body, served)
        headers = trace.headers(trace.routing_ms()) | _SSE_HEADERS
        relay = _relay(encoder, first, events, trace)
        return EventStream(relay, headers, self.gateway.config.stream_keepalive_s)
