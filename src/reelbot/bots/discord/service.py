"""``reelbot discord``: the adapter and the Discord delivery consumer on one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from reelbot.bots.discord.app import DiscordAdapter
from reelbot.bots.discord.queue_backend import PLATFORM, QueueBackend, delivery_hook
from reelbot.catalog import load_catalog
from reelbot.config import Settings
from reelbot.queue.delivery import DeliveryConsumer
from reelbot.store.connection import connect

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 8.0


async def run_up(settings: Settings, stop: asyncio.Event) -> None:
    """Serve Discord until ``stop`` is set: commands in, progress shown, results posted."""
    catalog = load_catalog(settings.models, settings.styles_file)
    redis = connect(settings.effective_redis_url)
    backend = QueueBackend(redis, settings, catalog)
    try:
        async with DiscordAdapter(settings, catalog=catalog, backend=backend) as adapter:
            consumer = DeliveryConsumer(
                redis, PLATFORM, delivery_hook(adapter.deliver), settings=settings
            )
            task = asyncio.create_task(consumer.async_run())
            log.info("reelbot discord is running")
            try:
                await stop.wait()
            finally:
                # A post in flight goes back to the delivery queue and is made after a restart.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await consumer.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    finally:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await redis.aclose(close_connection_pool=True)


def run_discord(settings: Settings) -> None:
    """``reelbot discord``: serve until SIGINT/SIGTERM, then wind down cleanly."""
    # Not reelbot.runtime.lifecycle's helpers: importing that module pulls in the generation
    # runner (torch), which the adapters must never load.
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_up(settings, stop)

    asyncio.run(serve())
