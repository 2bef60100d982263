"""Telegram settings: webhook mode and a local Bot API server's upload limit."""

from __future__ import annotations

import os

import pytest

from reelbot.bots.telegram.service import webhook_from_settings
from reelbot.config import load_settings
from reelbot.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_polling_without_a_webhook_url() -> None:
    assert webhook_from_settings(load_settings()) is None


def test_webhook_from_url_secret_and_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/tg/hook")
    monkeypatch.setenv("REELBOT_TELEGRAM_WEBHOOK_SECRET", "s3cret_token")
    monkeypatch.setenv("REELBOT_TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0:9000")
    hook = webhook_from_settings(load_settings())
    assert hook is not None
    assert (hook.url, hook.secret, hook.path, hook.host, hook.port) == (
        "https://bot.example.org/tg/hook",
        "s3cret_token",
        "/tg/hook",
        "0.0.0.0",
        9000,
    )


def test_webhook_without_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/hook")
    with pytest.raises(ConfigError, match="REELBOT_TELEGRAM_WEBHOOK_SECRET"):
        webhook_from_settings(load_settings())


def test_bad_listen_address_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_TELEGRAM_WEBHOOK_LISTEN", "8443")
    with pytest.raises(ConfigError, match="REELBOT_TELEGRAM_WEBHOOK_LISTEN"):
        load_settings()


def test_local_bot_api_upload_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_TELEGRAM_MAX_UPLOAD_MB", "2000")
    assert load_settings().telegram_max_upload_mb == 2000
    monkeypatch.setenv("REELBOT_TELEGRAM_MAX_UPLOAD_MB", "5000")
    with pytest.raises(ConfigError, match="REELBOT_TELEGRAM_MAX_UPLOAD_MB"):
        load_settings()
