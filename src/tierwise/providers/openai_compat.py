"""Any OpenAI-compatible Chat Completions host: OpenAI, OpenRouter, vLLM, Ollama, llama.cpp.

Each host is a config row (``kind = "openai"`` and a ``base_url``), not code. The HTTP goes
through a transport (:mod:`tierwise.providers.transport`): the official SDK by default, or
aiohttp directly (``http = "direct"``, the gateway's default); bodies are read raw and
translated by :mod:`tierwise.wire.openai` (streams by :mod:`tierwise.wire.openai_stream`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tierwise.catalog import ModelSpec
from tierwise.errors import (
    MalformedResponseError,
    ProviderError,
    ServerError,
    UpstreamConnectionError,
    status_error_class,
)
from tierwise.messages import JsonObject, MessageStart, Request, Response, StreamEvent
from tierwise.providers.base import ProviderConfig, own_secrets
from tierwise.providers.transport import StreamReply, Transport, drain, use_direct
from tierwise.wire.openai import WireFormatError, request_to_openai, response_from_openai
from tierwise.wire.openai_stream import OpenAIStreamDecoder, SSEParser

if TYPE_CHECKING:
    import httpx2

    from tierwise.redaction import Redactor

REQUEST_ID = "x-request-id"
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


def _transport(
    name: str, config: ProviderConfig, api_key: str, http_client: httpx2.AsyncClient | None
) -> Transport:
    if use_direct(config.http, sdk_client_given=http_client is not None):
        from tierwise.providers import direct  # noqa: PLC0415 (aiohttp: the gateway's extra)

        headers = direct.openai_headers(config, api_key)
        return direct.DirectTransport(name, config, headers, request_id_header=REQUEST_ID)
    from tierwise.providers import sdk  # noqa: PLC0415 (the SDK import is slow)

    return sdk.SDKTransport(sdk.openai_client(config, api_key, http_client), name)


class OpenAICompatProvider:
    """Talks to one OpenAI-compatible host through ``openai.AsyncOpenAI`` or directly."""

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
        self.config = config
        self._transport = _transport(name, config, api_key or NO_KEY, http_client)

    async def complete(self, request: Request, model: ModelSpec) -> Response:
        """One completion; errors are :class:`ProviderError` subclasses, secrets redacted."""
        try:
            body = self._body(request, model)
            raw = await self._transport.post(COMPLETIONS_PATH, body, request.headers, model.name)
            return self._parse_completion(raw.content, model, raw.headers.get(REQUEST_ID))
        except ProviderError as exc:
            self._redact.scrub(exc)
            raise

    async def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        """Canonical events; a stream cut short raises instead of ending quietly."""
        options = {**(request.extra.get("stream_options") or {}), "include_usage": True}
        try:
            body = self._body(request, model) | {"stream": True, "stream_options": options}
            reply = await self._transport.open_stream(
                COMPLETIONS_PATH, body, request.headers, model.name
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
        """Close the transport and its HTTP connections (an injected client included)."""
        await self._transport.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _body(self, request: Request, model: ModelSpec) -> JsonObject:
        """The request body as sent: already wire JSON, so it goes through ``post`` as it is
        (the SDK's typed ``create`` would walk it field by field on every request)."""
        body = request_to_openai(request, model.name, reasoning=model.capabilities.openai_reasoning)
        return {k: v for k, v in body.items() if k not in _TRANSPORT_FIELDS}

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

    async def _events(self, reply: StreamReply, model: ModelSpec) -> AsyncIterator[StreamEvent]:
        request_id = reply.headers.get(REQUEST_ID)
        decoder = OpenAIStreamDecoder(model.id)
        parser = SSEParser()
        async with contextlib.aclosing(reply.chunks()) as chunks:
            async for chunk in chunks:
                for sse in parser.feed_bytes(chunk):
                    if sse.data == "[DONE]":
                        await drain(chunks)
                        for event in self._finish(decoder, model, request_id):
                            yield event
                        return
                    for event in self._decode(decoder, sse.data, model, request_id):
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
