"""What a request may run, checked before its first call (and by the task context on each).

A client's ``model`` field resolves to a :class:`~tierwise.gateway.models.Target`. Before the
gateway reserves a budget or calls anything, :func:`checked_strategy`:

1. refuses an inline policy expression the key may not send, or one outside the safe subset
   (:mod:`tierwise.inline_policies`) — before its strategy is built;
2. builds the strategy (a policy that cannot be built is the client's 400 when the client
   wrote it);
3. checks the key's allow-list against every model the strategy may call, and the advisor
   model of an advisor tool the request carries (a 403 naming the model);
4. refuses request metadata that would touch the gateway's filesystem (``workspace_files``,
   files a command gate writes next to the answer: the operator's business).
"""

from __future__ import annotations

from tierwise.advisor.tool import find_advisor_tool
from tierwise.catalog import Catalog, ModelSpec
from tierwise.engine import Engine
from tierwise.errors import (
    ArtifactError,
    InvalidRequestError,
    PolicyError,
    PolicyNotAllowedError,
)
from tierwise.gates.command import WORKSPACE_FILES_KEY
from tierwise.gateway.auth import Principal
from tierwise.gateway.models import Target
from tierwise.messages import Request
from tierwise.strategies.base import Strategy
from tierwise.strategies.reach import reachable_models


def checked_strategy(
    engine: Engine, principal: Principal, target: Target, request: Request
) -> Strategy:
    """The strategy ``target`` runs, once ``principal`` may run it on ``request``."""
    principal.authorize(target)
    if WORKSPACE_FILES_KEY in request.metadata:
        raise PolicyNotAllowedError(
            f"metadata.{WORKSPACE_FILES_KEY} is not accepted by the gateway: a command gate's "
            "files come from the operator's config"
        )
    strategy = _build(engine, target)
    models = reachable_models(strategy)
    if models is not None:
        models += _advisor_models(request, engine.catalog)
    principal.authorize_models(models)
    return strategy


def _build(engine: Engine, target: Target) -> Strategy:
    try:
        return engine.strategy(target.policy)
    except (PolicyError, ArtifactError) as exc:
        if not target.inline:  # the operator's own policy: the gateway is misconfigured
            raise
        raise InvalidRequestError(f"policy {target.policy!r}: {exc.message}") from None


def _advisor_models(request: Request, catalog: Catalog) -> list[ModelSpec]:
    """The catalog model an advisor tool in ``request`` names, if any (an unknown one can
    only run natively, on the executor's own bill: the task context checks it there)."""
    tool = find_advisor_tool(request)
    if tool is None:
        return []
    found = catalog.find(tool.model) or catalog.find_upstream("anthropic", tool.model)
    return [] if found is None else [found]
