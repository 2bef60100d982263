"""Settings: environment variables, secrets and clear start-up errors."""

from __future__ import annotations

import pytest

from reelbot.catalog import Task, load_catalog
from reelbot.config import DEFAULT_REDIS_URL, load_settings
from reelbot.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_defaults() -> None:
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.effective_redis_url == DEFAULT_REDIS_URL
    assert settings.models == "default"
    assert settings.queue_for(Task.VIDEO) != settings.queue_for(Task.IMAGINE)


def test_environment_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_DISCORD_TOKEN", "very-secret")
    monkeypatch.setenv("REELBOT_OWNER_IDS", "discord:1, telegram:2")
    settings = load_settings()
    assert settings.owner_ids == ("discord:1", "telegram:2")
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "very-secret"
    assert "very-secret" not in repr(settings)


def test_unknown_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_MODLES", "tiny")
    with pytest.raises(ConfigError, match="REELBOT_MODLES: unknown setting"):
        load_settings()


def test_invalid_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_WEB_PORT", "eighty")
    with pytest.raises(ConfigError, match="REELBOT_WEB_PORT"):
        load_settings()
    monkeypatch.setenv("REELBOT_WEB_PORT", "8080")
    monkeypatch.setenv("REELBOT_OWNER_IDS", "123")
    with pytest.raises(ConfigError, match="REELBOT_OWNER_IDS"):
        load_settings()


def test_toml_file_is_read(tmp_path: object) -> None:
    from pathlib import Path

    Path("reelbot.toml").write_text('models = "tiny"\nweb_port = 9000\n')
    settings = load_settings()
    assert (settings.models, settings.web_port) == ("tiny", 9000)


def test_model_sets_load_and_bad_files_fail_clearly(tmp_path: object) -> None:
    from pathlib import Path

    assert load_catalog("tiny").default_for(Task.VIDEO).name == "tiny-wan"
    assert load_catalog("default").default_for(Task.IMAGINE).name == "z-image-turbo"
    bad = Path("models.toml")
    bad.write_text("[models.x]\nfamily = 'zimage'\n")
    with pytest.raises(ConfigError, match="REELBOT_MODELS: invalid model set"):
        load_catalog(str(bad))
    with pytest.raises(ConfigError, match="file not found"):
        load_catalog("missing.toml")


def test_settings_are_split_into_sections_with_the_same_names() -> None:
    from pydantic import BaseModel

    from reelbot import config
    from reelbot.platforms import PLATFORMS

    sections = [
        cls
        for cls in config.Settings.__mro__
        if isinstance(cls, type) and cls.__name__.endswith("Section") and issubclass(cls, BaseModel)
    ]
    owners: dict[str, list[str]] = {}
    for cls in sections:
        for name in cls.model_fields:
            owners.setdefault(name, []).append(cls.__name__)
    assert set(owners) == set(config.Settings.model_fields)
    assert all(len(found) == 1 for found in owners.values()), owners
    # A platform's section holds exactly its prefixed variables (REELBOT_DISCORD_TOKEN, ...).
    for name, platform in PLATFORMS.items():
        [section] = [c for c in sections if c.__name__.lower() == f"{name}section"]
        prefixed = {
            f for f in config.Settings.model_fields if f.startswith(platform.settings_prefix)
        }
        assert set(section.model_fields) == prefixed
    settings = config.Settings(telegram_token="1:x", telegram_webhook_listen="0.0.0.0:9000")
    telegram = settings.section(config.TelegramSection)
    assert telegram.telegram_webhook_listen == "0.0.0.0:9000"
    assert telegram.telegram_token is not None
