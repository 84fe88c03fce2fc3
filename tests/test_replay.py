from __future__ import annotations

import pytest

from tierwise.catalog import Catalog
from tierwise.datasets import RecordedOutcome
from tierwise.errors import NotFoundError
from tierwise.messages import Request
from tierwise.providers.replay import ReplayProvider
from tierwise.streaming import collect
from tierwise.tokens import estimate_tokens

ROWS = [
    RecordedOutcome(
        row_id="r1",
        prompt="What is 2+2?",
        model="openai:gpt-4-1106-preview",
        response_text="2 + 2 = 4",
        correct=True,
    ),
    RecordedOutcome(
        row_id="r1",
        prompt="What is 2+2?",
        model="openai:gpt-5-nano",
        response_text="5",
        correct=False,
        input_tokens=7,
        output_tokens=1,
    ),
]


async def test_replays_recorded_answer_with_correctness(catalog: Catalog) -> None:
    provider = ReplayProvider("replay", ROWS)
    spec = catalog.get("openai:gpt-4-1106-preview")
    response = await provider.complete(Request.from_prompt("What  is 2+2?"), spec)
    assert response.text() == "2 + 2 = 4"
    assert response.model == spec.id
    assert response.model_extra and response.model_extra["recorded_correct"] is True
    assert response.usage.estimated
    assert response.usage.output_tokens == estimate_tokens("2 + 2 = 4") == 5


async def test_recorded_tokens_are_used_when_present(catalog: Catalog) -> None:
    provider = ReplayProvider("replay", ROWS)
    response = await provider.complete(
        Request.from_prompt("What is 2+2?"), catalog.get("openai:gpt-5-nano")
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 1)
    assert not response.usage.estimated


async def test_stream_matches_complete(catalog: Catalog) -> None:
    provider = ReplayProvider("replay", ROWS)
    spec = catalog.get("openai:gpt-4-1106-preview")
    request = Request.from_prompt("What is 2+2?")
    assert await collect(provider.stream(request, spec)) == await provider.complete(request, spec)


async def test_unrecorded_prompt_is_not_found(catalog: Catalog) -> None:
    provider = ReplayProvider("replay", ROWS)
    with pytest.raises(NotFoundError, match="no recorded answer"):
        await provider.complete(Request.from_prompt("Unknown?"), catalog.get("openai:gpt-5-nano"))
