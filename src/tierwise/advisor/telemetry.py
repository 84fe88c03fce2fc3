"""Consult records: one per advisor consult, for both the native and the emulated advisor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from tierwise.advisor.tool import result_kind
from tierwise.catalog import Catalog, ModelSpec
from tierwise.cost import price_tokens
from tierwise.ledger.records import ConsultRecord
from tierwise.messages import (
    AdvisorToolResultBlock,
    ContentBlock,
    Request,
    Response,
    ServerToolUseBlock,
    TextBlock,
    TokenCounts,
    ToolUseBlock,
    UsageIteration,
)

Mode = Literal["native", "emulated"]


@dataclass
class Side:
    """Tokens and cost of one side of a consult."""

    tokens: TokenCounts | None = None
    cost: Decimal | None = None
    call_id: str | None = None

    def token_dict(self) -> dict[str, int]:
        return {} if self.tokens is None else self.tokens.model_dump()


@dataclass
class ConsultFacts:
    executor: Side
    advisor: Side


def turn_index(request: Request) -> int:
    return sum(1 for message in request.messages if message.role == "assistant")


def prior_consults(request: Request) -> int:
    """Consults earlier in the conversation (refusals for ``max_uses_exceeded`` excluded)."""
    return sum(
        1
        for message in request.messages
        for block in message.content
        if isinstance(block, AdvisorToolResultBlock) and result_kind(block) != "max_uses_exceeded"
    )


def followed_by(content: Sequence[ContentBlock], index: int) -> str:
    """What the executor did after the consult whose result is ``content[index]``."""
    for block in content[index + 1 :]:
        if isinstance(block, ServerToolUseBlock):
            return "consult"
        if isinstance(block, ToolUseBlock):
            return f"tool_use:{block.name}"
        if isinstance(block, TextBlock) and block.text.strip():
            return "text"
    return "end"


def consult_records(
    task_id: str,
    request: Request,
    response: Response,
    *,
    mode: Mode,
    executor: ModelSpec,
    advisor_id: str,
    facts: Mapping[str, ConsultFacts],
) -> list[ConsultRecord]:
    """A record per advisor result in ``response`` (``facts`` by tool use id)."""
    records = []
    turn, index = turn_index(request), prior_consults(request)
    for position, block in enumerate(response.content):
        if not isinstance(block, AdvisorToolResultBlock):
            continue
        kind = result_kind(block)
        index += kind != "max_uses_exceeded"
        fact = facts.get(block.tool_use_id) or _unmatched(kind)
        records.append(
            ConsultRecord(
                task_id=task_id,
                mode=mode,
                executor_model=executor.id,
                advisor_model=advisor_id,
                turn_index=turn,
                consult_index=index,
                result=kind,
                followed_by=followed_by(response.content, position),
                executor_call_id=fact.executor.call_id,
                advisor_call_id=fact.advisor.call_id,
                executor_tokens=fact.executor.token_dict(),
                advisor_tokens=fact.advisor.token_dict(),
                executor_cost_usd=fact.executor.cost,
                advisor_cost_usd=fact.advisor.cost,
            )
        )
    return records


def _priced(iteration: UsageIteration, spec: ModelSpec | None, call_id: str | None) -> Side:
    breakdown = None if spec is None else price_tokens(iteration, spec.prices)
    tokens = TokenCounts.model_validate(iteration.model_dump(include=set(TokenCounts.model_fields)))
    return Side(tokens, None if breakdown is None else breakdown.total, call_id)


def native_facts(
    content: Sequence[ContentBlock],
    iterations: Sequence[tuple[UsageIteration, str | None]],
    executor: ModelSpec,
    catalog: Catalog,
) -> dict[str, ConsultFacts]:
    """Each advisor result paired with its ``advisor_message`` iteration (in order) and the
    executor iteration before it; ``iterations`` carry the id of the call that billed them.
    Refusals and errors ran no advisor: they cost nothing."""
    results = [
        b for b in content if isinstance(b, AdvisorToolResultBlock) and result_kind(b) in _RAN
    ]
    facts: dict[str, ConsultFacts] = {}
    last_executor = Side()
    for iteration, call_id in iterations:
        if iteration.kind == "message":
            last_executor = _priced(iteration, executor, call_id)
        elif iteration.kind == "advisor_message" and results:
            spec = catalog.find_upstream(executor.provider, iteration.model or "")
            advisor = _priced(iteration, spec, call_id)
            facts[results.pop(0).tool_use_id] = ConsultFacts(last_executor, advisor)
    return facts


def _unmatched(kind: str) -> ConsultFacts:
    """A consult no billed iteration accounts for: free when no advisor ran, else unknown."""
    return ConsultFacts(Side(), Side(cost=None if kind in _RAN else Decimal(0)))


_RAN = frozenset({"advisor_result", "advisor_redacted_result"})
