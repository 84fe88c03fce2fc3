"""Typed, layered settings: shipped defaults < config file (TOML) < environment < flags.

The config file is found at ``--config``, else ``$TIERWISE_CONFIG``, else
``<user config dir>/tierwise/config.toml`` if it exists. Environment variables are
``TIERWISE_<FIELD>`` (nested with ``__``, e.g. ``TIERWISE_PROVIDERS__OPENAI__BASE_URL``).

Example file::

    default_policy = "fixed:anthropic:claude-haiku-4-5"
    ledger_url = "postgresql://tierwise@db.internal/tierwise"

    [providers.openrouter]          # every host is a row; kind picks the wire format
    kind = "openai"
    base_url = "https://openrouter.ai/api/v1"
    api_key_env = "OPENROUTER_API_KEY"

    [providers.ollama]              # a shipped local host (ollama, vllm, llamacpp): off
                                    # until named here, even by an empty table

    [policies]                      # named policies
    cheap = "fixed:openai:gpt-5-nano"

    [gateway]                       # `tierwise serve`; the admin key comes from TIERWISE_ADMIN_KEY
    port = 8787

    [routing]                       # route:<router> policies
    candidates = ["openai:gpt-5-nano", "anthropic:claude-sonnet-4-6"]

    [[models]]                      # add or override catalog rows (same shape as the catalog)
    id = "ollama:llama3.1:8b"
    prices = { input = 0, output = 0 }
    profile = { tier = 1 }
"""

from __future__ import annotations

import os
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tierwise.advisor.settings import AdvisorSettings
from tierwise.errors import ConfigError, MissingCredentialsError
from tierwise.failover import FailoverSettings
from tierwise.gateway.config import GatewayConfig
from tierwise.ledger.store import default_ledger_url
from tierwise.providers.base import ProviderConfig
from tierwise.redaction import Redactor, header_secrets, url_secrets
from tierwise.strategies.cascade_settings import CascadeSettings

APP_NAME = "tierwise"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")
"""Proxies the upstream clients take from the environment (their passwords are secrets)."""


def _row(kind: str, base_url: str | None, key_env: str | None, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "base_url": base_url, "api_key_env": key_env, **extra}


DEFAULT_PROVIDERS: dict[str, dict[str, Any]] = {
    "anthropic": _row("anthropic", None, "ANTHROPIC_API_KEY"),
    "openai": _row("openai", None, "OPENAI_API_KEY"),
    "openrouter": _row("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "together": _row("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
}
"""Hosted vendors: always present, usable once their key is set."""
LOCAL_PROVIDERS: dict[str, dict[str, Any]] = {
    "ollama": _row("openai", "http://127.0.0.1:11434/v1", None, requires_key=False),
    "vllm": _row("openai", "http://127.0.0.1:8000/v1", "VLLM_API_KEY", requires_key=False),
    "llamacpp": _row("openai", "http://127.0.0.1:8080/v1", None, requires_key=False),
}
"""Local hosts that need no key: inactive until the config names them (``[providers.ollama]``,
even empty, or ``TIERWISE_PROVIDERS__OLLAMA__BASE_URL``); their catalog models are not
served until then, so no request can make tierwise call a port the operator did not choose."""


def enable_hint(provider: str) -> str:
    """How to enable shipped local host ``provider``."""
    url = LOCAL_PROVIDERS[provider]["base_url"]
    return (
        f"provider {provider!r} (a local host, {url}) is not enabled: add a "
        f"[providers.{provider}] table to the config (base_url to change the address) "
        f"or set TIERWISE_PROVIDERS__{provider.upper()}__BASE_URL"
    )


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


def user_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP_NAME))


def user_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP_NAME))


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


class RoutingSettings(BaseModel):
    """``[routing]``: who routers choose among, where learned routers live, rule overrides."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[str] = Field(default_factory=list)
    """Catalog ids ``route:`` policies choose among; empty: every model whose provider has
    a key (or needs none)."""
    artifacts_dir: Path | None = None
    """Trained router artifacts; default ``<user data dir>/routers``."""
    rules: dict[str, Any] = Field(default_factory=dict)
    """``[routing.rules]``: ``mode`` (extend | replace), ``default`` and ``[[rule]]`` rows, in
    the shape of ``tierwise/routing/default_rules.toml``; checked when a rules router is built."""

    def resolved_artifacts_dir(self) -> Path:
        return self.artifacts_dir or user_data_dir() / "routers"


class Settings(BaseSettings):
    """Everything tierwise can be told; validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="TIERWISE_", env_nested_delimiter="__", extra="forbid"
    )

    default_policy: str = "fixed:anthropic:claude-haiku-4-5"
    ledger_url: str | None = None
    """SQLAlchemy URL; default: a SQLite file in the user data directory."""
    ledger_spill_dir: Path | None = None
    """Where the gateway spills ledger records it cannot write before shutdown (imported at
    its next start); default ``<user state dir>/ledger-spill``."""
    log_content: bool = True
    """Store prompt and response text in the ledger (needed to calibrate routers later)."""
    data_dir: Path | None = None
    """A local copy of the recorded-outcome datasets (e.g. ``../shared/data``)."""
    cache_dir: Path = Field(default_factory=user_cache_dir)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    """Upstream hosts by name, over the shipped rows: :data:`DEFAULT_PROVIDERS` always,
    :data:`LOCAL_PROVIDERS` only those named here."""
    policies: dict[str, str] = Field(default_factory=dict)
    models: list[dict[str, Any]] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    cascade: CascadeSettings = Field(default_factory=CascadeSettings)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    advisor: AdvisorSettings = Field(default_factory=AdvisorSettings)
    admin_key: SecretStr | None = None
    """The gateway's admin API key (env ``TIERWISE_ADMIN_KEY``); full access to every model."""

    @field_validator("providers", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> dict[str, Any]:
        rows: dict[str, Any] = {name: dict(row) for name, row in DEFAULT_PROVIDERS.items()}
        named = value or {}
        rows |= {name: dict(row) for name, row in LOCAL_PROVIDERS.items() if name in named}
        for name, row in named.items():
            given = row.model_dump(exclude_unset=True) if isinstance(row, ProviderConfig) else row
            rows[name] = {**rows.get(name, {}), **given} if isinstance(given, dict) else given
        return rows

    @model_validator(mode="after")
    def _default_policies(self) -> Settings:
        """The named policy ``advisor`` (model ``tierwise/advisor``), unless the config has one."""
        advisor = f"advisor:{self.advisor.executor}?advisor={self.advisor.model}"
        self.policies.setdefault("advisor", advisor)
        return self

    def resolved_ledger_url(self) -> str:
        return self.ledger_url or default_ledger_url()

    def resolved_ledger_spill_dir(self) -> Path:
        return self.ledger_spill_dir or user_state_dir() / "ledger-spill"

    def redactor(self) -> Redactor:
        """A redactor of every secret these settings hold: each provider's key (from the
        config or its environment variable), credential headers and URL passwords, the admin
        key, the passwords of the ledger, budget, rate-limit and idempotency store URLs, and
        those of the proxies the environment names (``HTTPS_PROXY``...)."""
        found: list[str | None] = []
        for row in self.providers.values():
            found.append(row.api_key.get_secret_value() if row.api_key else None)
            found.append(os.environ.get(row.api_key_env) if row.api_key_env else None)
            found += header_secrets(row.headers) + url_secrets(row.base_url)
        found.append(self.admin_key.get_secret_value() if self.admin_key else None)
        gateway = self.gateway
        for url in (self.ledger_url, gateway.budget_store, gateway.rate_limit_store):
            found += url_secrets(url)
        found += url_secrets(gateway.idempotency)
        for name in PROXY_VARIABLES:
            found += url_secrets(os.environ.get(name) or os.environ.get(name.lower()))
        return Redactor(found)

    def provider(self, name: str) -> ProviderConfig:
        if name not in self.providers:
            known = ", ".join(sorted(self.providers))
            hint = f"; {enable_hint(name)}" if name in LOCAL_PROVIDERS else ""
            raise ConfigError(f"no provider named {name!r} in the config (known: {known}){hint}")
        return self.providers[name]

    def inactive_providers(self) -> dict[str, str]:
        """Shipped local hosts the config does not name, each with how to enable it."""
        return {name: enable_hint(name) for name in LOCAL_PROVIDERS if name not in self.providers}

    def api_key(self, name: str) -> str | None:
        """The provider's key from the config or its environment variable."""
        row = self.provider(name)
        if row.api_key is not None:
            return row.api_key.get_secret_value()
        key = os.environ.get(row.api_key_env) if row.api_key_env else None
        if key or not row.requires_key:
            return key or None
        where = f"set {row.api_key_env}" if row.api_key_env else "set api_key_env"
        raise MissingCredentialsError(
            f"provider {name!r} needs an API key: {where} "
            f"(or providers.{name}.api_key_env in the config)"
        )


def _config_file(path: Path | None) -> Path | None:
    if path is not None:
        return path
    if env := os.environ.get("TIERWISE_CONFIG"):
        return Path(env)
    default = default_config_path()
    return default if default.exists() else None


def read_config_file(path: Path | None) -> dict[str, Any]:
    """The config file's table, or ``{}`` when there is none; ConfigError when malformed."""
    found = _config_file(path)
    if found is None:
        return {}
    try:
        return tomllib.loads(found.read_text("utf-8"), parse_float=Decimal)
    except FileNotFoundError:
        raise ConfigError(f"config file {found} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {found} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {found} cannot be read: {exc.strerror}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{where}: {error['msg']}"


def load_settings(path: Path | None = None, **flags: Any) -> Settings:
    """Settings from defaults, the config file, the environment and ``flags`` (highest)."""
    file_data = read_config_file(path)
    source = _config_file(path) or "settings"

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, file_data)

    try:
        return _Layered(**{k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(f"config {source}: {_first_error(exc)}") from None
