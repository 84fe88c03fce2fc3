"""Secrets never leave: an upstream echoing its key, a store that is down, local hosts.

The gateway is served as ``tierwise serve`` builds it (providers from the config rows, over
the direct transport or the SDKs) in front of :class:`tests.fakes.echoing.EchoingUpstream`
on a loopback port, whose every error echoes the key it was sent. Neither the real SDK
clients, nor the ledger, nor ``tierwise export``, nor the logs may then hold any part of it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.fakes import openai_upstream as fo
from tests.fakes.echoing import STYLES, EchoingUpstream
from tests.fakes.loopback import serve
from tests.fakes.tcp_proxy import TcpProxy
from tests.gateway_harness import ADMIN_KEY, serve_app
from tests.test_cli import tierwise
from tests.test_ledger import postgres_url
from tierwise import config
from tierwise.config import Settings, load_settings
from tierwise.engine import Engine
from tierwise.errors import AuthenticationError, BudgetUnavailableError, LedgerError
from tierwise.gateway.app import create_app
from tierwise.gateway.failures import failure
from tierwise.gateway.keys import KeyStore
from tierwise.ledger import CallRecord, Ledger, TaskRecord
from tierwise.messages import Request, Response
from tierwise.redaction import REDACTED, Redactor

__all__ = ["postgres_url"]  # a fixture, used by name

OPENAI_CORE, ANTHROPIC_CORE = "Zq8vT4kWm5", "Hy3pR7cNd2"
"""A run of each key that reads the same plain, URL-encoded and JSON-escaped: any echo of
the key, in any encoding, contains it."""
OPENAI_KEY = f'sk-proj-{OPENAI_CORE}/+"\\9xT='
ANTHROPIC_KEY = f"sk-ant-api03-{ANTHROPIC_CORE}/+&=~Lq'"
CORES = (OPENAI_CORE, ANTHROPIC_CORE)
OPENAI_MODEL, ANTHROPIC_MODEL = "openai:gpt-4.1-mini", "anthropic:claude-haiku-4-5"
HELLO = [{"role": "user", "content": "hi"}]
STATUSES = (401, 400, 500)


def leaks(text: str) -> list[str]:
    return [core for core in CORES if core in text]


@pytest.fixture
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers' keys in their usual environment variables (the CLI inherits them)."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


def _settings(tmp_path: Path, upstream: str, http: str, **flags: Any) -> Settings:
    rows = {"max_retries": 0, "http": http}
    return load_settings(
        None,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        admin_key=ADMIN_KEY,
        providers={
            "openai": {"base_url": f"{upstream}/v1", **rows},
            "anthropic": {"base_url": upstream, **rows},
        },
        failover={"failure_threshold": 1000},
        **flags,
    )


@contextmanager
def _gateway(settings: Settings) -> Iterator[str]:
    """The gateway as ``tierwise serve`` builds it: no engine handed in."""
    with serve_app(create_app(settings)) as url:
        yield url


def _error_text(exc: openai.APIError | anthropic.APIError) -> str:
    """Everything a client sees of an error: its text, body and raw response."""
    response = getattr(exc, "response", None)
    raw = response.text if response is not None and not response.is_stream_consumed else ""
    return f"{exc} {exc.body!r} {raw}"


def _ask_openai(url: str, model: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
    try:
        if stream:
            for _ in client.chat.completions.create(model=model, messages=HELLO, stream=True):
                pass
        else:
            client.chat.completions.create(model=model, messages=HELLO)
    except openai.APIError as exc:
        return _error_text(exc)
    raise AssertionError("the echoing upstream answered")


def _ask_anthropic(url: str, model: str, stream: bool) -> str:
    client = anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0)
    try:
        if stream:
            with client.messages.stream(model=model, max_tokens=16, messages=HELLO) as events:
                for _ in events:
                    pass
        else:
            client.messages.create(model=model, max_tokens=16, messages=HELLO)
    except anthropic.APIError as exc:
        return _error_text(exc)
    raise AssertionError("the echoing upstream answered")


def _cases() -> Iterator[tuple[int, str, bool]]:
    for index, style in enumerate(STYLES):
        for stream in (False, True):
            if style != "stream_event" or stream:
                yield STATUSES[index % len(STATUSES)], style, stream


@pytest.mark.usefixtures("provider_keys")
@pytest.mark.parametrize("http", ["direct", "sdk"])
def test_an_echoed_provider_key_reaches_no_client_ledger_export_or_log(
    http: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = EchoingUpstream()
    seen: list[str] = []
    with serve(fake.handler) as upstream:
        settings = _settings(tmp_path, upstream, http)
        with _gateway(settings) as url:
            for status, style, stream in _cases():
                fake.set(status, style)
                for model in (OPENAI_MODEL, ANTHROPIC_MODEL):
                    seen.append(_ask_openai(url, model, stream))
                    seen.append(_ask_anthropic(url, model, stream))
    assert OPENAI_KEY in fake.keys and ANTHROPIC_KEY in fake.keys  # it had them to echo
    assert [leaks(text) for text in seen] == [[]] * len(seen)
    assert sum(REDACTED in text for text in seen) >= len(seen) // 2  # the rest: no message
    with Ledger.open(settings.resolved_ledger_url()) as ledger:
        calls = ledger.calls()
        stored = [r.model_dump_json() for r in [*calls, *ledger.escalations(), *ledger.outcomes()]]
    assert len(calls) == len(seen) and all(call.status == "error" for call in calls)
    assert leaks("\n".join(stored)) == []
    traces = tmp_path / "traces.jsonl"
    exported = tierwise("--ledger", settings.resolved_ledger_url(), "export", "--out", str(traces))
    assert exported.returncode == 0, exported.stderr
    assert len(traces.read_text().splitlines()) == len(seen)
    assert leaks(traces.read_text()) == []
    assert leaks(caplog.text) == []


# --- the second line: records and exports, whichever provider made them ---------------------


class _CarelessProvider:
    """A provider of the caller's own (no redaction of its own) whose error holds the key."""

    name = "openai"

    async def complete(self, request: Request, model: Any) -> Response:
        raise AuthenticationError(f"bad key {OPENAI_KEY}", provider="openai", status=401)

    def stream(self, request: Request, model: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


@pytest.mark.usefixtures("provider_keys")
async def test_a_failed_call_is_stored_without_the_key(settings: Settings) -> None:
    async with Engine(settings, providers={"openai": _CarelessProvider()}) as engine:
        with pytest.raises(AuthenticationError):
            await engine.complete("hi", f"fixed:{OPENAI_MODEL}")
        (call,) = engine.ledger.calls()
        (outcome,) = engine.ledger.outcomes()
    assert call.error_message == f"bad key {REDACTED}"
    assert outcome.outcome == "error" and REDACTED in outcome.detail and not leaks(outcome.detail)


@pytest.mark.usefixtures("provider_keys")
def test_export_redacts_a_key_stored_before(settings: Settings, tmp_path: Path) -> None:
    url = settings.resolved_ledger_url()
    task = TaskRecord(policy="fixed", source="cli", prompt_text=f"my key is {ANTHROPIC_KEY}")
    call = CallRecord(
        task_id=task.id,
        role="executor",
        provider="openai",
        model="gpt-4.1-mini",
        status="error",
        error_message=f"invalid key {json.dumps(OPENAI_KEY)[1:-1]} (was {OPENAI_KEY})",
    )
    with Ledger.open(url) as ledger:
        ledger.append(task, call)
    traces = tmp_path / "traces.jsonl"
    assert tierwise("--ledger", url, "export", "--out", str(traces)).returncode == 0
    (line,) = traces.read_text().splitlines()
    assert leaks(line) == []
    assert (
        json.loads(line)["calls"][0]["error_message"] == f"invalid key {REDACTED} (was {REDACTED})"
    )


@pytest.mark.usefixtures("provider_keys")
def test_tierwise_loggers_are_filtered_while_the_gateway_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("tierwise.gateway.anything")
    settings = _settings(tmp_path, "http://127.0.0.1:9", "direct")
    with _gateway(settings):
        try:
            try:
                raise OSError(f"driver: postgresql://u:pw-{ANTHROPIC_CORE}@db/x")
            except OSError as cause:
                raise RuntimeError(f"wrapped {OPENAI_KEY}") from cause
        except RuntimeError as exc:
            log.error("failed with %s and admin %s", OPENAI_KEY, ADMIN_KEY, exc_info=exc)
    assert caplog.records and leaks(caplog.text) == [] and ADMIN_KEY not in caplog.text
    assert "failed with [redacted] and admin [redacted]" in caplog.text
    assert "RuntimeError: wrapped [redacted]" in caplog.text
    assert not log.filters and not logging.getLogger("tierwise.gateway").filters  # undone


def test_the_redactor_knows_every_configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-key-from-the-environment")
    monkeypatch.setenv("https_proxy", "http://me:proxy-pass-5@proxy.corp:3128")
    settings = load_settings(
        None,
        ledger_url="postgresql://tw:ledger-pass-1@db/tw",
        admin_key="tw-admin-secret-9",
        providers={
            "openrouter": {"api_key": "or-key-in-the-config", "headers": {"X-Title": "my app"}},
            "corp": {
                "kind": "openai",
                "base_url": "https://proxy:base-url-pass@llm.corp/v1?api_key=query-key-77",
                "headers": {"x-corp-token": "corp-header-token"},
            },
        },
        gateway={
            "budget_store": "redis://:budget-pass-2@redis:6379/0",
            "rate_limit_store": "redis://u:rate-pass-3@redis:6379/1",
            "idempotency": "rediss://:idem-pass-4@redis:6380/2",
        },
    )
    secrets = [
        "tg-key-from-the-environment",
        "ledger-pass-1",
        "tw-admin-secret-9",
        "or-key-in-the-config",
        "base-url-pass",
        "query-key-77",
        "corp-header-token",
        "budget-pass-2",
        "rate-pass-3",
        "idem-pass-4",
        "proxy-pass-5",
    ]
    redact = settings.redactor()
    text = " · ".join(secrets) + " · my app"
    assert redact(text) == " · ".join([REDACTED] * len(secrets)) + " · my app"


SECRET = 'a/b+c"d\\e&f=g:key'


@pytest.mark.parametrize(
    "echo",
    [
        SECRET,
        "a%2Fb%2Bc%22d%5Ce%26f%3Dg%3Akey",  # URL-encoded
        "a%2fb%2bc%22d%5ce%26f%3dg%3akey",  # ... in lower-case hex
        "a/b%2Bc%22d%5Ce%26f%3Dg%3Akey",  # ... keeping slashes
        json.dumps(SECRET)[1:-1],  # inside a JSON string
        json.dumps(SECRET)[1:-1].replace("/", "\\/"),  # ... with escaped slashes
        repr(SECRET)[1:-1],  # inside a Python repr (a dict printed in a message)
    ],
)
def test_a_secret_is_found_in_its_encodings(echo: str) -> None:
    redact = Redactor([SECRET])
    assert redact(f"upstream said: {echo}.") == f"upstream said: {REDACTED}."


def test_url_passwords_are_hidden_and_short_values_left_alone() -> None:
    redact = Redactor(["abc", None, ""])
    assert len(redact) == 0
    text = "redis://:hunter2@10.0.0.1:6379 and postgresql+psycopg://me:p@db/x, abc"
    assert (
        redact(text)
        == f"redis://:{REDACTED}@10.0.0.1:6379 and postgresql+psycopg://me:{REDACTED}@db/x, abc"
    )


# --- stores that are down: 503, a request id, the detail only in the log ---------------------


def test_a_ledger_down_is_a_503_with_a_request_id_and_no_detail(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_ledger_writebehind import _pg_schema  # noqa: PLC0415

    password = "pg-Secret-Pw-4242"
    with TcpProxy(5432) as relay, _pg_schema(postgres_url, relay.port) as schema_url:
        url = schema_url.replace("://postgres@", f"://postgres:{password}@")
        with Ledger.open(url) as ledger:
            token = KeyStore(ledger).create("ci").token
        settings = load_settings(
            None, ledger_url=url, admin_key=ADMIN_KEY, gateway={"write_behind": False}
        )
        with _gateway(settings) as gateway_url:
            relay.cut()
            client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=token, max_retries=0)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model=OPENAI_MODEL, messages=HELLO)
            probe = httpx2.get(f"{gateway_url}/readyz", timeout=10)
            relay.restore()
    response = caught.value.response
    request_id = response.headers["x-request-id"]
    assert caught.value.status_code == 503
    message = response.json()["error"]["message"]
    assert message == f"ledger unavailable; retry later (request id {request_id})"
    for detail in ("postgres", "psycopg", "127.0.0.1", str(relay.port), password, "refused"):
        assert detail not in response.text and detail not in probe.text
    assert probe.status_code == 503 and probe.json()["status"] == "unavailable"
    assert set(probe.json()) == {"status", "request_id"}  # the id of the probe's log line
    assert probe.json()["request_id"] in caplog.text
    (logged,) = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged.levelno == logging.ERROR and "unreachable" in logged.getMessage()
    assert password not in caplog.text


def test_an_idempotency_store_down_is_a_503_with_a_request_id_and_no_detail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        None,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        admin_key=ADMIN_KEY,
        gateway={"idempotency": "redis://:idem-Secret-77@127.0.0.1:1/0"},
    )
    with _gateway(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model=OPENAI_MODEL, messages=HELLO, extra_headers={"Idempotency-Key": "k-1"}
            )
    response = caught.value.response
    request_id = response.headers["x-request-id"]
    assert caught.value.status_code == 503
    assert response.json()["error"]["message"] == (
        f"Idempotency-Key store unavailable; retry later (request id {request_id})"
    )
    for detail in ("127.0.0.1", "Error", "redis", "idem-Secret-77"):
        assert detail not in response.text
    (logged,) = [r for r in caplog.records if request_id in r.getMessage()]
    assert "127.0.0.1" in logged.getMessage() and "idem-Secret-77" not in caplog.text


# --- local hosts: nothing reachable the operator did not name -------------------------------


@contextmanager
def _listener() -> Iterator[tuple[str, list[object]]]:
    """A loopback port that records every connection made to it (and answers none)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.05)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


LOCAL_MODEL = "ollama:llama3.1:8b"


def test_a_local_host_not_named_in_the_config_is_not_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _listener() as (local_url, accepted):
        monkeypatch.setitem(config.LOCAL_PROVIDERS["ollama"], "base_url", local_url)
        settings = load_settings(
            None, ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}", admin_key=ADMIN_KEY
        )
        with _gateway(settings) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
            listed = [m.id for m in client.models.list()]
            for model in (LOCAL_MODEL, "llama3.1:8b"):
                with pytest.raises(openai.NotFoundError, match="unknown model"):
                    client.chat.completions.create(model=model, messages=HELLO)
            with pytest.raises(anthropic.NotFoundError, match="unknown model"):
                anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0).messages.create(
                    model=LOCAL_MODEL, max_tokens=16, messages=HELLO
                )
    assert accepted == []
    assert not any("ollama" in m or "llama3.1" in m for m in listed)


def test_a_local_host_named_in_the_config_is_served(tmp_path: Path) -> None:
    fake = fo.FakeOpenAI().reply_completion(fo.completion("local answer"))
    with serve(fake.handler) as upstream:
        settings = load_settings(
            None,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            admin_key=ADMIN_KEY,
            providers={"ollama": {"base_url": f"{upstream}/v1"}},
        )
        with _gateway(settings) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN_KEY, max_retries=0)
            answer = client.chat.completions.create(model=LOCAL_MODEL, messages=HELLO)
            listed = [m.id for m in client.models.list()]
    assert answer.choices[0].message.content == "local answer"
    assert fake.last_request.json()["model"] == "llama3.1:8b"
    assert any("llama3.1:8b" in m for m in listed)


def test_an_empty_table_or_an_env_var_enables_a_local_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[providers.llamacpp]\n")
    assert "llamacpp" in load_settings(path).providers
    monkeypatch.setenv("TIERWISE_PROVIDERS__VLLM__BASE_URL", "http://127.0.0.1:9/v1")
    assert {"vllm", "llamacpp"} <= set(load_settings(path).providers)
    assert "ollama" not in load_settings(path).providers


def test_the_cli_says_how_to_enable_a_local_host(tmp_path: Path) -> None:
    result = tierwise("ask", "-m", LOCAL_MODEL, "hi")
    assert result.returncode == 2
    assert "[providers.ollama]" in result.stderr and "TIERWISE_PROVIDERS__OLLAMA__" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("exc", "store"),
    [
        (
            LedgerError("ledger database unreachable at postgresql://u:***@db:5432/x: refused"),
            "ledger",
        ),
        (
            BudgetUnavailableError("the budget store (Redis) is unavailable: Error 111"),
            "budget store",
        ),
    ],
)
def test_a_store_down_is_named_not_described(
    exc: Exception, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    found = failure(exc)
    assert found.status == 503 and found.request_id is not None
    assert found.message == f"{store} unavailable; retry later (request id {found.request_id})"
    (logged,) = caplog.records
    assert found.request_id in logged.getMessage() and str(exc) in logged.getMessage()


def test_an_unexpected_error_is_a_500_whose_traceback_is_logged_under_its_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = failure(KeyError("internal detail"))
    assert found.status == 500 and found.request_id is not None
    assert "internal detail" not in found.message and found.request_id in found.message
    (logged,) = caplog.records
    assert found.request_id in logged.getMessage() and logged.exc_info is not None
