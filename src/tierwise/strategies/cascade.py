"""``cascade:<tier>,<tier>,...``: verify and escalate.

The cheapest capable tier answers first; its answer goes through the gates in order (the
first failure stops the check). On a failure the cascade either retries the same tier or
climbs one tier, whichever is cheaper in expectation at catalog prices:

    retry, then climb if it fails too:  C_here + (1 - p_retry) * C_next
    climb now:                          C_next

where ``C`` is what the answer just made cost (here) and what the same tokens cost on the
next tier, and ``p_retry`` the chance a retry passes (``retry_pass_rate``, per model in the
config). Retries and escalations are bounded; every call counts against the task's budget.
Each gate verdict is a ``GateRecord``, each retry or climb an ``EscalationRecord`` with its
trigger, and the cascade's own verdict an outcome judged by ``gate``. If every tier fails,
the last answer is returned (its outcome says so).

Policy parameters (defaults from ``[cascade]``): ``gates`` (comma-separated specs),
``max_escalations``, ``retries``, ``retry_pass_rate``, ``start=route:<router>`` (start at
the tier a router picks), ``feedback=true`` (the next try sees the failed answer and the
gate's reason), ``on_gate_error=escalate|accept|fail`` (a gate whose own model call failed:
a failed check, an answer kept unverified, or the task fails), and for command gates
``workspace``, ``answer_file``, ``gate_timeout``.
Streaming runs the cascade, then streams the final answer's events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tierwise.budget import projected
from tierwise.catalog import ModelSpec
from tierwise.cost import reprice
from tierwise.errors import InvalidRequestError, PolicyError
from tierwise.gates import (
    Gate,
    GateEnv,
    GateErrorPolicy,
    GateResult,
    accepted,
    build_gates,
    check_recorded,
    gate_error_policy,
)
from tierwise.ledger.records import DecisionRecord, EscalationRecord, OutcomeRecord
from tierwise.messages import ImageBlock, Message, Request, Response, StreamEvent, TextBlock
from tierwise.routing.registry import RouterEnv
from tierwise.strategies.base import TaskContext
from tierwise.strategies.cascade_settings import CascadeSettings
from tierwise.strategies.route import RoutingStrategy, build_route_strategy, resolve_candidates
from tierwise.streaming import events_from_response

PARAMS = frozenset(
    {
        "gates",
        "max_escalations",
        "retries",
        "retry_pass_rate",
        "start",
        "workspace",
        "answer_file",
        "gate_timeout",
        "feedback",
        "on_gate_error",
    }
)
TRIGGER_CHARS = 400


@dataclass(frozen=True)
class CascadeOptions:
    max_escalations: int = 2
    retries: int = 1
    retry_pass_rate: float = 0.3
    retry_pass_rates: Mapping[str, float] = field(default_factory=dict)
    feedback: bool = False
    """Show the next try the failed answer and the gate's reason (a repair prompt)."""
    on_gate_error: GateErrorPolicy = "escalate"
    """What a gate that could not check (its model call failed) means for the answer."""

    def pass_rate(self, model_id: str) -> float:
        return self.retry_pass_rates.get(model_id, self.retry_pass_rate)


@dataclass(frozen=True)
class Attempt:
    """One tier's answer and what the gates said of it."""

    spec: ModelSpec
    response: Response
    cost_usd: Decimal | None
    failed: tuple[str, GateResult] | None
    """The first gate that failed and its verdict; ``None`` when every gate passed."""
    unverified: tuple[str, GateResult] | None = None
    """A gate that could not check, its answer accepted anyway (``on_gate_error=accept``)."""

    @property
    def passed(self) -> bool:
        return self.failed is None


@dataclass(frozen=True)
class Step:
    """What to do after a failure: answer again at ``index`` (a retry or a climb), and why."""

    index: int
    retry: bool
    why: str


def capable(spec: ModelSpec, request: Request) -> bool:
    """Whether ``spec`` can take ``request``: images, client tools, context window."""
    blocks = [block for message in request.messages for block in message.content]
    if any(isinstance(b, ImageBlock) for b in blocks) and not spec.capabilities.vision:
        return False
    if any(tool.type is None for tool in request.tools) and not spec.capabilities.tools:
        return False
    window = spec.context_window
    return window is None or projected(request, spec).tokens <= window


class CascadeStrategy:
    """Climb ``tiers`` (cheapest first) until an answer passes every gate, bounded."""

    def __init__(
        self,
        tiers: Sequence[ModelSpec],
        gates: Sequence[Gate],
        options: CascadeOptions,
        *,
        name: str,
        starter: RoutingStrategy | None = None,
    ) -> None:
        if not tiers:
            raise PolicyError("a cascade needs at least one tier: cascade:<model>,<model>,...")
        self.tiers = list(tiers)
        self.gates = list(gates)
        self.options = options
        self.name = name
        self.starter = starter

    def may_call(self) -> list[ModelSpec]:
        """Every tier, the gates' own models (judges), and the starting router's picks."""
        judges = [
            judge
            for gate in self.gates
            if isinstance(judge := getattr(gate, "model", None), ModelSpec)
        ]
        start = [] if self.starter is None else self.starter.may_call()
        return [*self.tiers, *judges, *start]

    # --- the ladder ------------------------------------------------------------------------

    def _ladder(self, request: Request) -> list[ModelSpec]:
        ladder = [spec for spec in self.tiers if capable(spec, request)]
        if not ladder:
            tiers = ", ".join(spec.id for spec in self.tiers)
            raise InvalidRequestError(f"no tier of the cascade ({tiers}) can take this request")
        return ladder

    async def _start(self, request: Request, ladder: list[ModelSpec], task: TaskContext) -> int:
        """The first tier: the router's pick (or the next capable tier above it), else the
        cheapest; the choice is recorded as a decision."""
        if self.starter is not None:
            chosen = await self.starter.choose(request, task)
            order = [spec.id for spec in self.tiers]
            rank = order.index(chosen.id) if chosen.id in order else 0
            return next(
                (i for i, spec in enumerate(ladder) if order.index(spec.id) >= rank),
                len(ladder) - 1,
            )
        candidates = [
            {"model": spec.id, "predicted_cost": _float(projected(request, spec).usd)}
            for spec in ladder
        ]
        gates = ", ".join(gate.name for gate in self.gates) or "none"
        reason = (
            f"cheapest capable tier first; gates: {gates}; "
            f"up to {self.options.max_escalations} escalation(s)"
        )
        decision = DecisionRecord(
            task_id=task.task_id,
            router="cascade",
            chosen_model=ladder[0].id,
            candidates=candidates,
            reason=reason,
        )
        await task.record(decision)
        return 0

    async def _attempt(
        self, request: Request, spec: ModelSpec, task: TaskContext, asked: Request | None = None
    ) -> Attempt:
        """One answer from ``spec`` to ``asked`` (default: the request), checked against the
        request by the gates in order (stop at a failure)."""
        response = await task.call(asked or request, spec)
        call = task.calls[-1]
        ran = task.catalog.find(response.model) or spec  # a failover may have answered
        on_error = self.options.on_gate_error
        unverified: tuple[str, GateResult] | None = None
        for gate in self.gates:
            verdict = await check_recorded(
                gate, request, response, task, call_id=call.id, on_error=on_error
            )
            if not accepted(verdict, on_error):
                task.guard.offer(response, 0.0)
                return Attempt(ran, response, call.cost_usd, (gate.name, verdict))
            if not verdict.passed:
                unverified = unverified or (gate.name, verdict)
        task.guard.offer(response, 0.5 if unverified else 1.0)
        return Attempt(ran, response, call.cost_usd, None, unverified)

    def _next(
        self, ladder: list[ModelSpec], index: int, attempt: Attempt, retries: int, climbs: int
    ) -> Step | None:
        """Retry here, climb one tier, or stop — by expected cost at catalog prices."""
        can_climb = index + 1 < len(ladder) and climbs < self.options.max_escalations
        if not can_climb:
            return None
        climb = Step(index + 1, False, "climbing: no retry left at this tier")
        if retries >= self.options.retries:
            return climb
        here = attempt.cost_usd
        there_breakdown = reprice(attempt.response.usage, ladder[index + 1])
        if here is None or there_breakdown is None:
            return Step(index + 1, False, "climbing: a price is unknown, so no retry is costed")
        there = there_breakdown.total
        p = self.options.pass_rate(attempt.spec.id)
        retry_then_climb = here + (1 - Decimal(str(p))) * there
        figures = f"retry then climb ${_money(retry_then_climb)} vs climb ${_money(there)}"
        if retry_then_climb < there:
            return Step(index, True, f"retrying (p={p:g}): {figures}")
        return Step(index + 1, False, f"climbing: {figures}")

    # --- running -----------------------------------------------------------------------------

    async def run(self, request: Request, task: TaskContext) -> Response:
        ladder = self._ladder(request)
        index = await self._start(request, ladder, task)
        attempt = await self._attempt(request, ladder[index], task)
        retries = climbs = 0
        while attempt.failed is not None:
            step = self._next(ladder, index, attempt, retries, climbs)
            if step is None:
                break
            gate, verdict = attempt.failed
            trigger = f"gate {gate} failed: {verdict.reason}"[:TRIGGER_CHARS] + f" | {step.why}"
            await task.record(
                EscalationRecord(
                    task_id=task.task_id,
                    from_model=attempt.spec.id,
                    to_model=ladder[step.index].id,
                    trigger=trigger,
                )
            )
            retries, climbs = (retries + 1, climbs) if step.retry else (0, climbs + 1)
            index = step.index
            asked = repair_request(request, attempt) if self._repairs(attempt) else None
            attempt = await self._attempt(request, ladder[index], task, asked)
        await self._conclude(attempt, task)
        return attempt.response

    def _repairs(self, attempt: Attempt) -> bool:
        """Whether the next try sees the failed answer: only with ``feedback`` and when a gate
        did check it (a gate that could not run says nothing about the answer)."""
        return self.options.feedback and attempt.failed is not None and attempt.failed[1].checked

    async def _conclude(self, attempt: Attempt, task: TaskContext) -> None:
        if attempt.unverified is not None:
            gate, verdict = attempt.unverified
            outcome = "success"
            detail = f"{attempt.spec.id} accepted unverified: gate {gate} {verdict.reason}"
        elif attempt.failed is None:
            outcome, detail = "success", f"{attempt.spec.id} passed every gate"
        else:
            gate, verdict = attempt.failed
            outcome = "failure"
            detail = f"no tier passed; last: {attempt.spec.id} failed {gate}: {verdict.reason}"
        await task.record(
            OutcomeRecord(
                task_id=task.task_id, outcome=outcome, source="gate", detail=detail[:1000]
            )
        )

    async def stream(self, request: Request, task: TaskContext) -> AsyncIterator[StreamEvent]:
        response = await self.run(request, task)
        for event in events_from_response(response):
            yield event


def repair_request(request: Request, failed: Attempt) -> Request:
    """The request, the failed answer and what the gate said: the next try can fix it."""
    assert failed.failed is not None
    gate, verdict = failed.failed
    note = (
        f"Your answer failed the check `{gate}`: {verdict.reason}\n"
        "Answer the task again in full, fixing that."
    )
    answer = failed.response.text() or "(no text)"
    messages = [
        *request.messages,
        Message(role="assistant", content=[TextBlock(text=answer)]),
        Message(role="user", content=[TextBlock(text=note)]),
    ]
    return request.model_copy(update={"messages": messages})


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _money(value: Decimal) -> str:
    return f"{value:.6f}"


# --- building from a policy -------------------------------------------------------------------


def default_tiers(env: RouterEnv) -> list[ModelSpec]:
    """``[cascade] tiers``, else the cheapest candidate of each profile tier, ascending."""
    configured = env.settings.cascade.tiers
    if configured:
        return [env.catalog.get(model_id) for model_id in configured]
    cheapest: dict[int, ModelSpec] = {}
    for spec in resolve_candidates([], env):
        current = cheapest.get(spec.profile.tier)
        if current is None or _unit_price(spec) < _unit_price(current):
            cheapest[spec.profile.tier] = spec
    return [cheapest[tier] for tier in sorted(cheapest)]


def _unit_price(spec: ModelSpec) -> Decimal:
    """Input plus output price per million; an unknown price sorts last."""
    prices = (spec.prices.input, spec.prices.output)
    return sum((p for p in prices if p is not None), Decimal(0)) + (
        Decimal("Infinity") if None in prices else Decimal(0)
    )


def _options(params: Mapping[str, str], settings: CascadeSettings) -> CascadeOptions:
    try:
        return CascadeOptions(
            max_escalations=int(params.get("max_escalations", settings.max_escalations)),
            retries=int(params.get("retries", settings.retries)),
            retry_pass_rate=float(params.get("retry_pass_rate", settings.retry_pass_rate)),
            retry_pass_rates=dict(settings.retry_pass_rates),
            feedback=_flag(params.get("feedback"), settings.feedback),
            on_gate_error=gate_error_policy(params.get("on_gate_error", settings.on_gate_error)),
        )
    except ValueError as exc:
        raise PolicyError(f"cascade: a numeric parameter is not a number ({exc})") from None


def _flag(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise PolicyError(f"cascade: feedback must be true or false, not {text!r}")
    return text.lower() in ("true", "1", "yes")


def _gate_env(params: Mapping[str, str], env: RouterEnv) -> GateEnv:
    settings = env.settings.cascade
    workspace = params.get("workspace")
    try:
        timeout = float(params.get("gate_timeout", settings.gate_timeout_s))
    except ValueError:
        raise PolicyError("cascade: gate_timeout must be a number of seconds") from None
    return GateEnv(
        catalog=env.catalog,
        workspace=Path(workspace).expanduser() if workspace else settings.workspace,
        answer_file=params.get("answer_file", settings.answer_file),
        timeout_s=timeout,
    )


def _starter(start: str | None, tiers: list[ModelSpec], env: RouterEnv) -> RoutingStrategy | None:
    if not start:
        return None
    kind, _, router = start.partition(":")
    if kind != "route" or not router:
        raise PolicyError(f"cascade: start must be route:<router>, not {start!r}")
    return build_route_strategy(router, {"candidates": ",".join(s.id for s in tiers)}, env)


def build_cascade_strategy(
    argument: str, params: Mapping[str, str], env: RouterEnv
) -> CascadeStrategy:
    """``cascade[:a,b,c][?gates=...&max_escalations=...&retries=...&start=route:rules]``."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        known = ", ".join(sorted(PARAMS))
        raise PolicyError(f"cascade: unknown parameter(s) {', '.join(unknown)} (known: {known})")
    ids = [model_id.strip() for model_id in argument.split(",") if model_id.strip()]
    tiers = [env.catalog.get(model_id) for model_id in ids] if ids else default_tiers(env)
    settings = env.settings.cascade
    specs: str | list[str] = params.get("gates", settings.gates)
    gates = build_gates(specs, _gate_env(params, env))
    query = "&".join(f"{key}={value}" for key, value in params.items())
    name = "cascade" + (f":{argument}" if argument else "") + (f"?{query}" if query else "")
    starter = _starter(params.get("start"), tiers, env)
    return CascadeStrategy(tiers, gates, _options(params, settings), name=name, starter=starter)
