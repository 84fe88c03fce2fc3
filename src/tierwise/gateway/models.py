"""What a client's ``model`` field means: a catalog model, a virtual model or a policy.

Looked up in this order, so a config can never shadow a catalog id by accident:

1. ``tierwise/auto`` — the default policy; ``tierwise/<policy>`` — a named policy from the
   config or, for a key allowed inline expressions, a policy expression in the safe subset
   of :mod:`tierwise.inline_policies` (``tierwise/fixed:openai:gpt-5-mini``);
2. a named policy from the config, by its bare name;
3. a catalog id (``anthropic:claude-haiku-4-5``) or one of its aliases;
4. a bare upstream name (``claude-haiku-4-5``, ``gpt-4.1-mini``); when several providers
   serve it, the one speaking the client's wire format wins, then the provider named
   like that format.

Anything else is an :class:`~tierwise.errors.UnknownModelError` with did-you-mean
suggestions (a 404). Upstreams come from the config only: no field of a request can name a
URL. Resolving never builds an inline expression's strategy: the key's right to send one is
checked first (:meth:`tierwise.gateway.auth.Principal.authorize`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tierwise.catalog import Catalog, ModelSpec
from tierwise.errors import UnknownModelError

Api = Literal["anthropic", "openai"]
VIRTUAL_PREFIX = "tierwise/"
AUTO = "tierwise/auto"
BUILT_IN = {"cascade": "verify and escalate over the [cascade] tiers"}
"""Policy kinds that run with no argument, from their config table, listed as virtual models."""
_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Target:
    """A resolved ``model`` field: the policy to run, whether the client wrote it (an inline
    expression) or the operator did (a model id, a named policy), and its listed names."""

    requested: str
    policy: str
    names: tuple[str, ...]
    inline: bool = False


@dataclass(frozen=True)
class ListedModel:
    """One row of ``GET /v1/models``."""

    id: str
    owner: str
    display_name: str
    names: tuple[str, ...]


class ModelResolver:
    """Resolves ``model`` fields (memoised) and lists what the gateway serves."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        default_policy: str,
        policies: Mapping[str, str],
        provider_kinds: Mapping[str, str],
    ) -> None:
        self._catalog = catalog
        self._default = default_policy
        self._policies = dict(policies)
        self._kinds = dict(provider_kinds)
        self._cache: dict[tuple[str, Api], Target] = {}

    def resolve(self, name: str, api: Api) -> Target:
        """The target for ``name`` sent by a client of ``api``; UnknownModelError if none."""
        key = (name, api)
        if (hit := self._cache.get(key)) is not None:
            return hit
        target = self._resolve(name, api)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[key] = target
        return target

    def served_name(self, model_id: str, api: Api) -> str:
        """The model name a response carries: the upstream's own name for a client of the
        same wire format, else the unambiguous catalog id."""
        spec = self._catalog.find(model_id)
        if spec is not None and self._kinds.get(spec.provider) == api:
            return spec.name
        return model_id

    def listing(self) -> list[ListedModel]:
        """Virtual models first, then the catalog."""
        auto = ListedModel(AUTO, "tierwise", f"default policy ({self._default})", (AUTO,))
        named = [
            ListedModel(VIRTUAL_PREFIX + n, "tierwise", f"policy {p}", (VIRTUAL_PREFIX + n, n))
            for n, p in sorted(self._policies.items())
        ]
        named += [
            ListedModel(VIRTUAL_PREFIX + n, "tierwise", about, (VIRTUAL_PREFIX + n, n))
            for n, about in BUILT_IN.items()
            if n not in self._policies
        ]
        specs = [
            ListedModel(s.id, s.provider, s.display_name or s.name, (s.id, s.name))
            for s in sorted(self._catalog, key=lambda s: s.id)
        ]
        return [auto, *named, *specs]

    # --- internals -------------------------------------------------------------------------

    def _resolve(self, name: str, api: Api) -> Target:
        if name.startswith(VIRTUAL_PREFIX):
            return self._virtual(name)
        if name in self._policies:
            return Target(name, name, (name, VIRTUAL_PREFIX + name))
        spec = self._catalog.find(name) or self._bare(name, api)
        if spec is None:
            raise UnknownModelError(name, self._suggest(name))
        return Target(name, f"fixed:{spec.id}", (name, spec.id, spec.name))

    def _virtual(self, name: str) -> Target:
        policy = name.removeprefix(VIRTUAL_PREFIX)
        if name == AUTO:
            return Target(name, self._default, (name,))
        if policy in self._policies or policy in BUILT_IN:
            return Target(name, policy, (name, policy))
        if ":" not in policy and "?" not in policy:  # a name, not an expression: a typo
            raise UnknownModelError(name, self._suggest(name))
        return Target(name, policy, (name, policy), inline=True)

    def _bare(self, name: str, api: Api) -> ModelSpec | None:
        found = [s for s in self._catalog if name == s.name or name in s.aliases]
        if len(found) > 1:
            found = [s for s in found if self._kinds.get(s.provider) == api] or found
        if len(found) > 1:
            found = [s for s in found if s.provider == api] or found
        return found[0] if len(found) == 1 else None

    def _known_names(self) -> Iterable[str]:
        yield AUTO
        for name in self._policies:
            yield name
            yield VIRTUAL_PREFIX + name
        for spec in self._catalog:
            yield spec.id
            yield spec.name

    def _suggest(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, list(self._known_names()), n=3, cutoff=0.5)
