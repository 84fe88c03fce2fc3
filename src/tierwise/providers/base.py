"""The provider seam: one client for one upstream host, two methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tierwise.catalog import ModelSpec
from tierwise.messages import Request, Response, StreamEvent
from tierwise.redaction import Redactor, header_secrets, url_secrets

ProviderKind = Literal["anthropic", "openai", "replay"]


class ProviderConfig(BaseModel):
    """One upstream host, as a config row (``[providers.NAME]``).

    ``kind`` picks the wire format: ``anthropic`` (Messages API), ``openai`` (any
    OpenAI-compatible Chat Completions host) or ``replay`` (recorded outcomes, no network).
    """

    model_config = ConfigDict(extra="forbid")

    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = None
    requires_key: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    """Longest wait for the first stream event, or for a whole non-streamed answer (whose
    first token arrives with its last); default: ``timeout_s``."""
    idle_timeout_s: float | None = Field(default=None, gt=0)
    """Longest gap between two stream events once streaming started; default: ``timeout_s``."""
    advisor_beta: bool = True
    """Anthropic only: the account may use the advisor tool beta (``advisor-tool-2026-03-01``);
    false: tierwise emulates the advisor for this host's models."""
    http: Literal["sdk", "direct"] | None = None
    """How requests go out: ``sdk`` (the official SDK) or ``direct`` (aiohttp, leaner: the
    gateway's hot path; needs ``tierwise[gateway]``). Unset: direct in the gateway, the SDK
    everywhere else."""
    max_retries: int = Field(default=2, ge=0, le=10)
    max_retry_wait_s: float = Field(default=60.0, ge=0)
    dataset: str | None = None
    """Replay only: the recorded-outcome dataset to answer from (e.g. ``routellm-gsm8k``)."""
    data_dir: str | None = None
    """Replay only: a local copy of the datasets; default: download and cache."""


def own_secrets(config: ProviderConfig, api_key: str | None) -> Redactor:
    """A redactor of what a provider itself holds: its key, credential headers, URL password
    (the factory hands providers one of every configured secret instead)."""
    return Redactor([api_key, *header_secrets(config.headers), *url_secrets(config.base_url)])


@runtime_checkable
class Provider(Protocol):
    """Sends canonical requests to one upstream host.

    ``model`` is the catalog spec to call; ``request.model`` is ignored. Errors raised are
    :class:`tierwise.errors.ProviderError` subclasses, never vendor exceptions. Retries live
    in :class:`tierwise.providers.retry.RetryingProvider`, not here.
    """

    name: str

    async def complete(self, request: Request, model: ModelSpec) -> Response: ...

    def stream(self, request: Request, model: ModelSpec) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
