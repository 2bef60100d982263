"""Both chat platforms at once: the emulators, the real adapters, real workers, a private Valkey."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from discord_emulator import DiscordEmulator, Interaction
from telegram_emulator import TOKEN, Chat, TelegramEmulator, User

from reelbot.bots.discord.service import run_up
from reelbot.bots.telegram.service import TelegramService
from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.store.leases import live_workers
from reelbot.worker.worker import serve_generation

__all__ = [
    "TOKEN",
    "Chat",
    "DiscordEmulator",
    "Interaction",
    "Platforms",
    "TelegramEmulator",
    "User",
    "both_platforms",
]


@dataclass
class Platforms:
    """What a test drives: the two emulators, and the settings everything runs with."""

    discord: DiscordEmulator
    telegram: TelegramEmulator
    settings: Settings


async def _wait_workers(url: str, count: int) -> None:
    redis = connect(url)
    try:
        async with asyncio.timeout(60):
            while len(await live_workers(redis)) < count:  # noqa: ASYNC110 (polls Redis)
                await asyncio.sleep(0.05)
    finally:
        await redis.aclose(close_connection_pool=True)


@asynccontextmanager
async def both_platforms(
    tmp_path: Path, catalog: Catalog, data_dir: Path, runner: Any, *, workers: int = 2
) -> AsyncIterator[Platforms]:
    """Start ``workers`` generation workers (each on both queues), Discord and Telegram."""
    with RedisServer(tmp_path / "redis") as server:
        async with DiscordEmulator() as demu, TelegramEmulator() as temu:
            settings = Settings(
                redis_url=server.url,
                discord_token=demu.bot_token,
                discord_api_url=demu.api_url,
                discord_gateway_url=demu.gateway_url,
                telegram_token=TOKEN,
                telegram_api_url=temu.root,
                models="tiny",
                device="cpu",
                data_dir=data_dir,
                heartbeat_s=0.5,
                dead_worker_s=3.0,
            )
            stops: list[asyncio.Event] = []
            tasks: list[asyncio.Task[None]] = []
            queues = [settings.image_queue, settings.video_queue]
            tg_redis = connect(server.url)
            service: TelegramService | None = None
            try:
                for _ in range(workers):
                    stop = asyncio.Event()
                    coro = serve_generation(
                        settings, runner, queues, redis_url=server.url, stop=stop
                    )
                    stops.append(stop)
                    tasks.append(asyncio.create_task(coro))
                await _wait_workers(server.url, workers * len(queues))
                stop = asyncio.Event()
                stops.append(stop)
                tasks.append(asyncio.create_task(run_up(settings, stop)))
                await demu.wait_for(lambda: demu.connected, within=30)
                service = TelegramService(
                    settings, tg_redis, catalog, token=TOKEN, poll_timeout=1, delivery_poll_s=0.2
                )
                await service.start()
                yield Platforms(demu, temu, settings)
            finally:
                if service is not None:
                    await service.stop()
                await tg_redis.aclose(close_connection_pool=True)
                for stop in stops:
                    stop.set()
                async with asyncio.timeout(60):
                    await asyncio.gather(*tasks, return_exceptions=True)
