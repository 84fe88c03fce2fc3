"""Model names, virtual models and policies, and clients served by the other API's upstream."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import Served, gateway_settings, running_gateway
from tierwise.catalog import load_catalog
from tierwise.config import Settings
from tierwise.errors import UnknownModelError
from tierwise.gateway.models import AUTO, ModelResolver
from tierwise.ledger.store import Ledger

HELLO = [{"role": "user", "content": "Hello"}]
PNG = afx._claude_code_history()[4]["content"][0]["content"][1]["source"]
POLICIES = {"cheap": "fixed:openai:gpt-5-nano", "coder": "fixed:anthropic:claude-sonnet-4-6"}
KINDS = {"anthropic": "anthropic", "openai": "openai", "openrouter": "openai", "ollama": "openai"}


@pytest.fixture
def gw(settings: Settings) -> Iterator[Served]:
    config = gateway_settings(
        settings.resolved_ledger_url(),
        policies=POLICIES,
        default_policy="fixed:anthropic:claude-haiku-4-5",
    )
    with running_gateway(config) as served:
        yield served


@pytest.fixture
def resolver(settings: Settings) -> ModelResolver:
    return ModelResolver(
        load_catalog(),
        default_policy="fixed:anthropic:claude-haiku-4-5",
        policies=POLICIES,
        provider_kinds=KINDS,
    )


def test_model_names_resolve_to_policies(resolver: ModelResolver) -> None:
    def policy(name: str, api: str = "openai") -> str:
        return resolver.resolve(name, api).policy  # type: ignore[arg-type]

    assert policy(AUTO) == "fixed:anthropic:claude-haiku-4-5"
    assert policy("tierwise/cheap") == policy("cheap") == "cheap"
    assert policy("tierwise/fixed:openai:gpt-5-mini") == "fixed:openai:gpt-5-mini"
    assert resolver.resolve("tierwise/fixed:openai:gpt-5-mini", "openai").inline
    assert not resolver.resolve("tierwise/cheap", "openai").inline
    assert policy("anthropic:claude-opus-4-7") == "fixed:anthropic:claude-opus-4-7"
    assert policy("claude-haiku-4-5-20251001") == "fixed:anthropic:claude-haiku-4-5"  # alias
    assert policy("gpt-4.1-mini", "anthropic") == "fixed:openai:gpt-4.1-mini"
    with pytest.raises(UnknownModelError) as caught:
        resolver.resolve("tierwise/cheep", "openai")
    assert "tierwise/cheap" in caught.value.suggestions
    with pytest.raises(UnknownModelError):
        resolver.resolve("http://169.254.169.254/latest", "openai")


def test_served_name_is_native_for_the_same_format(resolver: ModelResolver) -> None:
    assert resolver.served_name("anthropic:claude-haiku-4-5", "anthropic") == "claude-haiku-4-5"
    assert resolver.served_name("anthropic:claude-haiku-4-5", "openai") == (
        "anthropic:claude-haiku-4-5"
    )


def test_openai_client_served_by_anthropic_upstream(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.tool_use_message("get_weather", {"location": "Oslo"}))
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG['data']}"}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather here?"}, image]},
    ]
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=messages, tools=[weather], max_tokens=300
    )
    completion = raw.parse()
    assert completion.model == "anthropic:claude-haiku-4-5"
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == '{"location":"Oslo"}'
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = gw.anthropic_fake.last_request.json()
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["messages"][0]["content"][1] == {"type": "image", "source": PNG}
    assert sent["tools"] == [{"name": "get_weather", "input_schema": {}}]
    assert sent["max_tokens"] == 300
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        (call_record,) = ledger.calls()
    # Haiku 4.5: 412 input * $1 + 68 output * $5 = 752 per million
    assert str(call_record.cost_usd) == raw.headers["x-tierwise-cost-usd"] == "0.000752"


def test_anthropic_client_served_by_openai_upstream_streaming(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("Hello from GPT"))
    with gw.anthropic().messages.stream(
        model="gpt-4.1-mini", max_tokens=100, system="Be brief.", messages=HELLO
    ) as stream:
        message = stream.get_final_message()
    assert message.model == "openai:gpt-4.1-mini"
    assert message.content[0].text == "Hello from GPT"
    assert message.usage.input_tokens == 19 and message.usage.output_tokens == 10
    sent = gw.openai_fake.last_request.json()
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert sent["max_tokens"] == 100 and sent["stream"] is True


def test_virtual_models_run_their_policy(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("cheap answer"))
    gw.anthropic_fake.reply_message(afx.text_message("auto answer"))
    client = gw.anthropic()
    cheap = client.messages.with_raw_response.create(
        model="tierwise/cheap", max_tokens=50, messages=HELLO
    )
    assert cheap.parse().model == "openai:gpt-5-nano"
    assert cheap.headers["x-tierwise-policy"] == "fixed:openai:gpt-5-nano"
    assert gw.openai_fake.last_request.json()["model"] == "gpt-5-nano"
    auto = client.messages.create(model=AUTO, max_tokens=50, messages=HELLO)
    assert auto.model == "claude-haiku-4-5" and auto.content[0].text == "auto answer"


def test_models_list_in_each_format(gw: Served) -> None:
    openai_ids = [m.id for m in gw.openai().models.list()]
    # the shipped named policy `advisor` sorts before the config's own
    assert openai_ids[:4] == [AUTO, "tierwise/advisor", "tierwise/cheap", "tierwise/coder"]
    assert openai_ids[4] == "tierwise/cascade"  # a policy kind that runs from its config
    assert "anthropic:claude-haiku-4-5" in openai_ids and "openai:gpt-4.1-mini" in openai_ids
    page = gw.anthropic().models.list()
    assert [m.id for m in page.data] == openai_ids
    assert page.data[0].type == "model" and page.data[0].display_name.startswith("default")


def test_unknown_route_is_a_404_in_the_envelope(gw: Served) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        gw.anthropic().post("/v1/messages/batches", body={}, cast_to=object)
    assert caught.value.body["error"]["type"] == "not_found_error"
