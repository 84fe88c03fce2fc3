"""Routers by name. Each entry names the module and function that builds it, imported only
when the router is used (so the rules router never pays for scikit-learn)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

from pydantic import BaseModel, ConfigDict

from tierwise.catalog import Catalog
from tierwise.config import Settings
from tierwise.errors import PolicyError
from tierwise.routing.base import Router


class RouterEnv(BaseModel):
    """What a router factory may read while building (artifacts are loaded here, not in
    ``select``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings
    catalog: Catalog
    artifacts_dir: Path

    @classmethod
    def for_settings(cls, settings: Settings, catalog: Catalog) -> RouterEnv:
        artifacts = settings.routing.resolved_artifacts_dir()
        return cls(settings=settings, catalog=catalog, artifacts_dir=artifacts)


RouterFactory = Callable[[Mapping[str, str], RouterEnv], Router]

ROUTERS: dict[str, str] = {
    "rules": "tierwise.routing.rules:build",
    "random": "tierwise.routing.baselines:build_random",
    "cheapest": "tierwise.routing.baselines:build_cheapest",
    "strongest": "tierwise.routing.baselines:build_strongest",
    "classifier": "tierwise.routing.classifier:build",
    "learned": "tierwise.routing.learned:build",
}
"""name -> "module:function" of a :data:`RouterFactory`."""


def router_factory(name: str) -> RouterFactory:
    if name not in ROUTERS:
        known = ", ".join(sorted(ROUTERS))
        raise PolicyError(f"unknown router {name!r} (known: {known})")
    module, _, function = ROUTERS[name].partition(":")
    return cast(RouterFactory, getattr(importlib.import_module(module), function))
