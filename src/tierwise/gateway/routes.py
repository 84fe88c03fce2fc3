"""The gateway's endpoints: authenticate, read, resolve, run through the engine, answer.

Every failure goes through :func:`error_response`, which renders it in the API's own error
envelope. A stream is opened only once its first event is in hand, so any failure before
the first byte is a real HTTP error status; after it, a failure ends the stream with an
in-band error event (Anthropic ``event: error``, OpenAI a ``data: {"error": …}`` chunk and
no ``[DONE]``), never a clean close that looks like success.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from tierwise.budgets.limits import Limits
from tierwise.errors import (
    ForbiddenError,
    InvalidRequestError,
    LedgerError,
    MalformedResponseError,
    RequestTooLargeError,
)
from tierwise.gateway.auth import ANONYMOUS, Principal
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
from tierwise.gateway.models import Target
from tierwise.gateway.service import Gateway
from tierwise.gateway.sse import EventStream
from tierwise.gateway.trace import Trace
from tierwise.messages import JsonObject, MessageStart, Request, StreamEvent

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


async def read_json(request: HttpRequest, limit: int) -> JsonObject:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body of {declared} bytes is over the {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return body


def _model_field(body: JsonObject) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("`model` is required: a model or policy name (GET /v1/models)")
    return model


@dataclass(frozen=True)
class Admitted:
    """A request past auth, parsing and resolution."""

    dialect: Dialect
    body: JsonObject
    request: Request
    target: Target
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
            running = self.gateway.running
            principal = await running.auth.authenticate(request.headers)
        except Exception as exc:
            return error_response(dialect, exc)
        listed = [m for m in running.models.listing() if principal.may_use(m.names)]
        return JSONResponse(dialect.models_body(listed))

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
            principal = await self.gateway.running.auth.authenticate(request.headers)
            if self.gateway.config.auth and not principal.admin:
                raise ForbiddenError("metrics are for the admin key only")
        except Exception as exc:
            return error_response(OPENAI, exc)
        metrics = self.gateway.metrics
        return Response(metrics.render(), media_type=metrics.content_type)

    # --- the model endpoints ---------------------------------------------------------------

    async def _admit(self, request: HttpRequest, dialect: Dialect) -> Admitted:
        """Authenticate, read the body, resolve its model and check the key may use it."""
        running = self.gateway.running
        principal = await running.auth.authenticate(request.headers)
        body = await read_json(request, self.gateway.config.max_body_bytes)
        target = running.models.resolve(_model_field(body), dialect.api)
        principal.authorize(target)
        headers = forward_headers(dialect, request.headers)
        canonical = dialect.parse(body).model_copy(update={"headers": headers})
        return Admitted(dialect, body, canonical, target, principal)

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
        """Check the key's rate limits and reserve its budget; ``trace`` settles it at the end."""
        running, principal = self.gateway.running, admitted.principal
        limits = None if principal.admin else (principal.limits or Limits())
        strategy = running.engine.strategy(admitted.target.policy)
        request, trace.hold = await running.budgets.admit(
            principal.name, limits, admitted.request, strategy
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
        )
        first = await _first(events)
        if isinstance(first, MessageStart):
            trace.model = first.message.model
        served = running.models.served_name(trace.model or admitted.target.requested, api)
        encoder = admitted.dialect.stream_encoder(admitted.body, served)
        headers = trace.headers(trace.routing_ms()) | _SSE_HEADERS
        relay = _relay(encoder, first, events, trace)
        return EventStream(relay, headers, self.gateway.config.stream_keepalive_s)
