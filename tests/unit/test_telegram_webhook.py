"""Webhook mode's listening socket: a taken port is one clear line naming the setting."""

from __future__ import annotations

import socket

import pytest

from reelbot.bots.telegram.webhook import WebhookConfig, WebhookServer
from reelbot.errors import ConfigError


async def test_a_taken_webhook_port_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        hook = WebhookConfig(url="https://bot.example/telegram", secret="s3cret", port=port)
        server = WebhookServer(None, hook)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=rf"REELBOT_TELEGRAM_WEBHOOK_LISTEN: .*:{port}"):
            await server.start()
        await server.stop()  # nothing was started: nothing to stop
