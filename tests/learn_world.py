"""A small deterministic world for the learning tests: fake upstreams that answer by prompt.

Two tiers: ``openai:gpt-5-nano`` (tier 1, on :class:`FakeOpenAI`) and
``anthropic:claude-opus-4-7`` (tier 4, on :class:`FakeAnthropic`), reached through the
official SDKs in process. Three kinds of prompt, as the shipped routing rules see them:

* ``simple`` (renames): the rules send them to the cheap model, which gets them right;
* ``default`` (arithmetic word problems): sent to the cheap model, which gets them wrong;
* ``architecture`` (security reviews): sent to the strong model, though the cheap one gets
  them right too.

Every answer says ``RIGHT`` or ``WRONG``; the strong model, asked as a judge (the
``judge:<model>`` gate's system prompt), reads the answer and returns its verdict as JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx2

from tests.fakes import anthropic_upstream as fa_wire
from tests.fakes import openai_upstream as fo_wire
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway_harness import fake_engine
from tierwise.config import Settings
from tierwise.engine import Engine, Result

CHEAP = "openai:gpt-5-nano"
STRONG = "anthropic:claude-opus-4-7"
CANDIDATES = f"{CHEAP},{STRONG}"
RULES = f"route:rules?candidates={CANDIDATES}"
REPLIES = 2000

SIMPLE = [f"Rename the helper foo{i} to bar{i} in utils{i}.py" for i in range(6)]
DEFAULT = [f"A crate holds {i + 3} boxes of 12 eggs. How many eggs in total?" for i in range(6)]
SECURITY = [f"Check the login handler number {i} for a password leak in its logs" for i in range(6)]
ALL = [*SIMPLE, *DEFAULT, *SECURITY]

_ANSWER = re.compile(r"<answer>\n(.*)\n</answer>", re.S)


def right(model: str, prompt: str) -> bool:
    """Whether ``model`` answers ``prompt`` right in this world."""
    return model == STRONG or prompt not in DEFAULT


def answer(model: str, prompt: str) -> str:
    return f"{'RIGHT' if right(model, prompt) else 'WRONG'}: {model} on {prompt[:30]}"


def _last_user_text(body: dict[str, object]) -> str:
    messages = body["messages"]
    assert isinstance(messages, list)
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


@dataclass
class World:
    """The fakes behind the engine, each answering by prompt (and the strong one as judge)."""

    anthropic: FakeAnthropic = field(default_factory=FakeAnthropic)
    openai: FakeOpenAI = field(default_factory=FakeOpenAI)

    def __post_init__(self) -> None:
        for _ in range(REPLIES):
            self.anthropic.reply(self._anthropic_reply)
            self.openai.reply(self._openai_reply)

    def _anthropic_reply(self, request: fa_wire.ReceivedRequest, rid: str) -> httpx2.Response:
        body = request.json()
        text = _last_user_text(body)
        system = json.dumps(body.get("system") or "")
        if "review another model's answer" in system:
            found = _ANSWER.search(text)
            verdict = found is not None and found.group(1).startswith("RIGHT")
            reply = json.dumps(
                {"verdict": "pass" if verdict else "fail", "score": 0.9, "reason": "checked"}
            )
        else:
            reply = answer(STRONG, text)
        message = fa_wire.text_message(
            reply, model=str(body["model"]), usage_=fa_wire.usage(40, 12)
        )
        return httpx2.Response(
            200, json=message, headers={"request-id": rid, "content-type": "application/json"}
        )

    def _openai_reply(self, request: fo_wire.ReceivedRequest, rid: str) -> httpx2.Response:
        body = request.json()
        completion = fo_wire.completion(
            answer(CHEAP, _last_user_text(body)),
            model=str(body["model"]),
            token_usage=fo_wire.usage(30, 10),
        )
        return httpx2.Response(
            200, json=completion, headers={"x-request-id": rid, "content-type": "application/json"}
        )

    def engine(self, settings: Settings) -> Engine:
        return fake_engine(settings, self.anthropic, self.openai)


async def run_live(
    engine: Engine, prompts: Sequence[str], policy: str = RULES, *, feedback: bool = True
) -> list[Result]:
    """Send ``prompts`` as live traffic; with ``feedback`` the user says which were right."""
    results = []
    for prompt in prompts:
        result = await engine.complete(prompt, policy)
        if feedback:
            correct = right(result.response.model or "", prompt)
            await engine.feedback(result.task_id, correct, note="checked by hand")
        results.append(result)
    return results
