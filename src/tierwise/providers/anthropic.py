"""The Anthropic Messages provider, over the official SDK or directly.

The HTTP goes through a transport (:mod:`tierwise.providers.transport`): the official SDK by
default (auth, versioning headers and its error types), or aiohttp directly
(``http = "direct"``, the gateway's default). Either way the body and the reply stay plain
JSON read by :mod:`tierwise.wire.anthropic`, so fields and blocks the SDK's models do not
know survive, and a stream is read with :class:`tierwise.wire.openai_stream.SSEParser`.
One attempt per call; retries live in :class:`tierwise.providers.retry.RetryingProvider`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from tierwise.catalog import ModelSpec
from tierwise.errors import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderError,
    UpstreamConnectionError,
)
from tierwise.messages import JsonObject, MessageStop, Request, Response, StreamEvent
from tierwise.providers.base import ProviderConfig, own_secrets
from tierwise.providers.transport import Reply, StreamReply, Transport, drain, use_direct
from tierwise.wire.anthropic import (
    event_from_anthropic,
    merge_stream_usage,
    request_to_anthropic,
    response_from_anthropic,
)
from tierwise.wire.openai_stream import SSEParser

if TYPE_CHECKING:
    import httpx2

    from tierwise.redaction import Redactor

MESSAGES_PATH = "/v1/messages"
REQUEST_ID = "request-id"


def _transport(
    name: str, config: ProviderConfig, api_key: str | None, http_client: httpx2.AsyncClient | None
) -> Transport:
    if use_direct(config.http, sdk_client_given=http_client is not None):
        from tierwise.providers import direct  # noqa: PLC0415 (aiohttp: the gateway's extra)

        headers = direct.anthropic_headers(config, api_key)
        return direct.DirectTransport(name, config, headers, request_id_header=REQUEST_ID)
    from tierwise.providers import sdk  # noqa: PLC0415 (the SDK import is slow)

    return sdk.SDKTransport(sdk.anthropic_client(config, api_key, http_client), name)


class AnthropicProvider:
    """One Anthropic Messages host (``kind = "anthropic"``)."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        api_key: str | None,
        http_client: httpx2.AsyncClient | None = None,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        """``redactor`` takes secrets out of upstream errors; default: this row's own."""
        self.name = name
        self._redact = own_secrets(config, api_key) if redactor is None else redactor
        self._transport = _transport(name, config, api_key, http_client)

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        """One message; errors are :class:`ProviderError` subclasses, secrets redacted."""
        try:
            body = _body(request, model)
            raw = await self._transport.post(MESSAGES_PATH, body, request.headers, model.name)
            return self._decode(raw, model)
        except ProviderError as exc:
            self._redact.scrub(exc)
            raise

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        """Canonical events parsed from the raw SSE stream (nothing the SDK would drop)."""
        try:
            body = _body(request, model) | {"stream": True}
            reply = await self._transport.open_stream(
                MESSAGES_PATH, body, request.headers, model.name
            )
            try:
                async for event in self._events(reply, model):
                    yield event
            finally:
                await reply.aclose()
        except ProviderError as exc:
            self._redact.scrub(exc)
            raise

    async def aclose(self) -> None:
        await self._transport.aclose()

    # --- internals -------------------------------------------------------------------------

    async def _events(self, reply: StreamReply, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        reader = _EventReader(self.name, model, reply.status, reply.headers)
        parser = SSEParser()
        async with contextlib.aclosing(reply.chunks()) as chunks:
            async for chunk in chunks:
                for sse in parser.feed_bytes(chunk):
                    if (event := reader.read(sse.event, sse.data)) is None:
                        continue
                    yield event
                    if isinstance(event, MessageStop):
                        await drain(chunks)
                        return
        reader.finish()

    def _decode(self, raw: Reply, model: ModelSpec) -> Response:
        try:
            data = json.loads(raw.content)
        except ValueError:
            raise _malformed("response body is not JSON", self.name, model, raw) from None
        if not isinstance(data, dict):
            raise _malformed("response body is not a JSON object", self.name, model, raw)
        try:
            return response_from_anthropic(data, model.id, provider=self.name)
        except MalformedResponseError as exc:
            raise _malformed(exc.message, self.name, model, raw) from None


class _EventReader:
    """Parses one SSE stream into canonical events.

    ``message_delta`` usage is completed from ``message_start``'s (an absent field means
    unchanged, not zero), and a stream that ends before ``message_stop`` is an error.
    """

    def __init__(
        self, provider: str, model: ModelSpec, status: int, headers: Mapping[str, str]
    ) -> None:
        self._provider = provider
        self._model = model
        self._status = status
        self._request_id = headers.get(REQUEST_ID)
        self._start_usage: JsonObject = {}
        self._stopped = False

    def read(self, name: str | None, data: str) -> StreamEvent | None:
        if name == "ping" or not data:
            return None
        event = self._complete_usage(self._json(data))
        try:
            parsed = event_from_anthropic(event, model_id=self._model.id, provider=self._provider)
        except ProviderError as exc:  # an ``error`` event: name the request it ended
            exc.request_id = exc.request_id or self._request_id
            raise
        self._stopped = self._stopped or isinstance(parsed, MessageStop)
        return parsed

    def finish(self) -> None:
        if not self._stopped:
            raise UpstreamConnectionError(
                "stream ended before message_stop",
                provider=self._provider,
                model=self._model.name,
                request_id=self._request_id,
            )

    def _json(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise MalformedResponseError(
                "stream event is not a JSON object",
                provider=self._provider,
                model=self._model.name,
                status=self._status,
                request_id=self._request_id,
            )
        return event

    def _complete_usage(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("type") == "message_start":
            self._start_usage = dict(event.get("message", {}).get("usage") or {})
        elif event.get("type") == "message_delta":
            usage = merge_stream_usage(self._start_usage, event.get("usage") or {})
            return {**event, "usage": usage}
        return event


def _body(request: Request, model: ModelSpec) -> JsonObject:
    """The wire body; ``max_tokens`` (required upstream) defaults to the model's maximum."""
    body = request_to_anthropic(request, model.name)
    if "max_tokens" not in body:
        if model.max_output_tokens is None:
            raise InvalidRequestError(
                f"{model.id} needs max_tokens: set it on the request or in the catalog"
            )
        body["max_tokens"] = model.max_output_tokens
    return body


def _malformed(message: str, provider: str, model: ModelSpec, raw: Reply) -> MalformedResponseError:
    return MalformedResponseError(
        message,
        provider=provider,
        model=model.name,
        status=raw.status,
        request_id=raw.headers.get(REQUEST_ID),
    )
