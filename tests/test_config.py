from __future__ import annotations

from pathlib import Path

import pytest

from tierwise.config import load_settings
from tierwise.errors import ConfigError, MissingCredentialsError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.default_policy == "fixed:anthropic:claude-haiku-4-5"
    assert "ollama" not in settings.providers  # a local host: inactive until named
    assert settings.resolved_ledger_url().startswith("sqlite:///")


def test_layers_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        'default_policy = "fixed:openai:gpt-5-nano"\nledger_url = "sqlite:///file.db"\n'
        '[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n',
    )
    settings = load_settings(path)
    assert settings.default_policy == "fixed:openai:gpt-5-nano"
    assert settings.providers["openai"].base_url == "http://127.0.0.1:9/v1"
    assert settings.providers["openai"].api_key_env == "OPENAI_API_KEY"  # merged with default row
    monkeypatch.setenv("TIERWISE_LEDGER_URL", "sqlite:///env.db")
    assert load_settings(path).ledger_url == "sqlite:///env.db"
    assert load_settings(path, ledger_url="sqlite:///flag.db").ledger_url == "sqlite:///flag.db"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERWISE_CONFIG", str(_write(tmp_path, 'default_policy = "x:y"\n')))
    assert load_settings().default_policy == "x:y"


def test_new_provider_row_is_config_not_code(tmp_path: Path) -> None:
    path = _write(
        tmp_path, '[providers.groq]\nkind = "openai"\nbase_url = "https://api.groq.com/openai/v1"\n'
    )
    assert load_settings(path).providers["groq"].kind == "openai"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default_policy = [", "not valid TOML"),
        ('[providers.x]\nkind = "carrier-pigeon"\n', "providers.x.kind"),
        ("surprise = 1\n", "surprise"),
    ],
)
def test_malformed_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_api_key_from_env_or_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    with pytest.raises(MissingCredentialsError, match="ANTHROPIC_API_KEY"):
        settings.api_key("anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert settings.api_key("anthropic") == "sk-test"
    assert load_settings(None, providers={"ollama": {}}).api_key("ollama") is None
