"""``Idempotency-Key``: a retry gets the first answer (streamed or not) and pays nothing more."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import redis

from tests.fakes import anthropic_upstream as afx
from tests.fakes import faults
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served
from tests.test_gateway_faults import PRIMARY_COST, _settings, faulty_gateway
from tierwise.ledger.store import Ledger

HELLO: Any = [{"role": "user", "content": "Hello"}]


REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN = uuid.uuid4().hex[:12]
"""Every key this run uses ends with it; the Redis keys are deleted afterwards."""


def _key(name: str) -> str:
    return f"{name}-{RUN}"


@contextmanager
def _redis_cleanup() -> Iterator[None]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    try:
        yield
    finally:
        keys = list(client.scan_iter(match=f"tierwise:idempotency:*-{RUN}"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "ledger", "redis"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    settings = _settings(tmp_path, fallbacks=False)
    store = REDIS_URL if request.param == "redis" else request.param
    gateway = settings.gateway.model_copy(update={"idempotency": store})
    with ExitStack() as stack:
        if request.param == "redis":
            stack.enter_context(_redis_cleanup())
        yield stack.enter_context(faulty_gateway(settings.model_copy(update={"gateway": gateway})))


def _calls(gw: Served) -> int:
    gw.flush_ledger()
    with Ledger.open(gw.settings.resolved_ledger_url()) as ledger:
        return len(ledger.calls())


def _ask(gw: Served, key: str, text: str = "Hello") -> Any:
    client = gw.anthropic(timeout=10, default_headers={"idempotency-key": _key(key)})
    messages = [{"role": "user", "content": text}]
    return client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=64, messages=messages
    )


def test_a_retry_gets_the_first_answer_and_pays_once(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("the one answer"))
    first, again = _ask(gw, "k-1"), _ask(gw, "k-1")
    assert again.parse().content[0].text == "the one answer"
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-tierwise-cost-usd"] == str(PRIMARY_COST)  # what the first cost
    assert "idempotent-replayed" not in first.headers
    assert len(gw.anthropic_fake.requests) == 1 and _calls(gw) == 1


def test_a_different_body_with_the_same_key_is_a_422(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("first"))
    _ask(gw, "k-2")
    with pytest.raises(anthropic.UnprocessableEntityError) as caught:
        _ask(gw, "k-2", text="something else")
    assert "different request" in caught.value.message
    assert len(gw.anthropic_fake.requests) == 1


def test_the_same_key_while_the_first_runs_is_a_409(gw: Served) -> None:
    events = faults.split_events(afx.sse_body(afx.stream_events(afx.text_message("slow"))))
    gw.anthropic_fake.reply(faults.paced(events, first_delay=0.5))
    first: list[str] = []
    client = gw.anthropic(timeout=10, default_headers={"idempotency-key": _key("k-3")})

    def stream() -> str:
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=HELLO) as s:
            return "".join(s.text_stream)

    runner = threading.Thread(target=lambda: first.append(stream()))
    runner.start()
    while not gw.anthropic_fake.requests:  # the first has reached the upstream
        faults.pause(0.01)
    with pytest.raises(anthropic.ConflictError):
        stream()
    runner.join(10)
    assert first == ["slow"]


def test_a_stream_is_replayed_as_the_same_stream(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("streamed once"))
    client = gw.openai(timeout=10, default_headers={"idempotency-key": _key("k-4")})

    def text() -> str:
        chunks = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text() == text() == "streamed once"
    assert len(gw.openai_fake.requests) == 1 and _calls(gw) == 1


def test_a_failed_first_attempt_is_not_stored(gw: Served) -> None:
    gw.openai_fake.reply_error(500, "boom", "server_error")
    gw.openai_fake.reply_completion(ofx.completion("second try"))
    client = gw.openai(timeout=10, default_headers={"idempotency-key": _key("k-5")})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    reply = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert reply.choices[0].message.content == "second try"


def test_keys_are_scoped_to_the_callers_api_key(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("admin's"))
    body = {"model": "gpt-4.1-mini", "messages": HELLO}
    with httpx2.Client(base_url=gw.url, timeout=10) as http:
        headers = {"authorization": f"Bearer {ADMIN_KEY}", "idempotency-key": _key("k-6")}
        assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
        other = {"authorization": "Bearer tw_0000000000000000_nope", "idempotency-key": _key("k-6")}
        assert http.post("/v1/chat/completions", json=body, headers=other).status_code == 401


def _connected(client: redis.Redis, name: str) -> bool:
    return any(c.get("name") == name for c in client.client_list())


def test_the_redis_store_is_closed_when_the_gateway_stops(tmp_path: Path) -> None:
    name = f"tierwise-test-{RUN}"  # the store's connections carry it (CLIENT LIST)
    settings = _settings(tmp_path, fallbacks=False)
    gateway = settings.gateway.model_copy(update={"idempotency": f"{REDIS_URL}?client_name={name}"})
    with _redis_cleanup(), redis.Redis.from_url(REDIS_URL) as watcher:
        with faulty_gateway(settings.model_copy(update={"gateway": gateway})) as gw:
            gw.anthropic_fake.reply_message(afx.text_message("once"))
            _ask(gw, "k-close")
            assert _connected(watcher, name)
        for _ in range(500):  # Redis notices a closed socket at once; give it a moment
            if not _connected(watcher, name):
                break
            faults.pause(0.01)
        assert not _connected(watcher, name)
