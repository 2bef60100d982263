"""``reelbot discord``: the adapter, its progress stream and its delivery consumer on one Redis."""

from __future__ import annotations

import asyncio
import logging

from reelbot.bots.discord.app import DiscordAdapter
from reelbot.bots.discord.bot import PLATFORM
from reelbot.catalog import load_catalog
from reelbot.chat.service import ChatService
from reelbot.config import Settings
from reelbot.runtime.signals import setup_logging, until_signal
from reelbot.store.connection import connected

log = logging.getLogger(__name__)


async def run_up(settings: Settings, stop: asyncio.Event) -> None:
    """Serve Discord until ``stop`` is set: commands in, progress shown, results posted."""
    catalog = load_catalog(settings.models, settings.styles_file)
    async with connected(settings.effective_redis_url) as redis:
        service = ChatService(redis, settings, catalog, platform=PLATFORM)
        async with DiscordAdapter(settings, service=service):
            log.info("reelbot discord is running")
            await stop.wait()


def run_discord(settings: Settings) -> None:
    """``reelbot discord``: serve until SIGINT/SIGTERM, then wind down cleanly."""
    setup_logging()
    asyncio.run(until_signal(lambda stop: run_up(settings, stop)))
