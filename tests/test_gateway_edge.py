"""The order of work per request: size limit, authentication, admission, idempotency, body.

A missing or unknown key is refused before one byte of the body is read (nothing an
unauthenticated client sends is buffered or claimed); a declared or streamed body over
``max_body_bytes`` is a 413; JSON nested deeper than ``max_json_depth`` is a 400, never a 500;
an ``Idempotency-Key`` the gateway cannot honour is a 400, and a stored answer is replayed
only while its API key is still active.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from starlette.applications import Starlette

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import (
    ADMIN_KEY,
    Served,
    fake_engine,
    gateway_settings,
    running_gateway,
)
from tierwise.budgets.limits import Limits
from tierwise.config import Settings
from tierwise.errors import InvalidRequestError, RequestTooLargeError
from tierwise.gateway import idempotency, reading
from tierwise.gateway.admission import AdmissionControl
from tierwise.gateway.app import create_app
from tierwise.gateway.idempotency import MemoryStore, Stored
from tierwise.gateway.keys import KeyStore
from tierwise.gateway.reading import check_depth, parse_json
from tierwise.ledger.store import Ledger

HELLO: Any = [{"role": "user", "content": "Hello"}]
MIB = 1024 * 1024
LIMIT = 64 * 1024
"""``max_body_bytes`` of the small-limit gateway."""


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def _settings(ledger_url: str, **gateway: Any) -> Settings:
    return gateway_settings(ledger_url, gateway=gateway)


def _create_key(ledger_url: str, name: str, limits: Limits | None = None) -> str:
    with Ledger.open(ledger_url) as ledger:
        return KeyStore(ledger).create(name, limits=limits).token


def _deep_body(body: dict[str, Any], depth: int) -> bytes:
    """``body`` with ``metadata.user_id`` nesting arrays so that the whole is ``depth`` deep
    (the body is level 1, ``metadata`` level 2); written out, as ``json`` cannot."""
    text = json.dumps(body | {"metadata": {"user_id": "@"}})
    arrays = depth - 2
    return text.replace('"@"', "[" * arrays + "]" * arrays).encode()


# --- in process: what the app reads ---------------------------------------------------------


class Upload:
    """A client sending ``size`` bytes in 1 MiB chunks; counts what the app read of them."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.read = 0
        self.status = 0
        self.body = b""

    async def receive(self) -> dict[str, Any]:
        if self.left <= 0:
            await asyncio.sleep(3600)  # the client is done and waits for its answer
        chunk = b"x" * min(MIB, self.left)
        self.left -= len(chunk)
        self.read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.left > 0}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def _scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


@asynccontextmanager
async def _started(settings: Settings) -> AsyncIterator[tuple[Starlette, afx.FakeAnthropic]]:
    fake = afx.FakeAnthropic()
    engine = fake_engine(settings, fake, ofx.FakeOpenAI())
    app = create_app(settings, engine=engine)
    try:
        async with app.router.lifespan_context(app):
            yield app, fake
    finally:
        await engine.aclose()


async def _upload(settings: Settings, size: int, headers: dict[str, str]) -> Upload:
    upload = Upload(size)
    async with _started(settings) as (app, _):
        await app(_scope("/v1/messages", headers), upload.receive, upload.send)
    return upload


@pytest.mark.parametrize("key", [{}, {"x-api-key": "tw_0000000000000000_forged"}])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(
    ledger_url: str, key: dict[str, str], declared: bool
) -> None:
    size = 20 * MIB
    headers = {"content-type": "application/json", "idempotency-key": "upload-1", **key}
    if declared:
        headers["content-length"] = str(size)
    upload = asyncio.run(_upload(_settings(ledger_url), size, headers))
    assert upload.status == 401
    assert json.loads(upload.body)["error"]["type"] == "authentication_error"
    assert upload.read == 0  # not one chunk of the 20 MiB was taken from the client


def test_a_declared_body_over_the_limit_is_a_413_before_auth_and_unread(ledger_url: str) -> None:
    settings = _settings(ledger_url, max_body_bytes=LIMIT)
    headers = {"content-length": str(LIMIT + 1), "idempotency-key": "big-1"}
    for key in ({}, {"x-api-key": ADMIN_KEY}):  # refused on its size, with or without a key
        upload = asyncio.run(_upload(settings, LIMIT + 1, headers | key))
        assert upload.status == 413
        assert json.loads(upload.body)["error"]["type"] == "request_too_large"
        assert upload.read == 0


@pytest.mark.parametrize("idempotent", [{}, {"idempotency-key": "chunked-1"}])
def test_a_chunked_body_is_cut_at_the_limit(ledger_url: str, idempotent: dict[str, str]) -> None:
    settings = _settings(ledger_url, max_body_bytes=LIMIT)
    headers = {"x-api-key": ADMIN_KEY, **idempotent}
    upload = asyncio.run(_upload(settings, 20 * MIB, headers))
    assert upload.status == 413
    assert json.loads(upload.body)["error"]["type"] == "request_too_large"
    assert upload.read <= MIB  # the first chunk was over the limit: nothing more was read


def test_a_busy_gateway_claims_no_idempotency_key(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun: list[str] = []
    original = MemoryStore.begin

    async def begin(self: MemoryStore, key: str, fingerprint: str, ttl_s: float) -> Any:
        begun.append(key)
        return await original(self, key, fingerprint, ttl_s)

    monkeypatch.setattr(MemoryStore, "begin", begin)

    async def run() -> Upload:
        upload = Upload(100)
        async with _started(_settings(ledger_url, max_in_flight=1)) as (app, _):
            app.middleware_stack = app.build_middleware_stack()
            layer: Any = app.middleware_stack
            while not isinstance(layer, AdmissionControl):
                layer = layer.app
            layer.in_flight = 1  # one request is running: a new one is refused
            headers = {"x-api-key": ADMIN_KEY, "idempotency-key": "busy-1"}
            await app(_scope("/v1/messages", headers), upload.receive, upload.send)
        return upload

    upload = asyncio.run(run())
    assert upload.status == 503
    assert begun == [] and upload.read == 0


def test_an_unauthenticated_request_claims_no_idempotency_key(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun: list[str] = []
    original = MemoryStore.begin

    async def begin(self: MemoryStore, key: str, fingerprint: str, ttl_s: float) -> Any:
        begun.append(key)
        return await original(self, key, fingerprint, ttl_s)

    monkeypatch.setattr(MemoryStore, "begin", begin)
    body = {"model": "gpt-4.1-mini", "messages": HELLO}
    with running_gateway(_settings(ledger_url)) as gw, gw.http() as http:
        bad = {"authorization": "Bearer tw_0000000000000000_nope", "idempotency-key": "who-1"}
        assert http.post("/v1/chat/completions", json=body, headers=bad).status_code == 401
        assert begun == []
        gw.openai_fake.reply_completion(ofx.completion("mine"))
        good = {"authorization": f"Bearer {ADMIN_KEY}", "idempotency-key": "who-1"}
        reply = http.post("/v1/chat/completions", json=body, headers=good)
    assert reply.status_code == 200 and "idempotent-replayed" not in reply.headers
    assert begun == ["admin:who-1"]


# --- JSON depth ---------------------------------------------------------------------------


@pytest.fixture
def gw(ledger_url: str) -> Iterator[Served]:
    with running_gateway(_settings(ledger_url)) as served:
        yield served


def _post(gw: Served, path: str, content: bytes, **headers: str) -> httpx2.Response:
    sent = {"authorization": f"Bearer {ADMIN_KEY}", "anthropic-version": "2023-06-01"}
    with gw.http() as http:
        return http.post(path, content=content, headers=sent | headers)


DEEP_CASES = [
    ("/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": HELLO}),
    ("/v1/chat/completions", {"model": "gpt-4.1-mini", "messages": HELLO}),
    ("/v1/messages/count_tokens", {"model": "claude-haiku-4-5", "messages": HELLO}),
]


@pytest.mark.parametrize(("path", "body"), DEEP_CASES, ids=["anthropic", "openai", "count"])
@pytest.mark.parametrize("depth", [65, 5000])
@pytest.mark.parametrize(
    "extra",
    [{}, {"idempotency-key": "deep-1"}, {"idempotency-key": "deep-2", "content-type": "text/x"}],
    ids=["plain", "idempotent", "idempotent-text"],
)
def test_json_nested_too_deep_is_a_400(
    gw: Served, path: str, body: dict[str, Any], depth: int, extra: dict[str, str]
) -> None:
    reply = _post(gw, path, _deep_body(body, depth), **extra)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "nested deeper than 64 levels" in error["message"]
    assert gw.anthropic_fake.requests == [] and gw.openai_fake.requests == []


def test_every_authenticated_path_refuses_a_missing_key_and_health_stays_open(gw: Served) -> None:
    with gw.http() as http:
        for method, path in [
            ("POST", "/v1/messages/count_tokens"),
            ("POST", "/v1/tierwise/feedback"),
            ("GET", "/v1/models"),
            ("GET", "/metrics"),
            ("GET", "/v1/no-such-path"),  # unknown paths do not reveal themselves either
        ]:
            reply = http.request(method, path, content=b"{}")
            assert reply.status_code == 401, path
            assert "missing API key" in reply.json()["error"]["message"]
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        counted = http.post(
            "/v1/messages/count_tokens",
            json={"model": "claude-haiku-4-5", "messages": HELLO},
            headers={"x-api-key": ADMIN_KEY},
        )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


def test_a_claude_code_body_is_within_the_depth_limit(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("fine"))
    content = json.dumps(afx.claude_code_request()).encode()
    reply = _post(gw, "/v1/messages", content, **{"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert len(gw.anthropic_fake.requests) == 1


@pytest.mark.parametrize("content", [b"not json at all", b"[1, 2]", b"\xff\xfe{"])
def test_an_idempotent_body_that_is_not_a_json_object_is_a_400(gw: Served, content: bytes) -> None:
    reply = _post(gw, "/v1/chat/completions", content, **{"idempotency-key": "text-1"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


# --- Idempotency-Key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"k" * 256,
        "caf\u00e9".encode("latin-1"),
        "\u043a\u043b\u044e\u0447".encode(),
        b"tab\tkey",
        b"",
    ],
    ids=["256-chars", "latin-1", "utf-8", "control", "empty"],
)
def test_an_idempotency_key_it_cannot_honour_is_a_400(gw: Served, value: bytes) -> None:
    gw.openai_fake.reply_completion(ofx.completion("should not run"))
    body = json.dumps({"model": "gpt-4.1-mini", "messages": HELLO}).encode()
    with gw.http() as http:
        reply = http.post(
            "/v1/chat/completions",
            content=body,
            headers=[
                (b"authorization", f"Bearer {ADMIN_KEY}".encode()),
                (b"content-type", b"application/json"),
                (b"idempotency-key", value),
            ],
        )
    assert reply.status_code == 400
    assert "Idempotency-Key must be 1 to 255 printable ASCII" in reply.json()["error"]["message"]
    assert gw.openai_fake.requests == []


def test_a_key_of_255_characters_is_honoured(gw: Served) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("once"))
    client = gw.anthropic(default_headers={"idempotency-key": "k" * 255})
    for _ in range(2):
        reply = client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
        assert reply.content[0].text == "once"  # type: ignore[union-attr]
    assert len(gw.anthropic_fake.requests) == 1


def test_two_idempotency_keys_are_a_400(gw: Served) -> None:
    body = json.dumps({"model": "gpt-4.1-mini", "messages": HELLO}).encode()
    with gw.http() as http:
        reply = http.post(
            "/v1/chat/completions",
            content=body,
            headers=[
                ("authorization", f"Bearer {ADMIN_KEY}"),
                ("idempotency-key", "one"),
                ("idempotency-key", "two"),
            ],
        )
    assert reply.status_code == 400
    assert gw.openai_fake.requests == []


def test_a_stored_answer_is_not_replayed_after_its_key_is_revoked(ledger_url: str) -> None:
    token = _create_key(ledger_url, "temp")
    with running_gateway(_settings(ledger_url, key_cache_s=60)) as gw:
        gw.openai_fake.reply_completion(ofx.completion("stored"))
        client = gw.openai(key=token, default_headers={"idempotency-key": "revoke-1"})
        first = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
        assert first.choices[0].message.content == "stored"
        with Ledger.open(ledger_url) as ledger:
            KeyStore(ledger).revoke("temp")
        with pytest.raises(openai.AuthenticationError):  # the cache (60 s) still trusts it
            client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
        with pytest.raises(openai.AuthenticationError):  # and now it does not either
            gw.openai(key=token).chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert len(gw.openai_fake.requests) == 1


def test_a_replay_for_a_valid_key_still_works_past_the_cache(ledger_url: str) -> None:
    token = _create_key(ledger_url, "kept")
    with running_gateway(_settings(ledger_url, key_cache_s=60)) as gw:
        gw.anthropic_fake.reply_message(afx.text_message("kept"))
        client = gw.anthropic(key=token, default_headers={"idempotency-key": "keep-1"})
        for _ in range(2):
            raw = client.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=5, messages=HELLO
            )
        assert raw.headers["idempotent-replayed"] == "true"
        assert raw.parse().content[0].text == "kept"  # type: ignore[union-attr]
    assert len(gw.anthropic_fake.requests) == 1


def test_keys_are_scoped_by_the_stored_key_not_the_header(ledger_url: str) -> None:
    """Two keys using one Idempotency-Key get their own answers; one key sending it through
    either header (Bearer or x-api-key) gets its own answer back."""
    first, second = _create_key(ledger_url, "first"), _create_key(ledger_url, "second")
    with running_gateway(_settings(ledger_url)) as gw:
        gw.anthropic_fake.reply_message(afx.text_message("first's"))
        gw.anthropic_fake.reply_message(afx.text_message("second's"))
        texts = []
        for client in (
            anthropic.Anthropic(base_url=gw.url, api_key=first, max_retries=0),
            anthropic.Anthropic(base_url=gw.url, api_key=second, max_retries=0),
            anthropic.Anthropic(base_url=gw.url, auth_token=first, max_retries=0),
        ):
            reply = client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=5,
                messages=HELLO,
                extra_headers={"idempotency-key": "shared-1"},
            )
            texts.append(reply.content[0].text)  # type: ignore[union-attr]
    assert texts == ["first's", "second's", "first's"]
    assert len(gw.anthropic_fake.requests) == 2


def test_an_over_budget_request_leaves_its_key_free_for_a_retry(ledger_url: str) -> None:
    token = _create_key(ledger_url, "capped", Limits(tokens_total=10))
    with running_gateway(_settings(ledger_url, key_cache_s=0)) as gw:
        client = gw.openai(key=token, default_headers={"idempotency-key": "budget-1"})
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO, max_tokens=50)
        with Ledger.open(ledger_url) as ledger:
            KeyStore(ledger).set_limits("capped", None)
        gw.openai_fake.reply_completion(ofx.completion("now"))
        reply = client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content == "now"
    assert len(gw.openai_fake.requests) == 1


# --- the reading functions ----------------------------------------------------------------


def test_the_depth_limit_counts_the_body_as_level_one() -> None:
    at_limit = _deep_body({"model": "m"}, 64)
    assert parse_json(at_limit, 64)["model"] == "m"
    with pytest.raises(InvalidRequestError, match="nested deeper than 64 levels"):
        parse_json(_deep_body({"model": "m"}, 65), 64)
    objects = '{"a":' * 9 + "1" + "}" * 9  # objects count as arrays do
    assert parse_json(objects.encode(), 9) and not check_depth(json.loads(objects), 9)
    with pytest.raises(InvalidRequestError):
        check_depth(json.loads(objects), 8)


def test_a_body_of_too_many_values_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reading, "MAX_JSON_VALUES", 1000)
    empties = b'{"model": "m", "x": [' + b"[]," * 2000 + b"[]]}"
    with pytest.raises(RequestTooLargeError, match="more than 1000 JSON values"):
        parse_json(empties, 64)
    prose = json.dumps({"model": "m", "text": "word " * 2000}).encode()  # long, few values
    assert parse_json(prose, 64)["model"] == "m"


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"text": "[[[[{{{{" * 100, "list": [[1]]}).encode()
    assert parse_json(body, 3)["list"] == [[1]]
    with pytest.raises(InvalidRequestError):
        parse_json(body, 2)


def test_the_memory_store_keeps_a_bounded_number_of_answer_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency, "MEMORY_BYTES", 250)
    store = MemoryStore()

    async def run() -> list[Any]:
        await store.begin("running", "f", 60)  # a claim still running is never dropped
        for name in ("a", "b", "c"):
            await store.begin(name, "f", 60)
            await store.finish(name, Stored(200, [], b"x" * 100), 60)
        return [await store.begin(name, "f", 60) for name in ("a", "b", "c")]

    dropped, *kept = asyncio.run(run())
    assert dropped is None  # the oldest answer made room: claimed anew
    assert [stored.body for stored in kept] == [b"x" * 100] * 2
    assert store.size == 200 and "running" in store.entries


def test_a_served_gateway_answers_an_unauthenticated_upload_before_it_is_sent(
    gw: Served,
) -> None:
    """Through uvicorn: the 401 arrives while 19 of the upload's 20 MiB are still unsent."""
    host, port = gw.url.removeprefix("http://").split(":")
    head = (
        "POST /v1/messages HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        f"x-api-key: tw_0000000000000000_forged\r\nidempotency-key: up-1\r\n"
        f"content-length: {20 * MIB}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(head.encode() + b"x" * MIB)
        answer = conn.recv(4096)
        while b"}}" not in answer:  # the envelope's end (the body may come in its own packet)
            answer += conn.recv(4096) or b"}}"
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"invalid API key" in answer
