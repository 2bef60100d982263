"""Webhook mode: Telegram POSTs updates to us; the secret-token header proves they came from it.

PTB's own webhook server needs tornado; this one is a small starlette app served by uvicorn,
usually behind a reverse proxy that terminates TLS on the public URL.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Update
from telegram.ext import Application

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 1024 * 1024
"""Updates are small JSON documents; anything bigger is not from Telegram."""
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


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
        self.application = application
        self.secret = hook.secret.encode()
        app = Starlette(routes=[Route(hook.path, self._receive, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host=hook.host,
            port=hook.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        servers = getattr(self.server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    async def _receive(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            return Response(status_code=403)
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
        """Listen; returns once the socket is bound."""
        self._task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(START_TIMEOUT_S):
            while not self.server.started:
                if self._task.done():
                    self._task.result()  # raises why it could not start (port in use, ...)
                    raise RuntimeError("the webhook server stopped while starting")
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop listening; Telegram keeps the updates and retries until we are back."""
        if self._task is None:
            return
        self.server.should_exit = True
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._task
        except TimeoutError:
            log.warning("webhook server did not stop in %ss; cancelling it", STOP_TIMEOUT_S)
            self._task.cancel()
        self._task = None
