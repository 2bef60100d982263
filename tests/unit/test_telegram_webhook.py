"""Webhook mode's listening socket: a taken port is one clear line naming the setting."""

from __future__ import annotations

import socket

import pytest

from reelbot.bots.telegram.webhook import MAX_BODY, WebhookConfig, WebhookServer
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


async def test_an_oversized_update_is_refused_from_its_header_before_the_body_is_read() -> None:
    hook = WebhookConfig(url="https://bot.example/telegram", secret="s3cret")
    app = WebhookServer(None, hook).server.config.app  # type: ignore[arg-type]
    read: list[object] = []
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        read.append(1)
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "https", "path": "/telegram", "raw_path": b"/telegram", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8443),
        "headers": [
            (b"x-telegram-bot-api-secret-token", b"s3cret"),
            (b"content-length", str(MAX_BODY + 1).encode()),
        ],
    }  # fmt: skip
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert read == []  # not a byte of the body was read
