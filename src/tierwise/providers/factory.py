"""Building a provider from its config row; the wire format is picked by ``kind``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tierwise.config import Settings
from tierwise.errors import ConfigError
from tierwise.providers.base import Provider, ProviderConfig, ProviderKind
from tierwise.providers.retry import RetryingProvider
from tierwise.providers.timeouts import TimeoutProvider

Builder = Callable[[str, ProviderConfig, Settings], Provider]


def _anthropic(name: str, row: ProviderConfig, settings: Settings) -> Provider:
    from tierwise.providers.anthropic import AnthropicProvider  # noqa: PLC0415 (SDK import is slow)

    key = settings.api_key(name)
    return AnthropicProvider(name, row, key, redactor=settings.redactor())


def _openai(name: str, row: ProviderConfig, settings: Settings) -> Provider:
    from tierwise.providers.openai_compat import OpenAICompatProvider  # noqa: PLC0415

    key = settings.api_key(name)
    return OpenAICompatProvider(name, row, key, redactor=settings.redactor())


def _replay(name: str, row: ProviderConfig, settings: Settings) -> Provider:
    from tierwise.datasets import dataset_file, get_dataset  # noqa: PLC0415 (imports httpx2)
    from tierwise.providers.replay import ReplayProvider  # noqa: PLC0415

    if row.dataset is None:
        raise ConfigError(f"replay provider {name!r} needs `dataset` in its config row")
    source = get_dataset(row.dataset)
    data_dir = Path(row.data_dir) if row.data_dir else settings.data_dir
    path = dataset_file(source, data_dir=data_dir, cache_dir=settings.cache_dir)
    return ReplayProvider(name, source.load(path))


BUILDERS: dict[ProviderKind, Builder] = {
    "anthropic": _anthropic,
    "openai": _openai,
    "replay": _replay,
}


def layered(inner: Provider, row: ProviderConfig) -> Provider:
    """``inner`` inside its timeout layer, inside the retry layer (a timeout is retried)."""
    timed = TimeoutProvider(
        inner,
        first_token_s=row.first_token_timeout_s or row.timeout_s,
        idle_s=row.idle_timeout_s or row.timeout_s,
    )
    return RetryingProvider(timed, max_retries=row.max_retries, max_wait_s=row.max_retry_wait_s)


def direct_by_default(settings: Settings) -> Settings:
    """``settings`` with every provider row that leaves ``http`` unset on ``direct``: the
    gateway's choice (the SDKs cost its hot path most of its CPU; ``bench/upstream_client.py``)."""
    rows = {
        name: row if row.http is not None else row.model_copy(update={"http": "direct"})
        for name, row in settings.providers.items()
    }
    return settings.model_copy(update={"providers": rows})


def build_provider(name: str, settings: Settings) -> Provider:
    """The provider for config row ``name``, wrapped in the timeout and retry layers."""
    row = settings.provider(name)
    inner = BUILDERS[row.kind](name, row, settings)
    if row.kind == "replay":
        return inner
    return layered(inner, row)
