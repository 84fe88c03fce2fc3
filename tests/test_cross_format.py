"""Requests and responses crossing wire formats, and the OpenAI side of cost exactness."""

from __future__ import annotations

from decimal import Decimal

import httpx2

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.fakes.openai_upstream import FakeOpenAI
from tierwise.config import Settings
from tierwise.engine import Engine
from tierwise.ledger.store import Ledger
from tierwise.messages import Usage
from tierwise.providers.base import ProviderConfig
from tierwise.providers.openai_compat import OpenAICompatProvider
from tierwise.wire.anthropic import request_from_anthropic, request_to_anthropic
from tierwise.wire.openai import request_from_openai, request_to_openai, response_from_openai


def test_openai_only_fields_do_not_reach_anthropic() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "seed": 7,
        "response_format": {"type": "json_object"},
        "stream_options": {"include_usage": True},
    }
    sent = request_to_anthropic(request_from_openai(body), "claude-haiku-4-5")
    assert not {"seed", "response_format", "stream_options"} & set(sent)
    assert request_to_openai(request_from_openai(body), "gpt-4o-mini")["seed"] == 7


def test_anthropic_only_fields_do_not_reach_openai() -> None:
    body = afx.claude_code_request()
    body["container"] = "container_011"
    sent = request_to_openai(request_from_anthropic(body), "gpt-4.1")
    assert "container" not in sent and "context_management" not in sent
    assert request_to_anthropic(request_from_anthropic(body), "x")["container"] == "container_011"


def test_missing_usage_means_unknown_cost_not_zero() -> None:
    body = ofx.completion("hi")
    del body["usage"]
    response = response_from_openai(body, "openai:gpt-4o-mini")
    assert response.usage == Usage(unreported=True)


async def test_openai_cached_prompt_tokens_cost_exactly(settings: Settings) -> None:
    no_usage = ofx.completion("again")
    del no_usage["usage"]
    fake = (
        FakeOpenAI()
        .reply_completion(
            ofx.completion("done", token_usage=ofx.usage(2000, 300, cached_tokens=1500))
        )
        .reply_completion(no_usage)
    )
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler))
    config = ProviderConfig(kind="openai", base_url="http://openai.fake/v1")
    provider = OpenAICompatProvider("openai", config, "sk-test", http_client=client)
    async with Engine(settings, providers={"openai": provider}) as engine:
        result = await engine.complete("go", "fixed:openai:gpt-4.1-mini")
        unreported = await engine.complete("go again", "fixed:openai:gpt-4.1-mini")
    # gpt-4.1-mini: 500 uncached * $0.40 + 1500 cached * $0.10 + 300 out * $1.60 = 830 per million
    assert result.cost_usd == Decimal("0.00083")
    assert unreported.cost_usd is None  # the host reported no usage: unknown, never $0
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        call, _ = ledger.calls()
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens) == (500, 1500, 300)
    assert call.cost_usd == Decimal("0.00083")


def test_routing_hints_in_metadata_stay_out_of_anthropic_requests() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "review auth"}],
        "metadata": {"user_id": "u-1", "files_affected": 7},
    }
    request = request_from_anthropic(body)
    assert request.metadata["files_affected"] == 7  # the router can read it
    assert request_to_anthropic(request, "claude-haiku-4-5")["metadata"] == {"user_id": "u-1"}
