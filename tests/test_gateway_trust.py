"""The policy trust boundary: what a client's ``model`` field may run (issue 13, items 1-2).

A client sends a model id or a named policy; an inline expression only with a key allowed
them, and then only the safe subset. A key's allow-list is checked against every model the
policy may call, before the first call and on every call (failover included).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import typer
from typer.testing import CliRunner

from tests.fakes import anthropic_upstream as afx
from tests.fakes import openai_upstream as ofx
from tests.gateway_harness import ADMIN_KEY, Served, gateway_settings, running_gateway
from tierwise.cli import main as cli_main
from tierwise.cli.serve_cmd import register
from tierwise.errors import InvalidRequestError, PolicyNotAllowedError
from tierwise.gateway.keys import KeyStore
from tierwise.inline_policies import check_inline_policy
from tierwise.ledger.store import Ledger

HELLO = [{"role": "user", "content": "Hello"}]
HAIKU = "anthropic:claude-haiku-4-5"
OPUS = "anthropic:claude-opus-4-7"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def _settings(ledger_url: str, **flags: Any) -> Any:
    gateway = {"key_cache_s": 0, **flags.pop("gateway", {})}
    return gateway_settings(ledger_url, gateway=gateway, **flags)


@pytest.fixture
def gw(ledger_url: str) -> Iterator[Served]:
    policies = {"haiku-judged": f"cascade:{HAIKU}?gates=judge:{OPUS}", "cheap": f"fixed:{HAIKU}"}
    with running_gateway(_settings(ledger_url, policies=policies)) as served:
        yield served


def _key(ledger_url: str, name: str, models: list[str] | None = None, inline: bool = False) -> str:
    with Ledger.open(ledger_url) as ledger:
        return KeyStore(ledger).create(name, models or [], inline_policies=inline).token


def _error(caught: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body: dict[str, Any] = caught.value.body
    found: dict[str, Any] = body.get("error", body)
    return found


# --- nothing a client sends runs a command or touches a file ----------------------------------


def _executable_models(marker: Path) -> list[str]:
    return [
        f"tierwise/cascade:openai:gpt-4.1-mini?gates=command:touch {marker}",
        f"tierwise/cascade:openai:gpt-4.1-mini?gates=python,command:touch {marker}",
        "tierwise/cascade:openai:gpt-4.1-mini?gates=json_schema:/etc/passwd",
        f"tierwise/cascade:openai:gpt-4.1-mini?gates=python&workspace={marker.parent}",
        "tierwise/cascade:openai:gpt-4.1-mini?gates=regex:(a+)+$",
        "tierwise/route:learned?artifact=../../etc/passwd",
        "tierwise/route:learned?artifact=gsm8k",
    ]


@pytest.mark.parametrize("inline", [False, True])
def test_no_key_can_run_a_command_through_the_model_field(
    gw: Served, ledger_url: str, tmp_path: Path, inline: bool
) -> None:
    marker = tmp_path / "pwned"
    token = _key(ledger_url, "client", inline=inline)
    for model in _executable_models(marker):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            gw.openai(key=token).chat.completions.create(model=model, messages=HELLO)
        assert _error(caught)["code"] == "policy_not_allowed"
    assert not marker.exists()
    assert gw.openai_fake.requests == []


def test_the_admin_key_cannot_either_but_the_operators_named_policy_still_runs(
    ledger_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    policies = {"tested": f"cascade:openai:gpt-4.1-mini?gates=command:touch {marker}"}
    with running_gateway(_settings(ledger_url, policies=policies)) as gw:
        for model in _executable_models(tmp_path / "pwned"):
            with pytest.raises(openai.PermissionDeniedError):
                gw.openai().chat.completions.create(model=model, messages=HELLO)
        assert not (tmp_path / "pwned").exists()
        gw.openai_fake.reply_completion(ofx.completion("print(1)"))
        reply = gw.openai().chat.completions.create(model="tierwise/tested", messages=HELLO)
    assert reply.choices[0].message.content == "print(1)"
    assert marker.exists()  # the operator's command gate ran


def test_auth_off_does_not_widen_what_a_client_may_send(ledger_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with running_gateway(_settings(ledger_url, gateway={"auth": False})) as gw:
        with pytest.raises(openai.PermissionDeniedError):
            gw.openai(key="x").chat.completions.create(
                model=f"tierwise/cascade:openai:gpt-4.1-mini?gates=command:touch {marker}",
                messages=HELLO,
            )
        with pytest.raises(openai.PermissionDeniedError) as caught:
            gw.openai(key="x").chat.completions.create(
                model="tierwise/fixed:openai:gpt-4.1-mini", messages=HELLO
            )
    assert "inline-policies" in _error(caught)["message"]
    assert not marker.exists()


def test_count_tokens_and_the_messages_api_follow_the_same_rules(
    gw: Served, ledger_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    model = f"tierwise/cascade:{HAIKU}?gates=command:touch {marker}"
    client = gw.anthropic(key=_key(ledger_url, "claude"))
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.count_tokens(model=model, messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model=model, max_tokens=5, messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.body["error"]["type"] == "permission_error"
    assert not marker.exists()


def test_workspace_files_in_metadata_are_refused(gw: Served) -> None:
    with gw.http() as http:
        reply = http.post(
            "/v1/messages",
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 5,
                "messages": HELLO,
                "metadata": {"workspace_files": {"conftest.py": "import os"}},
            },
            headers={"x-api-key": ADMIN_KEY, "anthropic-version": "2023-06-01"},
        )
    assert reply.status_code == 403
    assert "workspace_files" in reply.json()["error"]["message"]
    assert gw.anthropic_fake.requests == []


# --- unknown or malformed parameters are errors, never ignored --------------------------------


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (f"tierwise/fixed:{OPUS}?x=haiku", "no parameter 'x'"),
        (f"tierwise/fixed:{HAIKU}?budget_usd=nan", "budget_usd"),
        (f"tierwise/fixed:{HAIKU}?budget_usd=inf", "budget_usd"),
        (f"tierwise/fixed:{HAIKU}?budget_usd=-1", "budget_usd"),
        ("tierwise/route:random?p=2", "p="),
        ("tierwise/route:nope", "unknown router"),
        (f"tierwise/cascade:{HAIKU}?max_escalations=1e9", "max_escalations"),
        (f"tierwise/cascade:{HAIKU}?gates=agree:1000", "agree"),
        ("tierwise/shell:rm -rf /", "unknown policy kind"),
    ],
)
def test_bad_inline_parameters_are_a_400(
    gw: Served, ledger_url: str, model: str, says: str
) -> None:
    token = _key(ledger_url, "power", inline=True)
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai(key=token).chat.completions.create(model=model, messages=HELLO)
    assert says in _error(caught)["message"]
    assert gw.openai_fake.requests == [] and gw.anthropic_fake.requests == []


def test_an_inline_key_runs_the_safe_subset(gw: Served, ledger_url: str) -> None:
    token = _key(ledger_url, "power", inline=True)
    gw.openai_fake.reply_completion(ofx.completion("ok"))
    reply = gw.openai(key=token).chat.completions.create(
        model="tierwise/fixed:openai:gpt-4.1-mini?budget_usd=0.5", messages=HELLO
    )
    assert reply.choices[0].message.content == "ok"


def test_the_safe_subset_by_itself() -> None:
    check_inline_policy(f"cascade:{HAIKU},{OPUS}?gates=python,json,confidence>=0.7,agree:3")
    check_inline_policy(f"cascade?gates=judge:{OPUS}&start=route:rules&retries=1")
    check_inline_policy(f"advisor:{HAIKU}?advisor={OPUS}&max_uses=2&caching=5m")
    check_inline_policy(f"plan:{OPUS}?executors={HAIKU}&replan_after=2")
    with pytest.raises(PolicyNotAllowedError):
        check_inline_policy(f"plan:{OPUS}?answer_file=../x.py")
    with pytest.raises(PolicyNotAllowedError):
        check_inline_policy("route:learned?artifact=gsm8k&target=0.9")
    with pytest.raises(InvalidRequestError):
        check_inline_policy(f"advisor:{HAIKU}?max_uses=-1")
    with pytest.raises(InvalidRequestError):
        check_inline_policy("fixed:" + "a" * 3000)


# --- allow-lists cover every model a policy may call -----------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        f"tierwise/fixed:{OPUS}?x=haiku",
        "tierwise/route:strongest",
        f"tierwise/route:cheapest?candidates={HAIKU},{OPUS}",
        f"tierwise/fixed:{HAIKU}?fallback={OPUS}",
        f"tierwise/cascade:{HAIKU},{OPUS}",
        f"tierwise/cascade:{HAIKU}?gates=judge:{OPUS}",
        f"tierwise/advisor:{HAIKU}?advisor={OPUS}",
        f"tierwise/plan:{OPUS}?executors={HAIKU}",
        "tierwise/haiku-judged",
        "haiku-judged",
        "tierwise/advisor",
    ],
)
def test_a_haiku_key_never_reaches_another_model(gw: Served, ledger_url: str, model: str) -> None:
    token = _key(ledger_url, "haiku", ["*haiku*"], inline=True)
    with pytest.raises(anthropic.APIStatusError) as caught:
        gw.anthropic(key=token).messages.create(model=model, max_tokens=5, messages=HELLO)
    assert caught.value.status_code in (400, 403)
    if caught.value.status_code == 403:
        assert "claude-haiku" not in caught.value.body["error"]["message"].split("model ")[1][:30]
    assert gw.anthropic_fake.requests == []


def test_a_refusal_names_the_model_that_is_not_allowed(gw: Served, ledger_url: str) -> None:
    token = _key(ledger_url, "haiku", ["*haiku*"], inline=True)
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        gw.anthropic(key=token).messages.create(
            model=f"tierwise/fixed:{HAIKU}?fallback={OPUS}", max_tokens=5, messages=HELLO
        )
    message = caught.value.body["error"]["message"]
    assert f"may not use model '{OPUS}'" in message
    assert caught.value.body["error"]["type"] == "permission_error"


def test_an_advisor_tool_naming_a_model_outside_the_scope_is_refused(
    gw: Served, ledger_url: str
) -> None:
    token = _key(ledger_url, "haiku", ["*haiku*"])
    tool = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}
    with gw.http() as http:
        reply = http.post(
            "/v1/messages",
            json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": HELLO, "tools": [tool]},
            headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
        )
    assert reply.status_code == 403
    assert OPUS in reply.json()["error"]["message"]
    assert gw.anthropic_fake.requests == []


def test_a_failover_never_leaves_the_keys_scope(ledger_url: str) -> None:
    settings = _settings(ledger_url, failover={"fallbacks": {HAIKU: [OPUS]}})
    with running_gateway(settings) as gw:
        token = _key(ledger_url, "haiku", ["*haiku*"])
        gw.anthropic_fake.reply_error(529, "overloaded_error", "Overloaded")
        with pytest.raises(anthropic.APIStatusError) as caught:
            gw.anthropic(key=token).messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=HELLO
            )
        models = {r.json()["model"] for r in gw.anthropic_fake.requests}
        # the admin key may fail over to Opus
        gw.anthropic_fake.reply_error(529, "overloaded_error", "Overloaded")
        gw.anthropic_fake.reply_message(afx.text_message("from opus"))
        reply = gw.anthropic().messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=HELLO
        )
    assert caught.value.status_code == 529
    assert models == {"claude-haiku-4-5"}
    assert reply.content[0].text == "from opus"  # type: ignore[union-attr]


def test_patterns_match_model_ids_not_policy_text(gw: Served, ledger_url: str) -> None:
    token = _key(ledger_url, "haiku", ["*haiku*"])
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    gw.anthropic_fake.reply_message(afx.text_message("ok"))
    client = gw.anthropic(key=token)
    assert client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=HELLO)
    assert client.messages.create(model="cheap", max_tokens=5, messages=HELLO)
    listed = [m.id for m in gw.openai(key=token).models.list()]
    assert listed == ["tierwise/auto", "tierwise/cheap", HAIKU]


def test_keys_create_inline_policies_and_a_pattern_that_matches_no_id(ledger_url: str) -> None:
    app = typer.Typer()
    app.callback()(cli_main.main)
    register(app)
    runner = CliRunner()
    args = ["--ledger", ledger_url, "keys", "create"]
    power = runner.invoke(app, [*args, "power", "--inline-policies", "-m", "*haiku*"])
    assert power.exit_code == 0, power.output
    assert "inline policies allowed" in power.stderr and "warning" not in power.stderr
    stale = runner.invoke(app, [*args, "stale", "-m", "tierwise/*"])
    assert stale.exit_code == 0 and "'tierwise/*' matches no model id" in stale.stderr
    with Ledger.open(ledger_url) as ledger:
        keys = {key.name: key for key in KeyStore(ledger).list_keys()}
        found = KeyStore(ledger).verify(power.stdout.strip().splitlines()[0])
    assert found is not None and found.inline_policies and found.models == ["*haiku*"]
    assert not keys["stale"].inline_policies
    listed = runner.invoke(app, ["--ledger", ledger_url, "keys", "list"]).stdout
    assert "+inline" in listed


def test_the_gateway_warns_of_stored_patterns_that_match_no_model_id(
    ledger_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _key(ledger_url, "bare-name", ["claude-haiku-4-5"])
    _key(ledger_url, "by-id", ["anthropic:*haiku*"])
    with (
        caplog.at_level(logging.WARNING, logger="tierwise.gateway"),
        running_gateway(_settings(ledger_url)),
    ):
        pass
    warned = [r.getMessage() for r in caplog.records if "matches no model id" in r.getMessage()]
    assert len(warned) == 1 and "'bare-name'" in warned[0] and "'claude-haiku-4-5'" in warned[0]
