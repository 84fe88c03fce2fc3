"""Scripted models behind the fake upstreams: each request is answered by what it asks.

Workflows make many calls, some concurrently, so a first-in-first-out script would depend on
timing. Here a test gives one function that reads an :class:`Asked` (the upstream model, the
system prompt, the conversation text) and returns an :class:`Answer`; it is queued on a
:class:`FakeAnthropic` or :class:`FakeOpenAI`, which answer in their real wire format::

    answer_on(fake, lambda asked: Answer("42", 10, 2))

Like the fakes, this module does not import tierwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from tests.fakes import anthropic_upstream as fa
from tests.fakes import openai_upstream as fo

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Asked:
    """One request, read back from the wire."""

    model: str
    system: str
    conversation: str
    """Every message's text, in order."""
    structured: bool
    """Whether it asked for JSON in structured output."""
    body: JsonObject

    @property
    def last(self) -> str:
        """The last message's text."""
        return self.conversation.rsplit("\n\x00", 1)[-1]


@dataclass(frozen=True)
class Answer:
    text: str
    input_tokens: int
    output_tokens: int


Answerer = Callable[[Asked], Answer]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


def read_anthropic(body: JsonObject) -> Asked:
    messages = "\n\x00".join(_text(m["content"]) for m in body["messages"])
    structured = "output_config" in body
    return Asked(body["model"], _text(body.get("system")), messages, structured, body)


def read_openai(body: JsonObject) -> Asked:
    system = "".join(
        _text(m["content"]) for m in body["messages"] if m["role"] in ("system", "developer")
    )
    rest = [m for m in body["messages"] if m["role"] not in ("system", "developer")]
    messages = "\n\x00".join(_text(m["content"]) for m in rest)
    return Asked(body["model"], system, messages, "response_format" in body, body)


def answer_on(fake: fa.FakeAnthropic | fo.FakeOpenAI, answer: Answerer, times: int = 200) -> None:
    """Queue ``times`` replies on ``fake``, each built by ``answer`` from its request."""
    anthropic = isinstance(fake, fa.FakeAnthropic)

    def build(received: Any, request_id: str) -> httpx2.Response:
        body = received.json()
        if anthropic:
            said = answer(read_anthropic(body))
            usage = fa.usage(said.input_tokens, said.output_tokens)
            wire = fa.text_message(said.text, model=body["model"], usage_=usage)
            headers = {"request-id": request_id}
        else:
            said = answer(read_openai(body))
            usage = fo.usage(said.input_tokens, said.output_tokens)
            wire = fo.completion(said.text, model=body["model"], token_usage=usage)
            headers = {"x-request-id": request_id}
        headers["content-type"] = "application/json"
        return httpx2.Response(200, content=json.dumps(wire).encode(), headers=headers)

    for _ in range(times):
        fake.reply(build)
