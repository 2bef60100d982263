"""``reelbot web``: the web chat's HTTP server and its ``Conversation`` (progress, deliveries)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from urllib.parse import urlsplit

from arq.connections import ArqRedis

from reelbot.bots.web.app import build_app
from reelbot.bots.web.chat import WebChat
from reelbot.bots.web.surface import WebConversation, WebSurface
from reelbot.catalog import load_catalog
from reelbot.config import Settings
from reelbot.errors import ConfigError
from reelbot.runtime import http
from reelbot.runtime.edit_page import EditPage
from reelbot.runtime.http import Hub, is_loopback
from reelbot.runtime.signals import setup_logging, until_signal
from reelbot.store.connection import connected

log = logging.getLogger(__name__)

__all__ = ["WebService", "is_loopback", "run_up", "run_web", "serve_web"]

CLOSE_TIMEOUT_S = 8.0


def bind(host: str, port: int) -> socket.socket:
    """The web chat's listening socket; a wrong host or a taken port names the setting."""
    return http.bind(host, port, setting="REELBOT_WEB")


class WebService:
    """The web chat on one Redis: page and API, progress to the pages, results delivered."""

    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.chat = WebChat(redis, settings, load_catalog(settings.models, settings.styles_file))
        self.hub = Hub()
        token = settings.web_token.get_secret_value() if settings.web_token else None
        public = urlsplit(settings.public_url).hostname if settings.public_url else None
        loopback = is_loopback(settings.web_host)
        self.app = build_app(
            self.chat, self.hub, token=token, loopback=loopback, public_host=public
        )
        self.conversation = WebConversation(self.chat.service, WebSurface(self.hub), settings)
        self.app.router.routes.extend(EditPage(redis, settings, self.chat.catalog).routes)

    async def serve(self, stop: asyncio.Event, sock: socket.socket) -> None:
        """Serve until ``stop`` is set, then close the streams, the server and the consumer."""
        self.conversation.start()
        try:
            server = http.quiet_server(self.app)
            await http.serve_until(
                server, sock, stop, close_s=CLOSE_TIMEOUT_S, on_stop=self.hub.close
            )
        finally:
            # A post in flight goes back to the delivery queue and is made after a restart.
            await self.conversation.stop(CLOSE_TIMEOUT_S)


def announce(settings: Settings, sock: socket.socket) -> None:
    """Print where the chat is, and warn loudly when it is open to others without a token."""
    port = sock.getsockname()[1]
    host = settings.web_host
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    guarded = " (access token required)" if settings.web_token else ""
    print(f"reelbot web: chat at http://{shown}:{port}/{guarded}", file=sys.stderr, flush=True)
    if not is_loopback(host) and settings.web_token is None:
        log.warning(
            "the web chat is bound to %s, reachable from other machines, and has no access "
            "token: anyone who can reach port %d can run jobs on this machine. Set "
            "REELBOT_WEB_TOKEN, or bind REELBOT_WEB_HOST=127.0.0.1.",
            host,
            port,
        )


async def run_up(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the web chat until ``stop`` is set (the ``reelbot up`` hook)."""
    try:
        sock = bind(settings.web_host, settings.web_port)
    except ConfigError as exc:
        # Under ``up`` the worker and the other adapters keep serving without the page.
        log.error("the web chat is not running: %s", exc.message)
        return
    await serve_web(settings, stop, sock)


async def serve_web(settings: Settings, stop: asyncio.Event, sock: socket.socket) -> None:
    """Serve the web chat on ``sock`` until ``stop`` is set; closes the socket."""
    with sock:
        async with connected(settings.effective_redis_url) as redis:
            service = WebService(settings, redis)
            announce(settings, sock)
            await service.serve(stop, sock)


def run_web(settings: Settings) -> None:
    """``reelbot web``: serve until SIGINT/SIGTERM, then wind down cleanly."""
    setup_logging()
    # Alone, a port that is taken is a start-up error: one line, exit status 2.
    sock = bind(settings.web_host, settings.web_port)
    asyncio.run(until_signal(lambda stop: serve_web(settings, stop, sock)))
