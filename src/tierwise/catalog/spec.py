"""Model specs and the catalog that holds them.

Prices are USD per million tokens as :class:`~decimal.Decimal`. A price that is not known is
``None``, and any cost that needs it is unknown too (never 0).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tierwise.errors import ConfigError, UnknownModelError

SKILLS = ("reasoning", "coding", "math", "long_context", "tool_use", "writing", "speed")


class Prices(BaseModel):
    """USD per million tokens; ``None`` where the price is not known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal | None = None
    output: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    cache_read: Decimal | None = None
    batch_input: Decimal | None = None
    batch_output: Decimal | None = None


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tools: bool = True
    vision: bool = False
    streaming: bool = True
    thinking: bool = False
    advisor: bool = False
    """Can act as the advisor (the stronger model consulted mid-task)."""
    executor: bool = True
    """Can act as an executor (the model doing the task)."""
    native_advisor_tool: bool = False
    """Accepts Anthropic's ``advisor_20260301`` server tool natively."""
    openai_reasoning: bool = False
    """An OpenAI reasoning model (o-series, gpt-5 family): takes its output cap only as
    ``max_completion_tokens`` and refuses ``temperature``, ``top_p`` and ``stop``."""


class CapabilityProfile(BaseModel):
    """A tier rank (1 = smallest) and skill levels from 1 (weak) to 5 (frontier)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: int = Field(ge=1, le=10)
    skills: dict[str, int] = Field(default_factory=dict)

    def skill(self, name: str) -> int:
        return self.skills.get(name, 0)


class ModelSpec(BaseModel):
    """One model as tierwise knows it; ``id`` is ``provider:name``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    display_name: str | None = None
    aliases: tuple[str, ...] = ()
    prices: Prices = Field(default_factory=Prices)
    context_window: int | None = None
    max_output_tokens: int | None = None
    typical_latency_ms: int | None = None
    capabilities: Capabilities = Field(default_factory=Capabilities)
    profile: CapabilityProfile = Field(default_factory=lambda: CapabilityProfile(tier=1))

    @model_validator(mode="after")
    def _id_has_provider(self) -> ModelSpec:
        provider, sep, name = self.id.partition(":")
        if not (provider and sep and name):
            raise ValueError(f"model id {self.id!r} must look like 'provider:model'")
        return self

    @property
    def provider(self) -> str:
        return self.id.partition(":")[0]

    @property
    def name(self) -> str:
        """The model name the upstream knows it by."""
        return self.id.partition(":")[2]


class Catalog:
    """An immutable set of :class:`ModelSpec`, looked up by id or alias."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.id] = spec
        self._aliases = {
            f"{s.provider}:{alias}": s.id for s in self._specs.values() for alias in s.aliases
        }
        self._hidden: Catalog | None = None
        self._hints: dict[str, str] = {}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.find(model_id) is not None

    def find(self, model_id: str) -> ModelSpec | None:
        canonical = self._aliases.get(model_id, model_id)
        return self._specs.get(canonical)

    def get(self, model_id: str) -> ModelSpec:
        """The spec for ``model_id`` (or an alias); :class:`UnknownModelError` with suggestions."""
        spec = self.find(model_id)
        if spec is None:
            hidden = self._hidden.find(model_id) if self._hidden is not None else None
            hint = self._hints[hidden.provider] if hidden is not None else ""
            raise UnknownModelError(model_id, self.suggest(model_id), hint=hint)
        return spec

    def find_upstream(self, provider: str, upstream_name: str) -> ModelSpec | None:
        """The spec a provider's own model name (as in a response or usage entry) refers to."""
        return self.find(f"{provider}:{upstream_name}")

    def suggest(self, model_id: str, limit: int = 3) -> list[str]:
        names = list(self._specs) + list(self._aliases)
        close = difflib.get_close_matches(model_id, names, n=limit, cutoff=0.5)
        if not close:
            tail = model_id.rpartition(":")[2]
            close = [n for n in self._specs if tail and tail in n][:limit]
        return close

    def strongest(self, candidates: Iterable[ModelSpec] | None = None) -> ModelSpec | None:
        """The highest-tier model (ties broken by output price), or ``None`` if empty."""
        pool = list(candidates if candidates is not None else self._specs.values())
        if not pool:
            return None
        return max(pool, key=lambda s: (s.profile.tier, s.prices.output or Decimal(0)))

    def without_providers(self, hints: Mapping[str, str]) -> Catalog:
        """This catalog without the models of the providers in ``hints``; asking for one of
        them is an :class:`UnknownModelError` that says its provider's hint (how to enable it)."""
        kept = Catalog(s for s in self._specs.values() if s.provider not in hints)
        kept._hidden = Catalog(s for s in self._specs.values() if s.provider in hints)
        kept._hints = dict(hints)
        return kept

    def merged(self, overrides: Iterable[ModelSpec]) -> Catalog:
        """A new catalog with ``overrides`` added or replacing models of the same id."""
        return Catalog([*self._specs.values(), *overrides])


def _parse_specs(rows: Iterable[Mapping[str, Any]], origin: str) -> list[ModelSpec]:
    specs = []
    for index, row in enumerate(rows):
        try:
            specs.append(ModelSpec.model_validate(dict(row)))
        except ValidationError as exc:
            where = row.get("id", f"entry {index + 1}")
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "id"
            message = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{origin}: model {where}: {field}: {message}") from None
    return specs


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None


def load_catalog(
    extra_files: Iterable[Path] = (), extra_models: Iterable[Mapping[str, Any]] = ()
) -> Catalog:
    """The shipped catalog, then models from ``extra_files`` and ``extra_models`` on top."""
    shipped = resources.files("tierwise.catalog").joinpath("models.toml").read_text("utf-8")
    specs = _parse_specs(_read_toml(shipped, "shipped catalog").get("models", []), "catalog")
    catalog = Catalog(specs)
    for path in extra_files:
        data = _read_toml(path.read_text("utf-8"), str(path))
        catalog = catalog.merged(_parse_specs(data.get("models", []), str(path)))
    return catalog.merged(_parse_specs(extra_models, "config"))
