"""End-to-end fixtures: the platform emulators, the real adapters and the real worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

# --- discord ---
from discord_emulator import DiscordEmulator


@pytest.fixture
async def discord_emu() -> AsyncIterator[DiscordEmulator]:
    """A fresh local Discord (REST + gateway) on a free port."""
    async with DiscordEmulator() as emu:
        yield emu


import os  # noqa: E402 (imports kept in the discord section)
from collections.abc import Iterator as _Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


@pytest.fixture(scope="session")
def discord_redis_url(tmp_path_factory: pytest.TempPathFactory) -> _Iterator[str]:
    """A private Valkey (or redis-server) for the Discord end-to-end tests."""
    from reelbot.queue.server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("discord-redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def discord_data_dir() -> Path:
    """Where the tiny models are built once and reused (shared with the integration tests)."""
    repo = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("REELBOT_TEST_DATA_DIR") or repo / ".data" / "test")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def discord_runner(discord_data_dir: Path) -> Any:
    """The real generation engine on the CPU with the tiny models loaded, for in-process workers."""
    from reelbot.catalog import load_catalog
    from reelbot.generation.runner import Runner

    runner = Runner(load_catalog("tiny"), data_dir=discord_data_dir, device="cpu")
    for name in ("tiny-zimage", "tiny-wan"):
        runner.preload(name)
    return runner


# --- telegram ---
from collections.abc import Iterator  # noqa: E402 (imports kept in the telegram section)

from telegram_emulator import TelegramEmulator  # noqa: E402


@pytest.fixture
async def telegram_emu() -> AsyncIterator[TelegramEmulator]:
    """A fresh local Telegram Bot API server on a free port."""
    async with TelegramEmulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def telegram_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Valkey (or redis-server) for the Telegram end-to-end tests."""
    from reelbot.queue.server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("telegram-redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
