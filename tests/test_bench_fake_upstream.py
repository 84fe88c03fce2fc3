"""bench/fake_upstream.py speaks the real formats: the official SDKs read it, streaming and not."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.bench_modules import fake_upstream

HELLO = [{"role": "user", "content": "Hello"}]
CHUNKS = 5


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with fake_upstream(CHUNKS) as url:
        yield url


def test_anthropic_message_and_stream(upstream_url: str) -> None:
    client = anthropic.Anthropic(base_url=upstream_url, api_key="sk-bench", max_retries=0)
    message = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=HELLO)
    assert message.model == "claude-haiku-4-5"
    assert message.content[0].text == "hello " * CHUNKS
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, CHUNKS)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["hello "] * CHUNKS
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == CHUNKS


def test_openai_completion_and_stream(upstream_url: str) -> None:
    client = openai.OpenAI(base_url=f"{upstream_url}/v1", api_key="sk-bench", max_retries=0)
    completion = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert completion.model == "gpt-4.1-mini"
    assert completion.choices[0].message.content == "hello " * CHUNKS
    assert completion.usage is not None and completion.usage.completion_tokens == CHUNKS
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello " * CHUNKS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 12


def test_unknown_paths_are_404(upstream_url: str) -> None:
    client = openai.OpenAI(base_url=f"{upstream_url}/v1", api_key="sk-bench", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
