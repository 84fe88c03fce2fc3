"""Malformed request bodies are 400s at the gateway's edge, in the API's own envelope.

A corpus built field by field — wrong types, out-of-range numbers (NaN, infinities, -0,
1e309, huge and negative integers), bad roles, blocks, images, nesting and empty things —
is sent raw (httpx2, the exact JSON text) to ``/v1/chat/completions``, ``/v1/messages`` and
``/v1/messages/count_tokens``. Each must be a 400 ``invalid_request_error`` naming the field
(OpenAI's ``param``; Anthropic's message), and no fake upstream may see a request. Valid
vendor fields still reach the upstream untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import (
    ADMIN_KEY,
    Served,
    gateway_settings,
    running_gateway,
    serve_app,
)
from tests.test_budgets import REDIS_URL, pg_url, redis_prefix  # noqa: F401 (fixtures)
from tests.test_gateway_budgets import blocking_engine, create_key, settings_for
from tests.test_gateway_budgets import gateway as budget_gateway
from tierwise.budgets.estimate import worst_case
from tierwise.budgets.limits import Amount, Limits
from tierwise.budgets.redis_store import RedisBudgetStore
from tierwise.budgets.sql import SqlBudgetStore
from tierwise.budgets.store import Counter
from tierwise.catalog import load_catalog
from tierwise.gateway.app import create_app
from tierwise.ledger.store import Ledger
from tierwise.wire.openai import request_from_openai

MINI = "gpt-4.1-mini"
HAIKU = "claude-haiku-4-5"
HELLO = [{"role": "user", "content": "Hello"}]
RAW = "\x00raw\x00"
"""Stands for the raw JSON literal of a case in the body before it is written."""
NONSTANDARD = ("NaN", "Infinity", "-Infinity")
"""Literals Python's json reads but JSON does not have (a JSON parser may refuse them first)."""

PNG = afx._claude_code_history()[4]["content"][0]["content"][1]["source"]["data"]
JPEG_AS_PNG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(20)).decode()
PDF = "JVBERi0xLjQKJcfsj6IK"

OPENAI_BASE: dict[str, Any] = {"model": MINI, "messages": [{"role": "user", "content": "Hi"}]}
ANTHROPIC_BASE: dict[str, Any] = {
    "model": HAIKU,
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Hi"}],
}

SURROGATES = (
    '[{"role": "user", "content": "half an emoji: \\ud83d"}]',
    '[{"role": "user", "content": "\\udfff"}]',
    '[{"role": "user", "content": [{"type": "text", "text": "x\\udc00y"}]}]',
    '[{"role": "user", "content": "x", "\\ud800": 1}]',
)
"""Lone UTF-16 surrogates, JSON-escaped: not text, so nothing can encode them to send on."""

INTEGERS = ("0", "-1", "-0", "1.5", "16.0", '"16"', "true", "NaN", "Infinity", "1e309")
HUGE = ("1" + "0" * 30, "-" + "1" + "0" * 30, "[]", "{}")
"""Bad values of a token count: 0 and below, not integers, not numbers, far too large."""
NOT_NUMBERS = ('"1"', "true", "NaN", "Infinity", "-Infinity", "1e309", "-1e309", "[]", "{}")
NOT_BOOLS = ('"true"', "1", "0", "[]", "{}")


def _user(*parts: Any) -> str:
    return json.dumps([{"role": "user", "content": list(parts)}])


def _assistant(*blocks: Any) -> str:
    return json.dumps([{"role": "assistant", "content": list(blocks)}])


def _document(media_type: str, data: str) -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "document", "source": source}


def _image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _image(source: dict[str, Any]) -> dict[str, Any]:
    return {"type": "image", "source": source}


def _b64_image(data: str, media_type: str = "image/png") -> dict[str, Any]:
    return _image({"type": "base64", "media_type": media_type, "data": data})


_ADVISOR = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}

OPENAI_FIELDS: dict[str, tuple[str, ...]] = {
    "max_tokens": INTEGERS + HUGE,
    "max_completion_tokens": INTEGERS + HUGE,
    "temperature": ("-0.1", "2.01", "3", *NOT_NUMBERS),
    "top_p": ("-0.5", "1.5", '"0.5"', "false", "NaN", "1e309", "{}"),
    "n": ("0", "2", "-1", "1.0", "true", '"1"', "1e309"),
    "stream": NOT_BOOLS,
    "stream_options": ('"x"', "1", "[]", '{"include_usage": "yes"}', '{"include_usage": 1}'),
    "stop": ("1", "{}", "[1]", '["a", "b", "c", "d", "e"]', "[null]", "true"),
    "presence_penalty": ("-2.5", "3", '"0"', "NaN"),
    "frequency_penalty": ("2.5", "-3", "[]", "Infinity"),
    "logprobs": ('"yes"', "1"),
    "top_logprobs": ("-1", "21", "1.5"),
    "seed": ("1.5", '"1"'),
    "user": ("1", "[]"),
    "parallel_tool_calls": ('"no"',),
    "reasoning_effort": ('"ultra"', "1"),
    "response_format": ('"json"', '{"type": "yaml"}', '{"type": "json_schema"}'),
    "top_k": ("-2", "1.5", '"5"'),
    "logit_bias": ('{"50256": -101}', '{"50256": "x"}', "[]"),
    "tools": (
        '"x"',
        "{}",
        "[1]",
        '[{"type": "custom", "custom": {"name": "grep"}}]',
        '[{"type": "function"}]',
        '[{"type": "function", "function": {"name": ""}}]',
        '[{"type": "function", "function": {"name": "f", "parameters": "x"}}]',
        '[{"type": "function", "function": {"name": "f", "strict": "yes"}}]',
    ),
    "tool_choice": (
        '"always"',
        "1",
        '{"type": "function"}',
        '{"type": "function", "function": {}}',
        '{"type": "bogus"}',
        "[]",
    ),
    "messages": (
        "[]",
        '"hi"',
        "{}",
        "null",
        "[1]",
        "[[]]",
        "[{}]",
        '[{"role": "user"}]',
        '[{"role": null, "content": "x"}]',
        '[{"role": 1, "content": "x"}]',
        '[{"role": "wizard", "content": "x"}]',
        '[{"role": "function", "name": "f", "content": "x"}]',
        '[{"role": "user", "content": 1}]',
        '[{"role": "user", "content": null}]',
        '[{"role": "user", "content": []}]',
        '[{"role": "user", "content": {"type": "text", "text": "x"}}]',
        _user(1),
        _user({"type": "bogus"}),
        _user({"type": "text"}),
        _user({"type": "text", "text": 1}),
        _user({"type": "image_url", "image_url": "https://example.com/a.png"}),
        _user(_image_url(f"data:image/png;base64,{PNG[:-3]}!")),
        _user(_image_url(f"data:image/bmp;base64,{PNG}")),
        _user(_image_url(f"data:image/png;base64,{JPEG_AS_PNG}")),
        _user(_image_url(f"data:image/png,{PNG}")),
        _user(_image_url("ftp://example.com/a.png")),
        _user(_image_url("javascript:alert(1)")),
        _user({"type": "image_url", "image_url": {"url": "https://x.org/a.png", "detail": "max"}}),
        _user({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}),
        _user({"type": "file", "file": {}}),
        '[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]',
        '[{"role": "assistant"}]',
        '[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}]',
        '[{"role": "assistant", "tool_calls": "x"}]',
        '[{"role": "tool", "content": "x"}]',
        '[{"role": "tool", "tool_call_id": 1, "content": "x"}]',
        *SURROGATES,
    ),
    "x_vendor": ('"\\ud800"', '{"\\udfff": 1}', '["ok", {"k": "\\udbff"}]'),
    "metadata": ('"x"', "[]", '{"k": 1}', '{"\\ud800": "v"}'),
}

ANTHROPIC_FIELDS: dict[str, tuple[str, ...]] = {
    "max_tokens": INTEGERS + HUGE,
    "temperature": ("-0.1", "1.01", "2", *NOT_NUMBERS),
    "top_p": ("-0.5", "1.5", '"0.5"', "false", "NaN", "1e309", "{}"),
    "top_k": ("-1", "1.5", '"5"', "true", "1e309"),
    "stop_sequences": ('"x"', "[1]", "{}", "[null]"),
    "stream": NOT_BOOLS,
    "metadata": ('"x"', "[]", '{"user_id": 1}'),
    "system": (
        "1",
        "{}",
        "[1]",
        '[{"type": "text"}]',
        '[{"type": "image", "source": {"type": "url", "url": "https://x.org/a.png"}}]',
    ),
    "thinking": (
        '"on"',
        '{"type": "enabled"}',
        '{"type": "enabled", "budget_tokens": 10}',
        '{"type": "enabled", "budget_tokens": "2048"}',
        '{"type": "maybe"}',
    ),
    "tool_choice": (
        '"auto"',
        "{}",
        '{"type": "tool"}',
        '{"type": "auto", "disable_parallel_tool_use": "yes"}',
        '{"type": "sometimes"}',
    ),
    "tools": (
        '"x"',
        "[1]",
        '[{"name": "x"}]',
        '[{"input_schema": {}}]',
        '[{"name": "x", "input_schema": "x"}]',
        '[{"type": 3, "name": "x"}]',
        '[{"type": "web_search_20250305"}]',
        json.dumps([_ADVISOR | {"max_uses": 101}]),
        json.dumps([_ADVISOR | {"max_uses": -1}]),
        json.dumps([_ADVISOR | {"max_uses": 1.5}]),
        json.dumps([_ADVISOR | {"max_tokens": 0}]),
        json.dumps([_ADVISOR | {"caching": "1h"}]),
        json.dumps([{k: v for k, v in _ADVISOR.items() if k != "model"}]),
        json.dumps([_ADVISOR, _ADVISOR | {"name": "second_advisor"}]),
        '[{"name": "x", "input_schema": {}}, {"name": "x", "input_schema": {}}]',
    ),
    "messages": (
        "[]",
        '"hi"',
        "{}",
        "null",
        "[1]",
        "[{}]",
        '[{"role": "user"}]',
        '[{"role": "system", "content": "x"}]',
        '[{"role": "robot", "content": "x"}]',
        '[{"role": "user", "content": 1}]',
        '[{"role": "user", "content": []}]',
        _user(1),
        _user({"type": "bogus"}),
        _user({"text": "x"}),
        _user({"type": "text"}),
        _user({"type": "text", "text": ["x"]}),
        _user({"type": "text", "text": "x", "cache_control": {"type": "forever"}}),
        _user({"type": "image"}),
        _user(_b64_image(PNG[:-3] + "!")),
        _user(_b64_image(PNG, "image/bmp")),
        _user(_b64_image(JPEG_AS_PNG)),
        _user(_b64_image("")),
        _user(_image({"type": "url", "url": "file:///etc/passwd"})),
        _user(_image({"type": "magic"})),
        _user(_document("application/pdf", PNG)),
        _user(_document("text/html", PDF)),
        _user({"type": "tool_result"}),
        _user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_use"}]}),
        _user({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
        _assistant({"type": "tool_use", "id": "t", "name": "f", "input": "x"}),
        _assistant({"type": "tool_use", "name": "f", "input": {}}),
        _assistant({"type": "thinking", "signature": "s"}),
        _assistant({"type": "redacted_thinking"}),
        *SURROGATES,
    ),
    "x_vendor": ('"\\ud800"', '{"\\udfff": 1}'),
    # Chat Completions' own fields, which the Messages API refuses
    "stream_options": ('"x"', '{"include_usage": true}'),
    "n": ("1",),
    "max_completion_tokens": ("16",),
    "stop": ('["x"]',),
    "response_format": ('{"type": "json_object"}',),
}


def _body(base: dict[str, Any], field: str, literal: str) -> str:
    return json.dumps({**base, field: RAW}).replace(json.dumps(RAW), literal)


def _cases(fields: dict[str, tuple[str, ...]]) -> list[Any]:
    return [
        pytest.param(field, literal, id=f"{field}={literal[:40]}")
        for field, literals in fields.items()
        for literal in literals
    ]


def test_the_corpus_is_large_and_has_no_duplicates() -> None:
    openai_cases = [(f, v) for f, vs in OPENAI_FIELDS.items() for v in vs]
    anthropic_cases = [(f, v) for f, vs in ANTHROPIC_FIELDS.items() for v in vs]
    assert len(set(openai_cases)) == len(openai_cases)
    assert len(set(anthropic_cases)) == len(anthropic_cases)
    assert len(openai_cases) + 2 * len(anthropic_cases) >= 200  # messages and count_tokens


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ledger = tmp_path_factory.mktemp("validation") / "ledger.db"
    with running_gateway(gateway_settings(f"sqlite:///{ledger}")) as served:
        yield served


@pytest.fixture(scope="module")
def http(gw: Served) -> Iterator[httpx2.Client]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "anthropic-version": "2023-06-01"}
    with httpx2.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        yield client


def _post(http: httpx2.Client, path: str, content: str) -> httpx2.Response:
    return http.post(path, content=content.encode(), headers={"content-type": "application/json"})


def _assert_nothing_sent(gw: Served) -> None:
    assert gw.openai_fake.requests == [] and gw.anthropic_fake.requests == []


def _names(param: str, field: str) -> bool:
    return param == field or param.startswith((f"{field}[", f"{field}."))


@pytest.mark.parametrize(("field", "literal"), _cases(OPENAI_FIELDS))
def test_malformed_chat_completions_are_400s_naming_the_field(
    gw: Served, http: httpx2.Client, field: str, literal: str
) -> None:
    response = _post(http, "/v1/chat/completions", _body(OPENAI_BASE, field, literal))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if literal in NONSTANDARD and error["param"] is None:
        assert "JSON" in error["message"]  # refused by the JSON parser itself
    else:
        assert _names(error["param"], field), error
    _assert_nothing_sent(gw)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(("field", "literal"), _cases(ANTHROPIC_FIELDS))
def test_malformed_messages_are_400s_naming_the_field(
    gw: Served, http: httpx2.Client, path: str, field: str, literal: str
) -> None:
    response = _post(http, path, _body(ANTHROPIC_BASE, field, literal))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    message = body["error"]["message"]
    if not (literal in NONSTANDARD and "JSON" in message):
        assert re.search(rf"request: `?{field}\b", message), body
    _assert_nothing_sent(gw)


# --- what is valid still goes through, untouched ---------------------------------------------

OPENAI_EXTRAS: dict[str, Any] = {
    "logit_bias": {"50256": -100},
    "seed": 7,
    "user": "u-1",
    "metadata": {"team": "search"},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
    "reasoning_effort": "low",
    "top_k": 40,  # a compatible host's own fields: not OpenAI's, passed as they are
    "repetition_penalty": 1.1,
    "min_p": 0.05,
    "x_vendor": {"nested": [1, {"deep": None}], "flag": True},
}


def test_valid_openai_edge_values_and_vendor_fields_reach_the_upstream(gw: Served) -> None:
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
    ]
    edges = {"temperature": 2, "top_p": 0, "n": 1, "max_completion_tokens": 32768, "stop": "x"}
    gw.openai().chat.completions.create(
        model=MINI, messages=messages, extra_body=OPENAI_EXTRAS | edges
    )
    sent = gw.openai_fake.last_request.json()
    assert {k: sent[k] for k in OPENAI_EXTRAS} == OPENAI_EXTRAS
    assert sent["max_completion_tokens"] == 32768 and sent["temperature"] == 2
    gw.openai_fake.requests.clear()


def test_valid_anthropic_vendor_fields_and_server_blocks_reach_the_upstream(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    search = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
    use = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    cited = {
        "type": "text",
        "text": "Found.",
        "citations": None,
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    extras: dict[str, Any] = {
        "top_k": 0,
        "service_tier": "auto",
        "container": "container_1",
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "x_vendor": {"nested": [1, 2]},
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
    }
    edges = {"temperature": 1, "top_p": 0}
    messages = [
        {"role": "user", "content": "Search for it."},
        {"role": "assistant", "content": [use, search, cited]},
        {"role": "user", "content": [_b64_image(PNG), {"type": "text", "text": "And this?"}]},
    ]
    stream = gw.anthropic().messages.create(
        model=HAIKU, max_tokens=64000, messages=messages, stream=True, extra_body=extras | edges
    )
    assert [event.type for event in stream][-1] == "message_stop"
    sent = gw.anthropic_fake.last_request.json()
    assert {k: sent[k] for k in extras} == extras
    assert sent["messages"] == messages and sent["max_tokens"] == 64000
    assert (sent["temperature"], sent["top_p"]) == (1, 0)
    gw.anthropic_fake.requests.clear()


# --- budgets: a token limit no budget can take ------------------------------------------------


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def _budget_store(store: str, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """``[gateway] budget_store`` and ``[gateway.budgets]`` for a store, fail-open on."""
    if store == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        return REDIS_URL, {"fail_open": True, "redis_prefix": prefix}
    url = "ledger" if store == "sqlite" else request.getfixturevalue("pg_url")
    return url, {"fail_open": True}


def _store_counters(url: str, ledger_url: str, budgets: dict[str, Any]) -> tuple[Counter, int]:
    async def read() -> tuple[Counter, int]:
        store: Any
        if url.startswith("redis"):
            store = RedisBudgetStore(url, prefix=budgets["redis_prefix"])
        else:
            store = SqlBudgetStore(Ledger.open(ledger_url if url == "ledger" else url), owned=True)
        try:
            return await store.counter("key:team:total"), await store.held()
        finally:
            await store.aclose()

    return asyncio.run(read())


@pytest.mark.parametrize("store", ["sqlite", "redis", "postgres"])
def test_a_token_limit_no_budget_can_take_is_a_400_on_every_store(
    ledger_url: str, store: str, request: pytest.FixtureRequest
) -> None:
    """Negative, zero and 10**30: refused (400), never forwarded, never read as the store
    being down (SQLite overflowed on 10**30) and so never admitted by ``fail_open``."""
    url, budgets = _budget_store(store, request)
    token = create_key(ledger_url, Limits(usd_total=Decimal(1)))
    with budget_gateway(settings_for(ledger_url, budget_store=url, budgets=budgets)) as (gw, svc):
        for max_tokens in (-1_000_000, -1, 0, 10**30):
            with pytest.raises(openai.BadRequestError) as refused:
                gw.openai(key=token).chat.completions.create(
                    model=MINI, messages=HELLO, max_tokens=max_tokens
                )
            assert refused.value.body["param"] == "max_tokens"  # type: ignore[index]
            with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
                gw.anthropic(key=token).messages.create(
                    model=HAIKU, max_tokens=max_tokens, messages=HELLO, stream=True
                )
        gate = svc.running.budgets
        assert gate.refusals["store_down"] == 0 and gate.pending == 0
    _assert_nothing_sent(gw)
    counter, held = _store_counters(url, ledger_url, budgets)
    assert held == 0 and counter.spent == counter.reserved == Amount()


def test_a_negative_max_tokens_in_flight_lets_no_request_past_the_cap(ledger_url: str) -> None:
    """With a cap that fits 3, a negative reservation held would have let all 10 through."""
    fits, sent = 3, 10
    body = {"model": MINI, "messages": HELLO, "max_tokens": 50}
    each, _ = worst_case(request_from_openai(body), [[load_catalog().get(f"openai:{MINI}")]], 1.1)
    token = create_key(ledger_url, Limits(usd_total=each.usd * fits + each.usd / 2))
    settings = settings_for(ledger_url, max_loop_lag_ms=0)
    release = threading.Event()
    engine = blocking_engine(settings, release)
    with (
        serve_app(create_app(settings, engine=engine), engine) as url,
        ThreadPoolExecutor(sent + 1) as pool,
    ):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
        negative = pool.submit(
            client.chat.completions.create, **{**body, "max_tokens": -10_000_000}
        )
        deadline = time.monotonic() + 5  # in flight (held upstream) or refused
        while not negative.done() and read_held(ledger_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)

        def served(_: int) -> bool:
            try:
                client.chat.completions.create(**body)  # type: ignore[call-overload]
                return True
            except openai.RateLimitError:
                return False

        outcomes = [pool.submit(served, i) for i in range(sent)]
        deadline = time.monotonic() + 20
        while sum(o.done() for o in outcomes) < sent - fits and time.monotonic() < deadline:
            time.sleep(0.02)
        release.set()
        assert sum(o.result() for o in outcomes) == fits
        with pytest.raises(openai.BadRequestError):
            negative.result()


def read_held(ledger_url: str) -> int:
    async def read() -> int:
        store = SqlBudgetStore(Ledger.open(ledger_url), owned=True)
        try:
            return await store.held()
        finally:
            await store.aclose()

    return asyncio.run(read())


# --- max_tokens against the models the policy may call ---------------------------------------

HOUSE_MODEL = {"id": "openai:house-model", "prices": {"input": 1, "output": 2}}
"""A model the operator added without ``max_output_tokens``."""


@pytest.fixture(scope="module")
def limits_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ledger = tmp_path_factory.mktemp("limits") / "ledger.db"
    settings = gateway_settings(
        f"sqlite:///{ledger}",
        models=[HOUSE_MODEL],
        policies={"spill": "fixed:openai:gpt-4o-mini?fallback=anthropic:claude-haiku-4-5"},
        gateway={"default_output_limit": 1000},
    )
    with running_gateway(settings) as served:
        yield served


@pytest.mark.parametrize(
    ("model", "field", "limit"),
    [
        (MINI, "max_tokens", 32768),  # the catalog's max_output_tokens
        (MINI, "max_completion_tokens", 32768),
        ("tierwise/spill", "max_tokens", 64000),  # the largest of the models it may call
        ("house-model", "max_tokens", 1000),  # no limit in the catalog: default_output_limit
    ],
)
def test_max_tokens_over_the_output_limit_of_every_model_the_policy_may_call_is_a_400(
    limits_gw: Served, model: str, field: str, limit: int
) -> None:
    client = limits_gw.openai()
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=HELLO, extra_body={field: limit + 1})
    assert refused.value.body["param"] == field  # type: ignore[index]
    assert "over the output limit" in refused.value.message and str(limit) in refused.value.message
    assert limits_gw.openai_fake.requests == []
    limits_gw.openai_fake.reply_completion(ofx.completion("ok"))
    client.chat.completions.create(model=model, messages=HELLO, extra_body={field: limit})
    assert limits_gw.openai_fake.last_request.json()[field] == limit
    limits_gw.openai_fake.requests.clear()


def test_an_anthropic_client_gets_the_limit_of_the_model_it_is_routed_to(
    limits_gw: Served,
) -> None:
    with pytest.raises(anthropic.BadRequestError, match="max_tokens is 32769, over the output"):
        limits_gw.anthropic().messages.create(
            model=MINI, max_tokens=32769, messages=HELLO, stream=True
        )
    with pytest.raises(anthropic.BadRequestError, match="claude-haiku-4-5 \\(64000\\)"):
        limits_gw.anthropic().messages.create(
            model=HAIKU, max_tokens=64001, messages=HELLO, stream=True
        )
    assert limits_gw.anthropic_fake.requests == [] and limits_gw.openai_fake.requests == []


def test_an_escaped_emoji_is_text_and_reaches_the_upstream(gw: Served, http: httpx2.Client) -> None:
    """A surrogate pair (as ``ensure_ascii`` JSON writes an emoji) is one character, not a lone
    surrogate: it goes through."""
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    emoji = '[{"role": "user", "content": "hi \\ud83d\\ude00"}]'
    raw = _body(OPENAI_BASE, "messages", emoji)
    assert _post(http, "/v1/chat/completions", raw).status_code == 200
    assert gw.openai_fake.last_request.json()["messages"][0]["content"] == "hi \U0001f600"
    gw.openai_fake.requests.clear()


@pytest.mark.parametrize("body", [{}, {"max_tokens": None}], ids=["missing", "null"])
def test_messages_need_max_tokens_and_count_tokens_does_not(
    gw: Served, http: httpx2.Client, body: dict[str, Any]
) -> None:
    base = {"model": HAIKU, "messages": HELLO, **body}
    refused = _post(http, "/v1/messages", json.dumps(base))
    assert refused.status_code == 400
    assert "`max_tokens` is required" in refused.json()["error"]["message"]
    counted = _post(http, "/v1/messages/count_tokens", json.dumps(base))
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    _assert_nothing_sent(gw)
