"""Several upstream responses folded into the one response a client sees.

The usage follows Anthropic's advisor convention: ``iterations`` lists every sampling step
(executor ``message`` and ``advisor_message``, each with its model) and is the billing truth;
the top level repeats the first executor iteration's input and cache figures and sums the
executor's output.
"""

from __future__ import annotations

from collections.abc import Sequence

from tierwise.cost import billed_tokens
from tierwise.messages import ContentBlock, Response, Usage, UsageIteration


def iterations_of(
    usage: Usage, kind: str = "message", model: str | None = None
) -> list[UsageIteration]:
    """``usage`` as iterations: its own when it has them, else one of ``kind``."""
    if usage.iterations:
        return list(usage.iterations)
    tokens = billed_tokens(usage).model_dump()
    return [UsageIteration(kind=kind, model=model, **tokens)]


def merged_usage(iterations: Sequence[UsageIteration], parts: Sequence[Usage]) -> Usage:
    """Top-level figures from the first executor iteration, executor output summed."""
    executor = [it for it in iterations if it.kind == "message"] or list(iterations)
    first = executor[0]
    return Usage(
        input_tokens=first.input_tokens,
        cache_read_tokens=first.cache_read_tokens,
        cache_write_5m_tokens=first.cache_write_5m_tokens,
        cache_write_1h_tokens=first.cache_write_1h_tokens,
        output_tokens=sum(it.output_tokens for it in executor),
        iterations=list(iterations),
        unreported=any(part.unreported for part in parts),
        estimated=any(part.estimated for part in parts),
    )


def merged_response(
    first: Response,
    last: Response,
    content: Sequence[ContentBlock],
    iterations: Sequence[UsageIteration],
    parts: Sequence[Usage],
) -> Response:
    """``first``'s identity, ``last``'s ending, ``content`` and the merged usage."""
    return first.model_copy(
        update={
            "content": list(content),
            "stop_reason": last.stop_reason,
            "stop_sequence": last.stop_sequence,
            "usage": merged_usage(iterations, parts),
        }
    )


def concatenated(responses: Sequence[Response]) -> Response:
    """Responses that continue one another (a resumed ``pause_turn``) as one response."""
    if len(responses) == 1:
        return responses[0]
    content = [block for response in responses for block in response.content]
    iterations = [it for r in responses for it in iterations_of(r.usage)]
    usages = [r.usage for r in responses]
    return merged_response(responses[0], responses[-1], content, iterations, usages)
