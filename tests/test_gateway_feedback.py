"""Feedback is scoped to the key that made the task: the real SDK clients against the gateway
(uvicorn on 127.0.0.1) over fake upstreams; the verdicts read back from its ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tierwise.gateway.keys import KeyStore
from tierwise.ledger.records import TaskRecord
from tierwise.ledger.store import Ledger

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def keys(ledger_url: str) -> dict[str, str]:
    with Ledger.open(ledger_url) as ledger:
        store = KeyStore(ledger)
        return {name: store.create(name).token for name in ("alice", "bob")}


@pytest.fixture
def gw(ledger_url: str, keys: dict[str, str]) -> Iterator[Served]:
    with running_gateway(gateway_settings(ledger_url)) as served:
        yield served


def _openai_task(gw: Served, key: str) -> str:
    """A chat completion made with ``key`` through the OpenAI SDK; its task id."""
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    raw = gw.openai(key=key).chat.completions.with_raw_response.create(
        model="gpt-4.1-mini", messages=HELLO
    )
    return raw.headers["x-tierwise-task-id"]


def _streamed_anthropic_task(gw: Served, key: str) -> str:
    """A streamed message made with ``key`` through the Anthropic SDK; its task id."""
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    client = gw.anthropic(key=key)
    with client.messages.with_streaming_response.create(
        model="claude-haiku-4-5", max_tokens=16, messages=HELLO, stream=True
    ) as response:
        assert "".join(response.iter_text())  # the whole stream, so the task is closed
        return response.headers["x-tierwise-task-id"]


def _judge(gw: Served, key: str, task_id: str, correct: bool = True) -> Any:
    """Feedback through the OpenAI SDK's own request path (auth, errors, envelope)."""
    body = {"task_id": task_id, "correct": correct, "note": "checked"}
    return gw.openai(key=key).post("/tierwise/feedback", body=body, cast_to=object)


def _verdicts(gw: Served, task_id: str) -> list[str]:
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        return [o.detail for o in ledger.outcomes(task_id) if o.source == "user"]


def test_each_gateway_task_records_the_key_that_made_it(gw: Served, keys) -> None:
    alice = _openai_task(gw, keys["alice"])
    bob = _streamed_anthropic_task(gw, keys["bob"])
    admin = _openai_task(gw, ADMIN_KEY)
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        tagged = {t.id: t.metadata for t in ledger.tasks()}
    assert tagged == {
        alice: {"gateway_key": "alice"},
        bob: {"gateway_key": "bob"},
        admin: {"gateway_key": "admin"},
    }


def test_a_key_judges_its_own_tasks(gw: Served, keys) -> None:
    alice = _openai_task(gw, keys["alice"])
    bob = _streamed_anthropic_task(gw, keys["bob"])
    assert _judge(gw, keys["alice"], alice)["task_id"] == alice
    assert _judge(gw, keys["bob"], bob, correct=False)["correct"] is False
    assert _verdicts(gw, alice) == ["via gateway key alice: checked"]
    assert _verdicts(gw, bob) == ["via gateway key bob: checked"]


def test_another_keys_task_is_a_404_like_an_unknown_one(gw: Served, keys) -> None:
    alice = _openai_task(gw, keys["alice"])
    with pytest.raises(openai.NotFoundError) as foreign:
        _judge(gw, keys["bob"], alice)
    unknown_id = "0" * len(alice)
    with pytest.raises(openai.NotFoundError) as unknown:
        _judge(gw, keys["bob"], unknown_id)
    assert foreign.value.body == {
        "message": f"no task {alice!r}",
        "type": "invalid_request_error",
        "param": None,
        "code": "task_not_found",
    }
    assert unknown.value.body == {**foreign.value.body, "message": f"no task {unknown_id!r}"}
    assert _verdicts(gw, alice) == []


def test_the_admin_key_judges_any_task(gw: Served, keys) -> None:
    bob = _streamed_anthropic_task(gw, keys["bob"])
    assert _judge(gw, ADMIN_KEY, bob)["task_id"] == bob
    assert _verdicts(gw, bob) == ["via gateway key admin: checked"]


def test_a_task_made_outside_the_gateway_is_the_admins_to_judge(gw: Served, keys) -> None:
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        library = TaskRecord(policy="fixed:openai:gpt-4.1-mini", source="library")
        ledger.append(library)
    with pytest.raises(openai.NotFoundError):
        _judge(gw, keys["alice"], library.id)
    assert _judge(gw, ADMIN_KEY, library.id)["task_id"] == library.id


def test_without_auth_anyone_may_judge(ledger_url: str) -> None:
    settings = gateway_settings(ledger_url, gateway={"auth": False})
    with running_gateway(settings) as gw:
        task = _openai_task(gw, "anything")
        assert _judge(gw, "something-else", task)["task_id"] == task
        assert _verdicts(gw, task) == ["via gateway key anonymous: checked"]
