"""Webhook mode: Telegram POSTs updates to us; the secret-token header proves they came from it.

PTB's own webhook server needs tornado; this one is a small starlette app served by uvicorn
(``reelbot.runtime.http``), usually behind a reverse proxy that terminates TLS on the public URL.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application

from reelbot.runtime.http import TokenGate, bind, declared_length, quiet_server, serve_until

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024
"""Updates are small JSON documents; anything bigger is not from Telegram."""
STOP_TIMEOUT_S = 10.0
LISTEN_SETTING = "REELBOT_TELEGRAM_WEBHOOK_LISTEN"


@dataclass(frozen=True)
class WebhookConfig:
    """Webhook mode: Telegram POSTs to ``url``, which a proxy forwards to ``host:port/path``."""

    url: str
    secret: str
    path: str = "/telegram"
    host: str = "127.0.0.1"
    port: int = 8443


class WebhookServer:
    """An HTTP endpoint that checks the secret and hands updates to the PTB application."""

    def __init__(self, application: Application, hook: WebhookConfig) -> None:  # type: ignore[type-arg]
        if not 1 <= len(hook.secret) <= 256:
            raise ValueError("the webhook secret must be 1-256 characters (Telegram's limit)")
        self.application, self.hook = application, hook
        self.gate = TokenGate(hook.secret, header=SECRET_HEADER)
        self.server = quiet_server(
            Starlette(routes=[Route(hook.path, self._receive, methods=["POST"])])
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _receive(self, request: Request) -> Response:
        if not self.gate.allows(request):
            return Response(status_code=403)
        if declared_length(request) > MAX_BODY:
            return Response(status_code=413)  # before a byte of the body is read
        body = await request.body()
        if len(body) > MAX_BODY:
            return Response(status_code=413)
        try:
            data: Any = json.loads(body)
            update = Update.de_json(data, self.application.bot)
        except (ValueError, TypeError, KeyError):
            return Response(status_code=400)
        if update is not None:
            await self.application.update_queue.put(update)
        return Response(status_code=200)

    async def start(self) -> None:
        """Listen (a wrong address or a taken port is one clear line), then serve."""
        sock = bind(self.hook.host, self.hook.port, setting=LISTEN_SETTING, one=True)
        serving = serve_until(self.server, sock, self._stop, close_s=STOP_TIMEOUT_S)
        self._task = asyncio.create_task(serving, name="telegram-webhook")

    async def stop(self) -> None:
        """Stop listening; Telegram keeps the updates and retries until we are back."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
