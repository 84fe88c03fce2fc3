"""The Anthropic Messages provider, over the official SDK.

Requests go out through the SDK's generic raw path (``client.post`` with
``cast_to=httpx2.Response``): the SDK supplies auth, versioning headers and its error types,
while the body and the reply stay plain JSON read by :mod:`tierwise.wire.anthropic`, so
fields and blocks the SDK's models do not know survive. The SDK makes exactly one attempt
(``max_retries=0``); retries live in :class:`tierwise.providers.retry.RetryingProvider`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, cast

import anthropic
import httpx2

from tierwise.catalog import ModelSpec
from tierwise.errors import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderError,
    UpstreamConnectionError,
)
from tierwise.messages import JsonObject, MessageStop, Request, Response, StreamEvent
from tierwise.providers.base import ProviderConfig, post_streaming
from tierwise.providers.vendor_errors import translate_vendor_error
from tierwise.wire.anthropic import (
    event_from_anthropic,
    merge_stream_usage,
    request_to_anthropic,
    response_from_anthropic,
)

MESSAGES_PATH = "/v1/messages"
_VENDOR_ERRORS = (anthropic.AnthropicError, httpx2.HTTPError, httpx2.StreamError)


def _client(
    config: ProviderConfig, api_key: str | None, http_client: httpx2.AsyncClient | None
) -> anthropic.AsyncAnthropic:
    """An SDK client with no retries and no credential discovery of its own.

    Without a key (``requires_key = false`` hosts) the SDK is given an empty token, so it does
    not pick up ``ANTHROPIC_API_KEY`` or a profile, and the ``Authorization`` header is omitted.
    """
    headers = dict(config.headers)
    if not api_key:
        headers["Authorization"] = cast(str, anthropic.omit)
    return anthropic.AsyncAnthropic(
        api_key=api_key or None,
        auth_token=None if api_key else "",
        base_url=config.base_url,
        default_headers=headers,
        timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
        max_retries=0,
        http_client=http_client,
    )


class AnthropicProvider:
    """One Anthropic Messages host (``kind = "anthropic"``)."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        api_key: str | None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self._client = _client(config, api_key, http_client)

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        body = _body(request, model)
        with self._vendor_errors(model):
            raw = await self._client.post(
                MESSAGES_PATH, cast_to=httpx2.Response, body=body, options=_options(request)
            )
        return self._decode(raw, model)

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        """Canonical events parsed from the raw SSE stream (nothing the SDK would drop)."""
        body = _body(request, model) | {"stream": True}
        with self._vendor_errors(model):
            raw = await self._open_stream(body, request)
        try:
            with self._vendor_errors(model):
                async for event in self._events(raw, model):
                    yield event
        finally:
            await raw.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    # --- internals -------------------------------------------------------------------------

    @contextmanager
    def _vendor_errors(self, model: ModelSpec) -> Iterator[None]:
        try:
            yield
        except _VENDOR_ERRORS as exc:
            raise translate_vendor_error(exc, self.name, model.name) from exc

    async def _open_stream(self, body: JsonObject, request: Request) -> httpx2.Response:
        stream_cls = anthropic.AsyncStream[object]
        return await post_streaming(
            self._client.post, MESSAGES_PATH, body, _options(request), stream_cls
        )

    async def _events(self, raw: httpx2.Response, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        reader = _EventReader(self.name, model, raw)
        async for sse in anthropic.AsyncStream.raw_events(raw):
            if (event := reader.read(sse.event, sse.data)) is not None:
                yield event
        reader.finish()

    def _decode(self, raw: httpx2.Response, model: ModelSpec) -> Response:
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

    def __init__(self, provider: str, model: ModelSpec, raw: httpx2.Response) -> None:
        self._provider = provider
        self._model = model
        self._raw = raw
        self._start_usage: JsonObject = {}
        self._stopped = False

    def read(self, name: str | None, data: str) -> StreamEvent | None:
        if name == "ping" or not data:
            return None
        event = self._complete_usage(self._json(data))
        try:
            parsed = event_from_anthropic(event, model_id=self._model.id, provider=self._provider)
        except ProviderError as exc:  # an ``error`` event: name the request it ended
            exc.request_id = exc.request_id or self._raw.headers.get("request-id")
            raise
        self._stopped = self._stopped or isinstance(parsed, MessageStop)
        return parsed

    def finish(self) -> None:
        if not self._stopped:
            raise UpstreamConnectionError(
                "stream ended before message_stop",
                provider=self._provider,
                model=self._model.name,
                request_id=self._raw.headers.get("request-id"),
            )

    def _json(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise _malformed(
                "stream event is not a JSON object", self._provider, self._model, self._raw
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


def _options(request: Request) -> anthropic.RequestOptions:
    return {"headers": dict(request.headers)}


def _malformed(
    message: str, provider: str, model: ModelSpec, raw: httpx2.Response
) -> MalformedResponseError:
    return MalformedResponseError(
        message,
        provider=provider,
        model=model.name,
        status=raw.status_code,
        request_id=raw.headers.get("request-id"),
    )
