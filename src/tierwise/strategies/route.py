"""``route:<router>``: a router picks the model before the first call, then one call.

The strategy makes whatever model call a router needs first (the classifier's, recorded with
``role="classifier"``), asks the router — which stays pure — records its decision in the
ledger, and calls the chosen model. It remembers which model each conversation runs on, so
a later turn stays there while that model still meets the task (its prompt cache is warm).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from tierwise.catalog import ModelSpec
from tierwise.errors import ConfigError, PolicyError
from tierwise.messages import Request, Response, StreamEvent
from tierwise.routing.base import PreparedRouter, RouteContext, Router
from tierwise.routing.classifier import Classifier, ClassifierRouter
from tierwise.routing.registry import RouterEnv, router_factory
from tierwise.strategies.base import TaskContext

CONVERSATIONS_REMEMBERED = 1024


def conversation_key(request: Request) -> str:
    """The same for every turn of one conversation: its system prompt and first message."""
    system = "".join(block.text for block in request.system)
    first = request.messages[0].model_dump_json() if request.messages else ""
    return hashlib.sha256(f"{system}\0{first}".encode()).hexdigest()


class RoutingStrategy:
    """Route, record the decision, call the chosen model."""

    def __init__(
        self, router: Router, candidates: Sequence[ModelSpec], *, name: str | None = None
    ) -> None:
        if not candidates:
            raise PolicyError(f"router {router.name!r} has no candidate models to choose from")
        self.router = router
        self.candidates = list(candidates)
        self.name = name or f"route:{router.name}"
        self.classifier: Classifier | None = None
        if isinstance(router, ClassifierRouter):
            self.classifier = router.classifier(self.candidates)
        self._models: OrderedDict[str, str] = OrderedDict()

    def may_call(self) -> list[ModelSpec]:
        """The candidates, and the classifier's own model when it asks one."""
        asked = [] if self.classifier is None else [self.classifier.spec]
        return [*self.candidates, *asked]

    async def _hints(self, request: Request, task: TaskContext) -> dict[str, Any]:
        if self.classifier is None:
            return {}

        async def ask(classifier_request: Request, spec: ModelSpec) -> Response:
            return await task.call(classifier_request, spec, role="classifier")

        return {"classification": await self.classifier.classify(request, ask)}

    def _remember(self, key: str, model: str) -> None:
        self._models[key] = model
        self._models.move_to_end(key)
        if len(self._models) > CONVERSATIONS_REMEMBERED:
            self._models.popitem(last=False)

    async def choose(self, request: Request, task: TaskContext) -> ModelSpec:
        """Route ``request`` and record the decision; the chosen model's spec."""
        hints = await self._hints(request, task)
        key = conversation_key(request)
        sticky = self._models.get(key) if len(request.messages) > 1 else None
        context = RouteContext(catalog=task.catalog, sticky_model=sticky, hints=hints)
        if isinstance(self.router, PreparedRouter) and not self.router.ready(request):
            await asyncio.to_thread(self.router.prepare, request)  # e.g. MiniLM, off the loop
        decision = self.router.select(request, self.candidates, context)
        await task.record(decision.record(task.task_id))
        self._remember(key, decision.chosen)
        return task.catalog.get(decision.chosen)

    async def run(self, request: Request, task: TaskContext) -> Response:
        spec = await self.choose(request, task)
        return await task.call(request, spec)

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        spec = await self.choose(request, task)
        async with aclosing(task.stream(request, spec)) as events:  # abandoned: recorded now
            async for event in events:
                yield event


# --- building from a policy -------------------------------------------------------------------


def _has_credentials(env: RouterEnv, provider: str) -> bool:
    row = env.settings.providers.get(provider)
    if row is None:
        return False
    if row.kind == "replay":
        return True
    try:
        env.settings.api_key(provider)
    except ConfigError:
        return False
    return True


def resolve_candidates(ids: Sequence[str], env: RouterEnv) -> list[ModelSpec]:
    """``ids`` from the catalog; none given: ``routing.candidates``, else every executor model
    whose provider is configured and has a key (or needs none)."""
    chosen = [i.strip() for i in ids if i.strip()] or env.settings.routing.candidates
    if chosen:
        return [env.catalog.get(model_id) for model_id in chosen]
    usable = [
        spec
        for spec in env.catalog
        if spec.capabilities.executor and _has_credentials(env, spec.provider)
    ]
    if not usable:
        raise PolicyError(
            "no candidate models: set a provider's API key, routing.candidates in the config, "
            "or ?candidates=a,b in the policy"
        )
    return usable


def build_route_strategy(
    router_name: str, params: Mapping[str, str], env: RouterEnv
) -> RoutingStrategy:
    """``route:<router>?candidates=a,b&<router params>``."""
    if not router_name:
        raise PolicyError("policy 'route' needs a router: route:<router>, e.g. route:rules")
    factory = router_factory(router_name)
    router_params = {k: v for k, v in params.items() if k != "candidates"}
    candidates = resolve_candidates(params.get("candidates", "").split(","), env)
    router = factory(router_params, env)
    query = "&".join(f"{key}={value}" for key, value in params.items())
    name = f"route:{router_name}" + (f"?{query}" if query else "")
    return RoutingStrategy(router, candidates, name=name)
