"""Gateway auth (admin key, stored keys, allow-lists, revocation), health and metrics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tierwise.cli import main as cli_main
from tierwise.cli.serve_cmd import register
from tierwise.config import load_settings
from tierwise.errors import InvalidRequestError
from tierwise.gateway.keys import KeyStore
from tierwise.ledger.store import Ledger

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def gw(ledger_url: str) -> Iterator[Served]:
    with running_gateway(gateway_settings(ledger_url, gateway={"key_cache_s": 0})) as served:
        yield served


def _create_key(ledger_url: str, name: str, models: list[str] | None = None) -> str:
    with Ledger.open(ledger_url) as ledger:
        return KeyStore(ledger).create(name, models or []).token


def test_missing_key_is_a_401_in_each_envelope(gw: Served) -> None:
    with gw.http() as http:
        anthropic_reply = http.post(
            "/v1/messages",
            json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": HELLO},
            headers={"anthropic-version": "2023-06-01"},
        )
        openai_reply = http.post(
            "/v1/chat/completions", json={"model": "gpt-4.1-mini", "messages": HELLO}
        )
    assert anthropic_reply.status_code == openai_reply.status_code == 401
    assert anthropic_reply.json()["error"]["type"] == "authentication_error"
    assert "Authorization: Bearer" in anthropic_reply.json()["error"]["message"]
    assert openai_reply.json()["error"]["code"] == "invalid_api_key"


def test_invalid_keys_are_401s_through_the_sdks(gw: Served, ledger_url: str) -> None:
    token = _create_key(ledger_url, "ci")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(anthropic.AuthenticationError):
        gw.anthropic(key=forged).messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=HELLO
        )
    with pytest.raises(openai.AuthenticationError):
        gw.openai(key="not-a-key").chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert gw.anthropic_fake.requests == [] and gw.openai_fake.requests == []


def test_stored_key_with_allow_list(gw: Served, ledger_url: str) -> None:
    token = _create_key(ledger_url, "haiku-only", ["anthropic:claude-haiku-*", "tierwise/auto"])
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    # Claude Code sends ANTHROPIC_AUTH_TOKEN as a bearer token
    client = anthropic.Anthropic(base_url=gw.url, auth_token=token, max_retries=0)
    assert client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    assert caught.value.body["error"]["type"] == "permission_error"
    assert "haiku-only" in caught.value.body["error"]["message"]
    listed = [m.id for m in gw.openai(key=token).models.list()]
    assert listed == ["tierwise/auto", "anthropic:claude-haiku-4-5"]
    assert len(gw.anthropic_fake.requests) == 1


def test_revoked_key_stops_working(gw: Served, ledger_url: str) -> None:
    token = _create_key(ledger_url, "temp")
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    client = gw.openai(key=token)
    assert client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    with Ledger.open(ledger_url) as ledger:
        KeyStore(ledger).revoke("temp")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)


def test_auth_off_needs_no_key(ledger_url: str) -> None:
    settings = gateway_settings(ledger_url, gateway={"auth": False})
    with running_gateway(settings) as gw:
        gw.openai_fake.reply_completion(ofx.completion("open"))
        reply = gw.openai(key="anything").chat.completions.create(
            model="gpt-4.1-mini", messages=HELLO
        )
    assert reply.choices[0].message.content == "open"


def test_health_ready_and_metrics(gw: Served, ledger_url: str) -> None:
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    gw.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
    user = _create_key(ledger_url, "user")
    with gw.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = {"status": "ready", "circuits": {"anthropic:claude-haiku-4-5": "closed"}}
        assert http.get("/readyz").json() == ready
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"x-api-key": user}).status_code == 403
        metrics = http.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    model = 'model="anthropic:claude-haiku-4-5"'
    assert f'tierwise_gateway_requests_total{{api="anthropic",{model},status="200"}} 1.0' in metrics
    assert f"tierwise_gateway_cost_usd_total{{{model}}} 8.5e-05" in metrics
    assert f'tierwise_gateway_tokens_total{{kind="input",{model}}} 25.0' in metrics
    assert "tierwise_gateway_overhead_seconds_bucket" in metrics


# --- key storage and the CLI --------------------------------------------------------------


def test_keys_are_stored_as_salted_hashes(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as ledger:
        store = KeyStore(ledger)
        first = store.create("a", ["openai:*"])
        second = store.create("b")
        with pytest.raises(InvalidRequestError, match="already exists"):
            store.create("a")
        assert store.verify(first.token) == first.key
        assert store.verify(first.token + "x") is None
        assert store.verify("tw_short_x") is None
    engine = create_engine(ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, salt, secret_hash FROM api_keys")).all()
    engine.dispose()
    secrets = {first.token.split("_", 2)[2], second.token.split("_", 2)[2]}
    assert len({salt for _, salt, _ in rows}) == 2
    for key_id, salt, digest in rows:
        secret = next(s for s in secrets if f"tw_{key_id}_{s}" in (first.token, second.token))
        assert digest == hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()
        assert secret not in digest


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(cli_main.main)
    register(app)
    return app


def test_keys_cli_create_list_revoke(ledger_url: str) -> None:
    runner = CliRunner()
    app = _cli()
    created = runner.invoke(
        app, ["--ledger", ledger_url, "keys", "create", "laptop", "-m", "tierwise/*"]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    with Ledger.open(ledger_url) as ledger:
        assert KeyStore(ledger).verify(token).models == ["tierwise/*"]
    listed = runner.invoke(app, ["--ledger", ledger_url, "keys", "list"])
    assert "laptop" in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    revoked = runner.invoke(app, ["--ledger", ledger_url, "keys", "revoke", "laptop"])
    assert revoked.exit_code == 0 and "revoked key 'laptop'" in revoked.stdout
    assert "revoked" in runner.invoke(app, ["--ledger", ledger_url, "keys", "list"]).stdout
    missing = runner.invoke(app, ["--ledger", ledger_url, "keys", "revoke", "nope"])
    assert isinstance(missing.exception, InvalidRequestError)


def test_admin_key_and_gateway_table_come_from_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[gateway]\nport = 9000\nmax_body_bytes = 1024\n")
    monkeypatch.setenv("TIERWISE_ADMIN_KEY", "from-the-environment")
    settings = load_settings(config)
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "from-the-environment"
    assert (settings.gateway.port, settings.gateway.max_body_bytes) == (9000, 1024)
    assert settings.gateway.auth and settings.gateway.host == "127.0.0.1"
    assert "from-the-environment" not in repr(settings)
