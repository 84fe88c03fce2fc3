"""Gateway auth (admin key, stored keys, allow-lists, revocation), health and metrics."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from pathlib import Path

import anthropic
import openai
import pytest
import redis
import typer
from sqlalchemy import create_engine, text
from starlette.datastructures import Headers
from typer.testing import CliRunner

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tierwise.cli import main as cli_main
from tierwise.cli.serve_cmd import register
from tierwise.config import load_settings
from tierwise.errors import AuthThrottledError, ConfigError, InvalidRequestError, UnauthorizedError
from tierwise.gateway.auth import ADMIN, ANONYMOUS, Authenticator
from tierwise.gateway.clients import UNKNOWN, TrustedProxies, throttle_key
from tierwise.gateway.keys import KeyStore
from tierwise.gateway.throttle import FailureThrottle
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


# --- failed key checks are throttled per client address -----------------------------------------

GUESS_LIMIT = 3


@pytest.fixture
def strict(ledger_url: str) -> Iterator[Served]:
    """A gateway allowing three failed key checks a minute per address."""
    gateway = {"auth_failures": GUESS_LIMIT, "auth_failure_window_s": 60, "key_cache_s": 0}
    with running_gateway(gateway_settings(ledger_url, gateway=gateway)) as served:
        yield served


def test_openai_sdk_guesses_are_throttled_even_for_the_right_key(strict: Served) -> None:
    for i in range(GUESS_LIMIT):
        with pytest.raises(openai.AuthenticationError):
            strict.openai(key=f"guess-{i}").chat.completions.create(
                model="gpt-4.1-mini", messages=HELLO
            )
    with pytest.raises(openai.RateLimitError) as caught:
        strict.openai().chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "rate_limit_error"
    assert error["message"].startswith("too many failed key checks from your address")
    assert strict.openai_fake.requests == []


def test_anthropic_sdk_guesses_are_throttled_in_its_envelope(strict: Served) -> None:
    for i in range(GUESS_LIMIT):
        with pytest.raises(anthropic.AuthenticationError):
            strict.anthropic(key=f"guess-{i}").messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=HELLO
            )
    with pytest.raises(anthropic.RateLimitError) as caught:
        strict.anthropic().messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": caught.value.body["error"]["message"]},
    }
    assert "too many failed key checks" in caught.value.body["error"]["message"]
    assert strict.anthropic_fake.requests == []


ENDPOINTS = [
    ("POST", "/v1/messages/count_tokens", {"model": "claude-haiku-4-5", "messages": HELLO}),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("POST", "/v1/tierwise/feedback", {"task_id": "t", "correct": True}),
]


def test_every_endpoint_counts_and_refuses_guesses(strict: Served, ledger_url: str) -> None:
    """Guesses spread over the endpoints add up; then each refuses the address, even a good
    stored key, until the window frees."""
    token = _create_key(ledger_url, "good")
    with strict.http() as http:

        def ask(endpoint: tuple[str, str, object], key: str) -> int:
            method, path, body = endpoint
            headers = {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
            return http.request(method, path, json=body, headers=headers).status_code

        assert [ask(e, "tw_guess_guess") for e in ENDPOINTS[:GUESS_LIMIT]] == [401] * GUESS_LIMIT
        for endpoint in ENDPOINTS:
            reply = http.request(
                endpoint[0], endpoint[1], json=endpoint[2], headers={"x-api-key": token}
            )
            assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
            assert "too many failed key checks" in reply.json()["error"]["message"]


def test_a_good_stored_key_does_not_reset_the_count(strict: Served, ledger_url: str) -> None:
    token = _create_key(ledger_url, "holder")
    with strict.http() as http:
        for i in range(GUESS_LIMIT):
            assert http.get("/v1/models", headers={"x-api-key": token}).status_code == 200
            assert http.get("/v1/models", headers={"x-api-key": f"g{i}"}).status_code == 401
        assert http.get("/v1/models", headers={"x-api-key": token}).status_code == 429


def test_concurrent_guesses_cannot_outrun_the_count(strict: Served, ledger_url: str) -> None:
    """Stored-key guesses wait on the database; sent at once, no more than the limit pass
    before they are counted, and many requests at once with one good key are not refused."""
    token = _create_key(ledger_url, "busy")
    key_id = token.split("_")[1]

    def ask(key: str) -> int:
        with strict.http() as http:
            return http.get("/v1/models", headers={"x-api-key": key}).status_code

    with ThreadPoolExecutor(16) as pool:
        good = list(pool.map(ask, [token] * 32))
        guesses = list(pool.map(ask, [f"tw_{key_id}_guess{i:04d}" for i in range(32)]))
    assert good == [200] * 32
    assert guesses.count(401) <= GUESS_LIMIT and guesses.count(429) >= 32 - GUESS_LIMIT


def test_a_missing_key_is_not_counted(strict: Served) -> None:
    with strict.http() as http:
        assert {http.get("/v1/models").status_code for _ in range(GUESS_LIMIT + 2)} == {401}
        assert http.get("/v1/models", headers={"x-api-key": ADMIN_KEY}).status_code == 200


def test_a_trusted_proxy_s_client_address_is_throttled_not_the_proxy(ledger_url: str) -> None:
    gateway = {"auth_failures": GUESS_LIMIT, "trusted_proxies": ["127.0.0.0/8"]}
    with running_gateway(gateway_settings(ledger_url, gateway=gateway)) as gw, gw.http() as http:

        def ask(forwarded: str, key: str) -> int:
            headers = {"x-forwarded-for": forwarded, "x-api-key": key}
            return http.get("/v1/models", headers=headers).status_code

        # what the client wrote left of the proxy's own entry changes nothing
        spoofed = [ask(f"10.9.9.{i}, 203.0.113.7", "guess") for i in range(GUESS_LIMIT)]
        assert spoofed == [401] * GUESS_LIMIT
        assert ask("203.0.113.7", ADMIN_KEY) == 429
        assert ask("203.0.113.8", ADMIN_KEY) == 200  # another client behind the same proxy
        # IPv6 clients are counted by /64, a subscriber's usual share: rotating in it is no use
        rotated = [ask(f"2001:db8:0:7::{i + 1:x}", "guess") for i in range(GUESS_LIMIT)]
        assert rotated == [401] * GUESS_LIMIT
        assert ask("2001:db8:0:7:ffff::1", ADMIN_KEY) == 429
        assert ask("2001:db8:0:8::1", ADMIN_KEY) == 200


def test_ipv6_clients_are_throttled_by_their_64() -> None:
    assert throttle_key("203.0.113.9") == "203.0.113.9"
    assert (
        throttle_key("2001:db8:1:2:3:4:5:6")
        == throttle_key("2001:db8:1:2::9")
        == ("2001:db8:1:2::/64")
    )
    assert throttle_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert throttle_key("not:an:address") == "not:an:address"


async def test_requests_without_an_address_share_one_count() -> None:
    auth = Authenticator(
        enabled=True, admin_key=ADMIN_KEY, keys=None, throttle=FailureThrottle(GUESS_LIMIT, 60)
    )
    for _ in range(GUESS_LIMIT):
        with pytest.raises(UnauthorizedError):
            await auth.authenticate({"x-api-key": "guess"}, client=None)
    with pytest.raises(AuthThrottledError) as caught:
        await auth.authenticate({"x-api-key": ADMIN_KEY}, client=None)
    assert caught.value.status == 429 and 1 <= caught.value.retry_after_s <= 60
    assert await auth.authenticate({"x-api-key": ADMIN_KEY}, client="192.0.2.1") is ADMIN
    off = Authenticator(enabled=False, admin_key=None, keys=None)
    assert await off.authenticate({"x-api-key": "guess"}, client=None) is ANONYMOUS


# --- the client address ----------------------------------------------------------------------


def _proxies(*networks: str) -> TrustedProxies:
    return TrustedProxies(ip_network(n) for n in networks)


def test_forwarded_for_is_believed_only_from_a_trusted_peer() -> None:
    xff = {"x-forwarded-for": "198.51.100.1, 10.0.0.2"}
    assert TrustedProxies().client("192.0.2.9", xff) == "192.0.2.9"
    assert _proxies("10.0.0.0/8").client("192.0.2.9", xff) == "192.0.2.9"
    trusted = _proxies("10.0.0.0/8", "::1")
    assert trusted.client("10.0.0.1", xff) == "198.51.100.1"  # 10.0.0.2 is a proxy too
    assert trusted.client("10.0.0.1", {"x-forwarded-for": "10.0.0.3"}) == "10.0.0.3"
    assert trusted.client("10.0.0.1", {}) == "10.0.0.1"
    assert trusted.client("::1", {"x-forwarded-for": "2001:db8::1"}) == "2001:db8::1"
    assert trusted.client("::ffff:10.0.0.1", xff) == "198.51.100.1"  # an IPv4-mapped peer
    # an entry that is no address ends the walk at the proxy that passed it on
    assert trusted.client("10.0.0.1", {"x-forwarded-for": "rotate-me-1, 10.0.0.2"}) == "10.0.0.2"
    assert TrustedProxies().client(None, xff) == UNKNOWN
    ports = {"x-forwarded-for": "198.51.100.3:4711, [2001:db8::5]:443"}
    assert trusted.client("10.0.0.1", ports) == "2001:db8::5"  # ports some proxies add
    assert _proxies("10.0.0.0/8", "2001:db8::5").client("10.0.0.1", ports) == "198.51.100.3"
    repeated = Headers(
        raw=[(b"x-forwarded-for", b"198.51.100.4"), (b"x-forwarded-for", b"10.0.0.5")]
    )
    assert trusted.client("10.0.0.1", repeated) == "198.51.100.4"


def test_forwarded_proto_is_believed_only_from_a_trusted_peer() -> None:
    https = {"x-forwarded-proto": "https"}
    trusted = _proxies("10.0.0.0/8")
    assert trusted.https("http", "10.0.0.1", https)
    assert not trusted.https("http", "192.0.2.1", https)
    assert not TrustedProxies().https("http", "10.0.0.1", https)
    assert not trusted.https("http", "10.0.0.1", {"x-forwarded-proto": "https, http"})
    assert trusted.https("https", "192.0.2.1", {})


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[gateway]\ntrusted_proxies = ["10.0.0.0/8", "::1", "192.0.2.7"]\n')
    found = load_settings(config).gateway.trusted_proxies
    assert [str(n) for n in found] == ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]
    for bad in ("proxy.example", "10.0.0.1/8"):
        config.write_text(f'[gateway]\ntrusted_proxies = ["{bad}"]\n')
        with pytest.raises(ConfigError, match="trusted_proxies"):
            load_settings(config)


# --- counted together through Redis -----------------------------------------------------------

REDIS_URL = os.environ.get("TIERWISE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    prefix = f"tierwise-test:{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    try:
        yield prefix
    finally:
        if keys := list(client.scan_iter(match=f"{prefix}*")):
            client.delete(*keys)
        client.close()


def test_instances_sharing_redis_count_guesses_together(tmp_path: Path, redis_prefix: str) -> None:
    gateway = {
        "auth_failures": GUESS_LIMIT,
        "rate_limit_store": REDIS_URL,
        "budgets": {"redis_prefix": redis_prefix},
    }
    settings = gateway_settings(f"sqlite:///{tmp_path / 'shared.db'}", gateway=gateway)

    def ask(gw: Served, key: str) -> int:
        with gw.http() as http:
            return http.get("/v1/models", headers={"x-api-key": key}).status_code

    with running_gateway(settings) as a, running_gateway(settings) as b:
        # two guesses on each: neither instance alone is past the limit of three
        assert [ask(gw, "guess") for gw in (a, b, a, b)] == [401] * 4
        assert ask(b, ADMIN_KEY) == 429  # b saw the shared count pass the limit
        assert ask(a, ADMIN_KEY) == 200  # a has not heard yet: its next guess tells it
        assert ask(a, "guess") == 401
        assert ask(a, ADMIN_KEY) == 429


def test_with_redis_down_failures_are_counted_per_process(ledger_url: str) -> None:
    gateway = {"auth_failures": GUESS_LIMIT, "rate_limit_store": "redis://127.0.0.1:1/0"}
    with running_gateway(gateway_settings(ledger_url, gateway=gateway)) as gw, gw.http() as http:
        statuses = [http.get("/v1/models", headers={"x-api-key": "g"}).status_code for _ in "abcd"]
    assert statuses == [401, 401, 401, 429]
