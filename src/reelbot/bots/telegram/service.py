"""The ``reelbot telegram`` process: the bot, and the conversation that shows progress and posts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from arq.connections import ArqRedis

from reelbot.catalog import Catalog, load_catalog
from reelbot.chat.service import ChatService
from reelbot.chat.surface import Conversation
from reelbot.config import Settings
from reelbot.errors import ConfigError
from reelbot.runtime.signals import setup_logging, until_signal
from reelbot.store.connection import connected

from .app import CONFLICT_HELP, POLL_TIMEOUT_S, TelegramAdapter
from .handlers import PLATFORM, CommandLayer
from .status import GROUP_INTERVAL_S, PRIVATE_INTERVAL_S, StatusBoard
from .surface import TelegramSurface
from .webhook import WebhookConfig

log = logging.getLogger(__name__)

CONFLICT_LIMIT = 3
"""409s in a row after which ``reelbot telegram`` stops instead of fighting another poller."""


class TelegramService:
    """The adapter on the chat layer: commands in, status edits and results out, once each."""

    def __init__(
        self,
        settings: Settings,
        redis: ArqRedis,
        catalog: Catalog,
        *,
        token: str,
        poll_timeout: int = POLL_TIMEOUT_S,
        private_interval: float = PRIVATE_INTERVAL_S,
        group_interval: float = GROUP_INTERVAL_S,
        delivery_poll_s: float = 0.5,
    ) -> None:
        self.service = ChatService(redis, settings, catalog, platform=PLATFORM)
        self.adapter = TelegramAdapter(
            token=token, api_root=settings.telegram_api_url, poll_timeout=poll_timeout
        )
        self.board = StatusBoard(
            self.adapter.bot, private_interval=private_interval, group_interval=group_interval
        )
        self.surface = TelegramSurface(self.adapter.bot, self.board, self.service.results)
        mb = settings.telegram_max_upload_mb
        self.layer = CommandLayer(
            self.service, self.surface, max_upload_bytes=mb * 1024 * 1024 if mb else None
        )
        self.adapter.route(self.layer.on_message, self.layer.on_button)
        # The board keeps Telegram's per-chat rate, so the conversation hands every edit on;
        # a waiting job's place is redrawn every 10 s (at most 6 of a group's 20 a minute).
        self.conversation = Conversation(
            self.service, self.surface, settings, edit_interval_s=0, delivery_poll_s=delivery_poll_s
        )
        self.conversation.positions_every_s = 10.0

    async def start(self, webhook: WebhookConfig | None = None) -> None:
        """Start the bot (polling, or the webhook when given), then the conversation."""
        await self.adapter.start(webhook)
        self.conversation.start()

    async def stop(self) -> None:
        """Stop taking updates and deliveries; what is not posted waits in Redis."""
        await self.conversation.stop()
        await self.adapter.stop()
        await self.board.close()


def webhook_from_settings(settings: Settings) -> WebhookConfig | None:
    """Webhook mode when a public URL is configured; it needs a secret to check each update."""
    if settings.telegram_webhook_url is None:
        return None
    if settings.telegram_webhook_secret is None:
        raise ConfigError(
            "REELBOT_TELEGRAM_WEBHOOK_SECRET: required with REELBOT_TELEGRAM_WEBHOOK_URL "
            "(1-256 characters A-Z, a-z, 0-9, _ and -)"
        )
    host, _, port = settings.telegram_webhook_listen.rpartition(":")
    return WebhookConfig(
        url=settings.telegram_webhook_url,
        secret=settings.telegram_webhook_secret.get_secret_value(),
        path=urlsplit(settings.telegram_webhook_url).path or "/telegram",
        host=host,
        port=int(port),
    )


async def _serve(
    settings: Settings,
    stop: asyncio.Event,
    webhook: WebhookConfig | None,
    *,
    alone: bool,
) -> None:
    """Run until ``stop``; a persistent 409 (another poller) ends it, as an error when ``alone``."""
    assert settings.telegram_token is not None  # the callers check it
    token = settings.telegram_token.get_secret_value()
    catalog = load_catalog(settings.models, settings.styles_file)
    async with connected(settings.effective_redis_url) as redis:
        service = TelegramService(settings, redis, catalog, token=token)
        try:
            await service.start(webhook)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
                if service.adapter.conflicts >= CONFLICT_LIMIT:
                    if alone:
                        raise ConfigError(CONFLICT_HELP)
                    # Under ``up`` the other adapters keep serving; only Telegram stands down.
                    log.error("%s", CONFLICT_HELP)
                    break
        finally:
            await service.stop()


async def run_telegram(settings: Settings, *, webhook: WebhookConfig | None = None) -> int:
    """Run until SIGINT or SIGTERM; a persistent 409 (another poller) stops it with a clear line."""
    if settings.telegram_token is None:
        raise ConfigError("REELBOT_TELEGRAM_TOKEN: not set; get one from @BotFather")
    setup_logging()
    hook = webhook or webhook_from_settings(settings)
    await until_signal(lambda stop: _serve(settings, stop, hook, alone=True))
    return 0


async def run_up(settings: Settings, stop: asyncio.Event) -> None:
    """Serve Telegram until ``stop`` is set (the ``reelbot up`` hook); off without a token."""
    if settings.telegram_token is None:
        return
    await _serve(settings, stop, webhook_from_settings(settings), alone=False)
