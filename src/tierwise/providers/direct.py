"""A lean transport for the gateway's hot path: aiohttp straight to the upstream, no SDK.

The official SDKs cost the gateway most of its CPU per request (``bench/upstream_client.py``
measures both paths), so the gateway talks to upstreams through aiohttp (C-accelerated
parser, pooled keep-alive connections) with the headers the SDKs send that matter upstream:
credentials, ``anthropic-version``, the config's ``headers``, each request's own headers
(``anthropic-beta`` among them), JSON content type and a ``user-agent`` naming tierwise.
Timeouts are the config's (``connect_timeout_s``, and ``timeout_s`` between two reads, as
the SDKs' httpx timeouts are) and errors map as the SDK path maps them
(:mod:`tierwise.providers.vendor_errors`). A session is opened on first use, on the running
event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import AsyncGenerator, Mapping
from importlib import metadata

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from multidict import CIMultiDict
from yarl import URL

from tierwise.errors import ProviderError, UpstreamConnectionError, UpstreamTimeoutError
from tierwise.messages import JsonObject
from tierwise.providers.base import ProviderConfig
from tierwise.providers.transport import Reply
from tierwise.providers.vendor_errors import error_body, status_error

ANTHROPIC_VERSION = "2026-10-21"
"""The ``anthropic-version`` the pinned ``anthropic`` SDK sends (a test checks they agree)."""
OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
MAX_CONNECTIONS = 1000
KEEPALIVE_S = 5.0
"""The SDKs' httpx pool limits: 1000 connections, idle ones kept 5 s."""


@functools.cache
def user_agent() -> str:
    try:
        version = metadata.version("tierwise")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"tierwise/{version} aiohttp/{aiohttp.__version__}"


def _base_headers() -> CIMultiDict[str]:
    return CIMultiDict(
        {
            "accept": "application/json",
            "content-type": "application/json",
            "user-agent": user_agent(),
        }
    )


def openai_headers(config: ProviderConfig, api_key: str) -> CIMultiDict[str]:
    """What ``openai.AsyncOpenAI`` sends upstream: a bearer key (and the organization and
    project it reads from the environment), then the config's own headers on top."""
    headers = _base_headers()
    headers["authorization"] = f"Bearer {api_key}"
    if organization := os.environ.get("OPENAI_ORG_ID"):
        headers["openai-organization"] = organization
    if project := os.environ.get("OPENAI_PROJECT_ID"):
        headers["openai-project"] = project
    headers.update(config.headers)
    return headers


def anthropic_headers(config: ProviderConfig, api_key: str | None) -> CIMultiDict[str]:
    """What ``anthropic.AsyncAnthropic`` sends upstream: ``anthropic-version``, the key as a
    bearer token (none for a keyless host), then the config's own headers on top."""
    headers = _base_headers()
    headers["anthropic-version"] = ANTHROPIC_VERSION
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    headers.update(config.headers)
    return headers


def default_base_url(kind: str) -> str:
    """The SDKs' default host: ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` or the vendor's."""
    if kind == "openai":
        return os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
    return os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE_URL


def _translate(exc: BaseException, provider: str, model: str) -> ProviderError:
    """A tierwise error for an aiohttp failure (its timeouts are ``TimeoutError``s)."""
    if isinstance(exc, TimeoutError):
        sent = not isinstance(exc, aiohttp.ConnectionTimeoutError)
        return UpstreamTimeoutError(
            "upstream timed out", provider=provider, model=model, request_sent=sent
        )
    return UpstreamConnectionError(
        f"connection failed: {type(exc).__name__}: {exc}", provider=provider, model=model
    )


_FAILURES = (aiohttp.ClientError, OSError, TimeoutError)


def _env_proxy(url: str) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy (and its credentials) the environment names for ``url`` (``HTTPS_PROXY``,
    ``NO_PROXY``...), as httpx's ``trust_env`` reads them. Looked up once per session:
    aiohttp's own ``trust_env`` does it on a thread for every request."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None
    return proxy, None if auth is None else {"proxy-authorization": auth.encode()}


class _DirectStream:
    """A 2xx streaming response; :meth:`aclose` puts a fully read connection back in the pool
    (and closes one whose body was not read to its end)."""

    def __init__(self, response: aiohttp.ClientResponse, provider: str, model: str) -> None:
        self._response = response
        self._provider = provider
        self._model = model
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _FAILURES as exc:
            raise _translate(exc, self._provider, self._model) from exc

    async def aclose(self) -> None:
        self._response.release()


class DirectTransport:
    """POSTs JSON to ``base_url`` + path over one pooled aiohttp session."""

    def __init__(
        self,
        provider: str,
        config: ProviderConfig,
        headers: CIMultiDict[str],
        *,
        request_id_header: str,
    ) -> None:
        self._provider = provider
        self._base_url = (config.base_url or default_base_url(config.kind)).rstrip("/")
        self._headers = headers
        self._request_id_header = request_id_header
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout_s, sock_read=config.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_headers: dict[str, str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> Reply:
        try:
            async with self._send(path, body, headers) as response:
                content = await response.read()
        except _FAILURES as exc:
            raise _translate(exc, self._provider, model) from exc
        if not 200 <= response.status < 300:
            raise self._status_error(response, content, model)
        return Reply(response.status, response.headers, content)

    async def open_stream(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> _DirectStream:
        try:
            response = await self._send(path, body, headers)
            if not 200 <= response.status < 300:
                async with response:
                    content = await response.read()
                raise self._status_error(response, content, model)
        except _FAILURES as exc:
            raise _translate(exc, self._provider, model) from exc
        return _DirectStream(response, self._provider, model)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # --- internals -------------------------------------------------------------------------

    def _send(
        self, path: str, body: JsonObject, headers: Mapping[str, str]
    ) -> aiohttp.client._RequestContextManager:
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        session = self._client()
        return session.post(
            self._base_url + path,
            data=data,
            headers=dict(headers) if headers else None,
            proxy=self._proxy,
            proxy_headers=self._proxy_headers,
        )

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running loop (a new loop, as in a new test, gets its own)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
            self._loop = loop
            self._proxy, self._proxy_headers = _env_proxy(self._base_url)
        return self._session

    def _status_error(
        self, response: aiohttp.ClientResponse, content: bytes, model: str
    ) -> ProviderError:
        body = error_body(content)
        return status_error(
            response.status,
            body,
            response.headers,
            provider=self._provider,
            model=model,
            request_id=response.headers.get(self._request_id_header),
            fallback=f"Error code: {response.status} - {body}",
        )
