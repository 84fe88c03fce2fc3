"""Any OpenAI-compatible Chat Completions host: OpenAI, OpenRouter, vLLM, Ollama, llama.cpp.

Each host is a config row (``kind = "openai"`` and a ``base_url``), not code. The official
SDK does the HTTP (with its retries off: retrying is :mod:`tierwise.providers.retry`'s job);
bodies are read raw and translated by :mod:`tierwise.wire.openai` (streams by
:mod:`tierwise.wire.openai_stream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx2
import openai

from tierwise.catalog import ModelSpec
from tierwise.errors import (
    MalformedResponseError,
    ProviderError,
    ServerError,
    UpstreamConnectionError,
    status_error_class,
)
from tierwise.messages import JsonObject, MessageStart, Request, Response, StreamEvent
from tierwise.providers.base import ProviderConfig, post_streaming
from tierwise.providers.vendor_errors import translate_vendor_error
from tierwise.wire.openai import WireFormatError, request_to_openai, response_from_openai
from tierwise.wire.openai_stream import OpenAIStreamDecoder, SSEParser

REQUEST_ID = "x-request-id"
DRAIN_TIMEOUT_S = 1.0
NO_KEY = "no-key"
"""Sent as the API key to hosts that need none (Ollama, a local vLLM), so the SDK never
falls back to ``OPENAI_API_KEY`` from the environment and leaks it to a third-party host."""

_TRANSPORT_FIELDS = ("stream", "stream_options")
"""Body fields the provider sets itself; a client's values are not passed through."""
COMPLETIONS_PATH = "/chat/completions"


def _error_from_body(
    body: JsonObject, provider: str, model: str, request_id: str | None
) -> ProviderError:
    """The error an in-band ``{"error": {...}}`` envelope (in a 200 body or a stream) reports."""
    error = body.get("error")
    error = error if isinstance(error, dict) else {"message": str(error)}
    message = str(error.get("message") or "upstream reported an error")
    code = error.get("code")
    cls = status_error_class(code) if isinstance(code, int) and code >= 400 else ServerError
    status = code if isinstance(code, int) else None
    return cls(message, provider=provider, model=model, status=status, request_id=request_id)


class OpenAICompatProvider:
    """Talks to one OpenAI-compatible host through ``openai.AsyncOpenAI``."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        api_key: str | None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._client = openai.AsyncOpenAI(
            api_key=api_key or NO_KEY,
            base_url=config.base_url,
            default_headers=config.headers,
            timeout=httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            max_retries=0,
            http_client=http_client,
        )

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        """One completion; errors are :class:`ProviderError` subclasses."""
        body = self._body(request, model)
        try:
            raw = await self._client.post(
                COMPLETIONS_PATH, cast_to=httpx2.Response, body=body, options=_options(request)
            )
            content = raw.content
        except Exception as exc:
            raise translate_vendor_error(exc, self.name, model.name) from exc
        return self._parse_completion(content, model, raw.headers.get(REQUEST_ID))

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        """Canonical events; a stream cut short raises instead of ending quietly."""
        options = {**(request.extra.get("stream_options") or {}), "include_usage": True}
        body = self._body(request, model) | {"stream": True, "stream_options": options}
        try:
            raw = await self._open_stream(body, request)
            try:
                lines = raw.aiter_lines()
                async for event in self._events(lines, model, raw.headers.get(REQUEST_ID)):
                    yield event
            finally:
                await raw.aclose()
        except Exception as exc:
            raise translate_vendor_error(exc, self.name, model.name) from exc

    async def aclose(self) -> None:
        """Close the SDK client and its HTTP connections (an injected client included)."""
        await self._client.close()

    # --- internals ---------------------------------------------------------------------------

    def _body(self, request: Request, model: ModelSpec) -> JsonObject:
        """The request body as sent: already wire JSON, so it goes through ``post`` as it is
        (the SDK's typed ``create`` would walk it field by field on every request)."""
        body = request_to_openai(request, model.name, reasoning=model.capabilities.openai_reasoning)
        return {k: v for k, v in body.items() if k not in _TRANSPORT_FIELDS}

    async def _open_stream(self, body: JsonObject, request: Request) -> httpx2.Response:
        stream_cls = openai.AsyncStream[object]
        return await post_streaming(
            self._client.post, COMPLETIONS_PATH, body, _options(request), stream_cls
        )

    def _malformed(
        self, message: str, model: ModelSpec, request_id: str | None
    ) -> MalformedResponseError:
        return MalformedResponseError(
            message, provider=self.name, model=model.name, request_id=request_id
        )

    def _load(self, data: str | bytes, model: ModelSpec, request_id: str | None) -> JsonObject:
        """A JSON object from the upstream; an ``error`` envelope is raised as what it says."""
        try:
            body = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._malformed(f"upstream sent invalid JSON: {exc}", model, request_id) from None
        if not isinstance(body, dict):
            raise self._malformed("upstream sent JSON that is not an object", model, request_id)
        if body.get("error"):
            raise _error_from_body(body, self.name, model.name, request_id)
        return body

    def _parse_completion(
        self, content: bytes, model: ModelSpec, request_id: str | None
    ) -> Response:
        body = self._load(content, model, request_id)
        try:
            response = response_from_openai(body, model.id)
        except WireFormatError as exc:
            raise self._malformed(str(exc), model, request_id) from None
        return response.model_copy(update={"request_id": request_id})

    async def _events(
        self, lines: AsyncIterator[str], model: ModelSpec, request_id: str | None
    ) -> AsyncIterator[StreamEvent]:
        decoder = OpenAIStreamDecoder(model.id)
        parser = SSEParser()
        async for line in lines:
            data = parser.feed(line)
            if data == "[DONE]":
                await _drain(lines)
                for event in self._finish(decoder, model, request_id):
                    yield event
                return
            if data is not None:
                for event in self._decode(decoder, data, model, request_id):
                    yield event
        raise UpstreamConnectionError(
            "stream ended before [DONE]",
            provider=self.name,
            model=model.name,
            request_id=request_id,
        )

    def _decode(
        self, decoder: OpenAIStreamDecoder, data: str, model: ModelSpec, request_id: str | None
    ) -> list[StreamEvent]:
        chunk = self._load(data, model, request_id)
        try:
            events = decoder.feed(chunk)
        except WireFormatError as exc:
            raise self._malformed(str(exc), model, request_id) from None
        return [self._tag(e, request_id) for e in events]

    def _finish(
        self, decoder: OpenAIStreamDecoder, model: ModelSpec, request_id: str | None
    ) -> list[StreamEvent]:
        try:
            return decoder.finish()
        except WireFormatError as exc:
            raise self._malformed(str(exc), model, request_id) from None

    @staticmethod
    def _tag(event: StreamEvent, request_id: str | None) -> StreamEvent:
        """``message_start`` carries the upstream request id, as a completion does."""
        if not isinstance(event, MessageStart):
            return event
        return MessageStart(message=event.message.model_copy(update={"request_id": request_id}))


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read the body to its end after ``[DONE]`` (the last chunk's framing), so that the
    connection goes back to the pool instead of being closed; a host that holds the
    connection open after ``[DONE]`` is given up on after :data:`DRAIN_TIMEOUT_S`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in lines:
                pass


def _options(request: Request) -> openai.RequestOptions:
    return {"headers": dict(request.headers)} if request.headers else {}
