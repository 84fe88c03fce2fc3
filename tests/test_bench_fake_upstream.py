"""bench/fake_upstream.py speaks the real formats: the official SDKs read it, streaming and not."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anthropic
import openai
import pytest

BENCH = Path(__file__).parents[1] / "bench" / "fake_upstream.py"
HELLO = [{"role": "user", "content": "Hello"}]
CHUNKS = 5


def _load_bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_fake_upstream", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


async def _shutdown(server: asyncio.Server) -> None:
    """Stop listening and end the open keep-alive connections."""
    server.close()
    handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for handler in handlers:
        handler.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    bench = _load_bench_module()
    sock = bench.listening_socket(0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    options = bench.Options(latency_s=0.001, chunks=CHUNKS, chunk_interval_s=0.0005)
    server = asyncio.run_coroutine_threadsafe(bench.start_server(sock, options), loop).result(10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(_shutdown(server), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        sock.close()


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
