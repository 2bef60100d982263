"""``reelbot telegram`` refuses to start without a token, with one clear line."""

from __future__ import annotations

import os

import pytest

from reelbot.bots.telegram.app import bot_api_urls
from reelbot.cli import main


def test_telegram_without_a_token_says_which_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REELBOT_MODELS", "tiny")
    assert main(["telegram"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "REELBOT_TELEGRAM_TOKEN" in err[0]


@pytest.mark.parametrize("root", ["http://127.0.0.1:8081", "http://127.0.0.1:8081/"])
def test_api_root_becomes_ptb_base_urls(root: str) -> None:
    assert bot_api_urls(root) == ("http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/file/bot")
