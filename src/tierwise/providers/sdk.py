"""The official SDKs as a transport: ``openai.AsyncOpenAI`` and ``anthropic.AsyncAnthropic``.

Requests go out through each SDK's generic raw path (``client.post`` with
``cast_to=httpx2.Response``): the SDK supplies auth, versioning headers and its error types,
while bodies and replies stay plain JSON read by the providers, so fields the SDK's models do
not know survive. The SDK makes exactly one attempt (``max_retries=0``); retries live in
:class:`tierwise.providers.retry.RetryingProvider`. This is the one module where SDK
exceptions become tierwise errors (:func:`translate_vendor_error`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import anthropic
import httpx2
import openai

from tierwise.errors import (
    MalformedResponseError,
    ProviderError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
)
from tierwise.messages import JsonObject
from tierwise.providers.base import ProviderConfig
from tierwise.providers.transport import Reply
from tierwise.providers.vendor_errors import status_error

_VENDOR_ERRORS = (
    anthropic.AnthropicError,
    openai.OpenAIError,
    httpx2.HTTPError,
    httpx2.StreamError,
)
SDKClient = openai.AsyncOpenAI | anthropic.AsyncAnthropic


def _timeout(config: ProviderConfig) -> httpx2.Timeout:
    return httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)


def openai_client(
    config: ProviderConfig, api_key: str, http_client: httpx2.AsyncClient | None
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=config.base_url,
        default_headers=config.headers,
        timeout=_timeout(config),
        max_retries=0,
        http_client=http_client,
    )


def anthropic_client(
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
        timeout=_timeout(config),
        max_retries=0,
        http_client=http_client,
    )


def _status_error(
    exc: anthropic.APIStatusError | openai.APIStatusError, provider: str, model: str | None
) -> ProviderError:
    return status_error(
        exc.status_code,
        exc.body,
        exc.response.headers,
        provider=provider,
        model=model,
        request_id=exc.request_id,
        fallback=str(exc),
    )


def translate_vendor_error(exc: BaseException, provider: str, model: str | None) -> ProviderError:
    """A :class:`ProviderError` for any exception raised by an SDK or its HTTP client."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, anthropic.APIStatusError | openai.APIStatusError):
        return _status_error(exc, provider, model)
    if isinstance(
        exc, anthropic.APITimeoutError | openai.APITimeoutError | httpx2.TimeoutException
    ):
        return UpstreamTimeoutError(
            "upstream timed out", provider=provider, model=model, request_sent=_sent(exc)
        )
    if isinstance(
        exc, anthropic.APIConnectionError | openai.APIConnectionError | httpx2.TransportError
    ):
        return UpstreamConnectionError(f"connection failed: {exc}", provider=provider, model=model)
    if isinstance(exc, anthropic.APIResponseValidationError | openai.APIResponseValidationError):
        return MalformedResponseError(
            f"unreadable upstream response: {exc}", provider=provider, model=model
        )
    return MalformedResponseError(
        f"unexpected upstream failure: {type(exc).__name__}: {exc}", provider=provider, model=model
    )


class _SDKStream:
    """An unread streaming response of an SDK client."""

    def __init__(self, raw: httpx2.Response, provider: str, model: str) -> None:
        self._raw = raw
        self._provider = provider
        self._model = model
        self.status = raw.status_code
        self.headers: Mapping[str, str] = raw.headers

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._raw.aiter_bytes():
                yield chunk
        except _VENDOR_ERRORS as exc:
            raise translate_vendor_error(exc, self._provider, self._model) from exc

    async def aclose(self) -> None:
        await self._raw.aclose()


class SDKTransport:
    """Requests through an official SDK client (which it owns and closes)."""

    def __init__(self, client: SDKClient, provider: str) -> None:
        self._client = client
        self._provider = provider
        self._stream_cls: type = (
            openai.AsyncStream[object]
            if isinstance(client, openai.AsyncOpenAI)
            else anthropic.AsyncStream[object]
        )

    async def post(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> Reply:
        try:
            raw = await self._post(path, body, headers)
            content = raw.content
        except _VENDOR_ERRORS as exc:
            raise translate_vendor_error(exc, self._provider, model) from exc
        return Reply(raw.status_code, raw.headers, content)

    async def open_stream(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> _SDKStream:
        try:
            raw = await self._post(path, body, headers, stream=True)
        except _VENDOR_ERRORS as exc:
            raise translate_vendor_error(exc, self._provider, model) from exc
        return _SDKStream(raw, self._provider, model)

    async def aclose(self) -> None:
        """Close the SDK client and its HTTP connections (an injected client included)."""
        await self._client.close()

    async def _post(
        self, path: str, body: JsonObject, headers: Mapping[str, str], stream: bool = False
    ) -> httpx2.Response:
        """The raw response: with ``cast_to=httpx2.Response`` the SDK hands it back unread
        even when streaming (its overloads type it as the unused ``stream_cls``)."""
        options: Any = {"headers": dict(headers)} if headers else {}
        post: Any = self._client.post
        raw = await post(
            path,
            cast_to=httpx2.Response,
            body=body,
            options=options,
            stream=stream,
            stream_cls=self._stream_cls if stream else None,
        )
        if not isinstance(raw, httpx2.Response):
            raise TypeError(f"expected a raw httpx2.Response from the SDK, got {type(raw)}")
        return raw


_NOT_SENT = (httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.WriteTimeout)
"""httpx timeouts before the whole request reached the upstream: nothing ran there."""


def _sent(exc: BaseException) -> bool:
    """Whether a timed-out request had been sent whole (the SDKs wrap httpx's timeout)."""
    cause = exc if isinstance(exc, httpx2.TimeoutException) else exc.__cause__
    return not isinstance(cause, _NOT_SENT)
