"""The CLI as a user meets it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import anthropic_upstream as fx
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.loopback import serve


def tierwise(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_models_lists_claude_tiers_with_prices() -> None:
    result = tierwise("models", "--provider", "anthropic")
    assert result.returncode == 0, result.stderr
    for model, prices in {
        "anthropic:claude-haiku-4-5": ("$1", "$5"),
        "anthropic:claude-sonnet-4-6": ("$3", "$15"),
        "anthropic:claude-opus-4-7": ("$5", "$25"),
    }.items():
        row = next(line for line in result.stdout.splitlines() if model in line)
        assert all(price in row for price in prices), row


def test_unknown_model_exits_2_with_did_you_mean(tmp_path: Path) -> None:
    result = tierwise(
        "--ledger",
        f"sqlite:///{tmp_path}/l.db",
        "ask",
        "hi",
        "--model",
        "anthropic:claude-haiku-45",
    )
    assert result.returncode == 2
    assert "did you mean 'anthropic:claude-haiku-4-5'" in _one_clean_line(result)


def test_missing_api_key_exits_2_in_one_line(tmp_path: Path) -> None:
    result = tierwise(
        "--ledger",
        f"sqlite:///{tmp_path}/l.db",
        "ask",
        "hi",
        "--model",
        "anthropic:claude-haiku-4-5",
    )
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in _one_clean_line(result)


def test_malformed_config_exits_2_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("default_policy = [unclosed\n")
    result = tierwise("--config", str(config), "models")
    assert result.returncode == 2
    assert "not valid TOML" in _one_clean_line(result)


def test_config_check_flags_missing_key_of_default_policy(tmp_path: Path) -> None:
    result = tierwise("--ledger", f"sqlite:///{tmp_path}/l.db", "config", "check")
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in result.stdout and "Traceback" not in result.stderr
    ok = tierwise(
        "--ledger", f"sqlite:///{tmp_path}/l.db", "config", "check", env={"ANTHROPIC_API_KEY": "k"}
    )
    assert ok.returncode == 0, ok.stdout


def test_demo_replays_and_prints_spend_report(tmp_path: Path, shared_data: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/demo.db"
    result = tierwise(
        "--ledger",
        ledger,
        "demo",
        "--data-dir",
        str(shared_data),
        "--limit",
        "20",
        "--embedder",
        "hashing",
    )
    assert result.returncode == 0, result.stderr
    assert "20 recorded routellm-gsm8k prompts replayed" in result.stdout
    for label in ("cheap model only", "capability rules", "learned router", "oracle"):
        assert label in result.stdout
    assert "saved" in result.stdout and "by model" in result.stdout
    traces = tmp_path / "traces.jsonl"
    exported = tierwise("--ledger", ledger, "export", "--out", str(traces))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(lines) == 100  # 20 prompts x 5 policies
    routed = [t for t in lines if t["policy"].startswith("route:learned")]
    assert len(routed) == 20 and all(t["decisions"][0]["router"] for t in routed)
    spend = tierwise("--ledger", ledger, "spend", "--strongest", "openai:gpt-4-1106-preview")
    assert spend.returncode == 0 and "together:mistralai/Mixtral-8x7B-Instruct-v0.1" in spend.stdout


def test_demo_without_data_or_network_fails_cleanly(tmp_path: Path) -> None:
    result = tierwise("--ledger", f"sqlite:///{tmp_path}/l.db", "demo", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "not found at" in _one_clean_line(result)


@pytest.mark.parametrize("args", [["--help"], ["config", "--help"]])
def test_help(args: list[str]) -> None:
    assert tierwise(*args).returncode == 0


def test_ask_against_a_loopback_anthropic_upstream(tmp_path: Path) -> None:
    fake = FakeAnthropic().reply_message(fx.text_message("Renamed foo to bar."))
    with serve(fake.handler) as base:
        result = tierwise(
            "--ledger",
            f"sqlite:///{tmp_path}/l.db",
            "ask",
            "Rename foo to bar in: def foo(): pass",
            "--model",
            "anthropic:claude-haiku-4-5",
            "--explain",
            env={"ANTHROPIC_API_KEY": "sk-test", "TIERWISE_PROVIDERS__ANTHROPIC__BASE_URL": base},
        )
    assert result.returncode == 0, result.stderr
    assert "Renamed foo to bar." in result.stdout
    assert "pins the model" in result.stdout and "$0.0" in result.stdout
    # this SDK version sends the key as a bearer token
    assert fake.last_request.headers["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_an_unreachable_ledger_is_one_error_before_any_worker(workers: str) -> None:
    ledger = "postgresql://tierwise@127.0.0.1:1/none"  # nothing listens on port 1
    result = tierwise(
        "--ledger", ledger, "serve", "--workers", workers, env={"TIERWISE_ADMIN_KEY": "k"}
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ledger database unreachable at postgresql://")
    assert result.stderr.count("error") == 1, result.stderr  # no worker started, none failed
    assert "Traceback" not in result.stderr and "startup failed" not in result.stderr
