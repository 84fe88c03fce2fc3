"""The HTTP seam under a provider: POST a JSON body, get bytes back, whole or streamed.

Two transports implement it: the official SDKs' (:mod:`tierwise.providers.sdk`, the
library's default) and a lean aiohttp one for the gateway's hot path
(:mod:`tierwise.providers.direct`). Providers build the wire bodies and read the replies;
transports only move bytes and turn every HTTP failure (error status, refused or dropped
connection, timeout) into a :class:`tierwise.errors.ProviderError`, so both paths fail alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from tierwise.errors import ConfigError
from tierwise.messages import JsonObject

HttpMode = Literal["sdk", "direct"]
DRAIN_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Reply:
    """A whole 2xx response (headers are looked up case-insensitively)."""

    status: int
    headers: Mapping[str, str]
    content: bytes


class StreamReply(Protocol):
    """A 2xx response whose body is read as it arrives; close it when done."""

    status: int
    headers: Mapping[str, str]

    def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body's bytes as they come; a failure is raised as a ``ProviderError``."""
        ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """POSTs to one upstream host; ``model`` only names the call in errors."""

    async def post(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> Reply: ...

    async def open_stream(
        self, path: str, body: JsonObject, headers: Mapping[str, str], model: str
    ) -> StreamReply: ...

    async def aclose(self) -> None: ...


def use_direct(config_http: HttpMode | None, *, sdk_client_given: bool) -> bool:
    """Whether a provider talks through :mod:`tierwise.providers.direct`: only when its
    config says ``http = "direct"`` (unset means the SDK; the gateway sets its rows to
    direct, see :func:`tierwise.providers.factory.direct_by_default`). An injected SDK HTTP
    client and ``direct`` do not go together; aiohttp must be installed (``tierwise[gateway]``).
    """
    if config_http != "direct":
        return False
    if sdk_client_given:
        raise ConfigError('an http_client is for the SDK path; this row says http = "direct"')
    if importlib.util.find_spec("aiohttp") is None:
        raise ConfigError("http = \"direct\" needs aiohttp: pip install 'tierwise[gateway]'")
    return True


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read a body to its end once its stream is over (``[DONE]``, ``message_stop``), so that
    the connection goes back to the pool instead of being closed; a host that holds the
    connection open after the end is given up on after :data:`DRAIN_TIMEOUT_S`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in chunks:
                pass
