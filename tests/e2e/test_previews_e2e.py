"""Live progress on Discord and Telegram: the status message carries step previews before the
result, and a job waiting behind others sees its place in line move up while it waits. A grid
on Telegram is an album of its tiles and one message with the keyboard, posted once.

The real adapters against the emulators, the real queue on Valkey and the real worker on the
tiny models, each step slowed (``SlowSteps``) so progress has time to show.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from discord_emulator import DiscordEmulator
from PIL import Image
from telegram_emulator import TOKEN, TelegramEmulator, User

from integration.conftest import SlowSteps, start_generation
from reelbot.bots.discord.app import DiscordAdapter
from reelbot.bots.telegram.service import TelegramService
from reelbot.catalog import Catalog, load_catalog
from reelbot.chat.service import ChatService
from reelbot.config import Settings
from reelbot.generation.runner import Runner
from reelbot.jobs import JobStatus, job_id_for
from reelbot.store.connection import connect, connected
from reelbot.store.records import RecordStore

pytestmark = pytest.mark.timeout(120)

ALICE = User(111, "Alice", "alice")
GROUP_ID = -1009876543210
WAIT_S = 60.0


class Slow(SlowSteps):
    """``SlowSteps`` for the one-job calls as well (the worker's path without batching)."""

    def generate(self, *args: Any, on_progress: Any = None, **kwargs: Any) -> Any:
        def slow(event: Any) -> None:
            if on_progress is not None:
                on_progress(event)
            if event.stage == "denoising":
                time.sleep(self.delay_s)  # in the pipeline thread: a slower GPU

        return self.real.generate(*args, on_progress=slow, **kwargs)


@pytest.fixture
def previewing(tiny_catalog: Catalog, tiny_data_dir: Path) -> Slow:
    """The tiny runner with a preview on every step, each step 0.4 s slower."""
    return Slow(
        Runner(tiny_catalog, data_dir=tiny_data_dir, device="cpu", preview_every=1), delay_s=0.4
    )


async def _status(redis_url: str, job_id: str) -> JobStatus | None:
    redis = connect(redis_url)
    try:
        record = await RecordStore(redis, finished_ttl_s=60).get(job_id)
        return record.status if record is not None else None
    finally:
        await redis.aclose(close_connection_pool=True)


async def _until(settings: Settings, job_id: str, status: JobStatus) -> None:
    async with asyncio.timeout(WAIT_S):
        while await _status(settings.effective_redis_url, job_id) != status:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _queued_lines(shown: Any, settings: Settings, job_id: str) -> list[str]:
    """Each place-in-line line (``⏳ Queued · position 2 · about 8 s``) the status message
    showed, in order, while the job was queued."""
    lines: list[str] = []
    async with asyncio.timeout(WAIT_S):
        while (status := await _status(settings.effective_redis_url, job_id)) in (
            None,
            JobStatus.QUEUED,
        ):
            head = shown().split("\n")[0].replace("*", "")
            if status is not None and "position" in head and (not lines or lines[-1] != head):
                lines.append(head)
            await asyncio.sleep(0.1)
    return lines


# -- Discord ----------------------------------------------------------------------------------


@pytest.fixture
async def discord(
    discord_emu: DiscordEmulator, discord_redis_url: str, tiny_data_dir: Path
) -> AsyncIterator[Settings]:
    """The Discord adapter with quick paces (1 s edits, places redrawn every 1 s)."""
    with sync_redis.Redis.from_url(discord_redis_url) as r:
        r.flushall()
    settings = Settings(
        redis_url=discord_redis_url,
        discord_token=discord_emu.bot_token,
        discord_api_url=discord_emu.api_url,
        discord_gateway_url=discord_emu.gateway_url,
        models="tiny",
        device="cpu",
        data_dir=tiny_data_dir,
    )
    async with connected(settings.effective_redis_url) as redis:
        service = ChatService(redis, settings, load_catalog("tiny"), platform="discord")
        pace = {"edit_interval_s": 1.0, "positions_every_s": 1.0, "delivery_poll_s": 0.2}
        async with DiscordAdapter(settings, service=service, **pace):
            yield settings


async def test_discord_status_shows_a_preview_before_the_result(
    discord_emu: DiscordEmulator, discord: Settings, previewing: Slow
) -> None:
    emu, stop = discord_emu, asyncio.Event()
    worker = await start_generation(discord, previewing, stop)
    try:
        inter = await emu.slash("imagine", {"prompt": "a red fox --steps 8 --seed 3"})
        result = await emu.wait_for(
            lambda: [m for m in emu.followups(inter) if m["attachments"]], within=WAIT_S
        )
        status_id = (emu.original(inter) or {})["id"]
        posted_at = next(c.at for c in emu.calls if c.method == "POST" and c.files)
        previews = [
            c
            for c in emu.calls
            if c.method == "PATCH" and c.path.endswith(f"/messages/{status_id}") and c.files
        ]
        assert previews and previews[0].at < posted_at, "no preview on the status message"
        name, data = previews[0].files[0]
        assert name.endswith(".jpg")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG" and image.size[0] > 0
        # Once the result is posted the status message says so, without the last preview.
        done = await emu.wait_for(
            lambda: (m := emu.messages[status_id])["content"].startswith("✅") and m, within=10
        )
        assert done["attachments"] == [] and result
    finally:
        stop.set()
        await worker


async def test_discord_place_in_line_moves_up_while_waiting(
    discord_emu: DiscordEmulator, discord: Settings, previewing: Slow
) -> None:
    emu, stop = discord_emu, asyncio.Event()
    previewing.delay_s = 1.0  # long enough that the wait ahead visibly shrinks
    worker = await start_generation(discord, previewing, stop)
    try:
        # One job per pipeline call (batch_max 1); the same cost, so the third is served last.
        first = await emu.slash("imagine", {"prompt": "one --steps 5 --seed 1"})
        await _until(discord, job_id_for("discord", str(first.id)), JobStatus.RUNNING)
        second = await emu.slash("imagine", {"prompt": "two --steps 8 --seed 2"})
        await emu.wait_for(lambda: "position" in (emu.original(second) or {}).get("content", ""))
        third = await emu.slash("imagine", {"prompt": "three --steps 8 --seed 3"})
        job_id = job_id_for("discord", str(third.id))
        lines = await _queued_lines(
            lambda: (emu.original(third) or {}).get("content", ""), discord, job_id
        )
        # Redrawn while it waits (the place, or the wait as the job ahead moves on).
        assert len(lines) >= 2, lines
    finally:
        stop.set()
        await worker


# -- Telegram ---------------------------------------------------------------------------------


@pytest.fixture
async def telegram(
    telegram_redis_url: str, tiny_catalog: Catalog, tiny_data_dir: Path
) -> AsyncIterator[tuple[TelegramEmulator, Settings, TelegramService]]:
    """A group-rate-limited emulator (20 messages a minute, as documented) and the bot."""
    async with TelegramEmulator(group_per_minute=20) as emu:
        settings = Settings(
            redis_url=telegram_redis_url,
            telegram_token=TOKEN,
            telegram_api_url=emu.root,
            models="tiny",
            data_dir=tiny_data_dir,
            device="cpu",
        )
        with sync_redis.Redis.from_url(telegram_redis_url) as r:
            r.flushall()
        async with connected(settings.effective_redis_url) as redis:
            service = TelegramService(
                settings, redis, tiny_catalog, token=TOKEN, poll_timeout=1, delivery_poll_s=0.2
            )
            service.conversation.positions_every_s = 1.0
            await service.start()
            try:
                yield emu, settings, service
            finally:
                await service.stop()


def _replies_to(emu: TelegramEmulator, update: dict[str, Any]) -> list[dict[str, Any]]:
    message = update["message"]
    return [
        m
        for m in emu.bot_messages(message["chat"]["id"])
        if m.get("reply_to_message", {}).get("message_id") == message["message_id"]
    ]


async def test_telegram_status_shows_a_preview_before_the_result(
    telegram: tuple[TelegramEmulator, Settings, TelegramService], previewing: Slow
) -> None:
    emu, settings, _ = telegram
    stop = asyncio.Event()
    previewing.delay_s = 1.0  # a group's status edits come every 3 s: a job of a few slots
    worker = await start_generation(settings, previewing, stop)
    try:
        group = emu.group(GROUP_ID, "artists")
        update = emu.user_text(group, ALICE, "/imagine@emu_bot a red fox --steps 8 --seed 4")
        await emu.wait_for(
            lambda: [m for m in _replies_to(emu, update) if "photo" in m and "caption" in m],
            within=WAIT_S,
            what="the result",
        )
        result_at = next(
            c.at for c in emu.calls if c.method == "sendPhoto" and "caption" in c.params
        )
        shown = [
            c
            for c in emu.calls
            if c.method in ("sendPhoto", "editMessageMedia")
            and c.status in (None, 200)
            and "caption" not in c.params
            and c.at < result_at
        ]
        assert shown, "no preview before the result"
        data = next(iter(shown[0].files.values()))
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"
        # The preview photo goes once the job is done; nothing hit Telegram's group limit.
        await emu.wait_for(lambda: emu.calls_of("deleteMessage"), within=10, what="the clean-up")
        assert not [c for c in emu.calls if c.status == 429], "over the group's 20 a minute"
        assert not [m for m in emu.bot_messages(GROUP_ID) if "photo" in m and "caption" not in m]
    finally:
        stop.set()
        await worker


async def test_telegram_place_in_line_moves_up_while_waiting(
    telegram: tuple[TelegramEmulator, Settings, TelegramService], previewing: Slow
) -> None:
    emu, settings, _ = telegram
    chat = emu.private_chat(ALICE)
    stop = asyncio.Event()
    previewing.delay_s = 1.0  # long enough that the wait ahead visibly shrinks
    worker = await start_generation(settings, previewing, stop)
    try:
        first = emu.user_text(chat, ALICE, "/imagine one --steps 5 --seed 1")
        first_id = job_id_for("telegram", f"{chat.id}:{first['message']['message_id']}")
        await _until(settings, first_id, JobStatus.RUNNING)
        second = emu.user_text(chat, ALICE, "/imagine two --steps 8 --seed 2")
        await emu.wait_for(lambda: _replies_to(emu, second), what="the second's status")
        third = emu.user_text(chat, ALICE, "/imagine three --steps 8 --seed 3")
        job_id = job_id_for("telegram", f"{chat.id}:{third['message']['message_id']}")

        def shown() -> str:
            status = [m for m in _replies_to(emu, third) if "text" in m]
            return str(status[0]["text"]) if status else ""

        lines = await _queued_lines(shown, settings, job_id)
        assert len(lines) >= 2, lines  # redrawn while it waits
    finally:
        stop.set()
        await worker


async def test_telegram_grid_is_one_album_and_one_keyboard_message_once(
    telegram: tuple[TelegramEmulator, Settings, TelegramService], previewing: Slow
) -> None:
    emu, settings, _ = telegram
    chat = emu.private_chat(ALICE)
    previewing.delay_s = 0.0
    stop = asyncio.Event()
    worker = await start_generation(settings, previewing, stop)
    try:
        command = emu.user_text(chat, ALICE, "/imagine a red fox --n 4 --steps 2 --seed 9")
        await emu.wait_for(lambda: _replies_to(emu, command), what="the status message")
        # The keyboard message fails once after the album went: the retry must not post a
        # second album (Telegram cannot take the album back or tell a repeat).
        emu.fail("sendMessage", 500, times=1)
        album = await emu.wait_for(
            lambda: [m for m in _replies_to(emu, command) if "media_group_id" in m],
            within=WAIT_S,
            what="the album",
        )
        keyboard = await emu.wait_for(
            lambda: [
                m
                for m in emu.bot_messages(chat.id)
                if m.get("reply_to_message", {}).get("message_id") == album[0]["message_id"]
            ],
            within=WAIT_S,
            what="the keyboard message",
        )
        assert len(album) == 4 and len({m["media_group_id"] for m in album}) == 1
        for message in album:
            data = emu.files[message["photo"][-1]["file_id"]].data
            with Image.open(io.BytesIO(data)) as image:
                assert image.size == (64, 64)  # each tile alone, not the grid
            assert "reply_markup" not in message
        (buttons,) = keyboard
        labels = [b["text"] for row in buttons["reply_markup"]["inline_keyboard"] for b in row]
        assert [t for t in labels if t[:1] in "UV" and t[1:].isdigit()] == [
            *(f"U{i}" for i in range(1, 5)),
            *(f"V{i}" for i in range(1, 5)),
        ], labels
        assert "a red fox" in buttons["text"]
        await asyncio.sleep(1.0)  # nothing more comes
        assert len([c for c in emu.calls_of("sendMediaGroup") if c.status == 200]) == 1
        sends = [c.status for c in emu.calls if c.method == "sendMessage"]
        assert sends[-2:] == [500, 200], sends
    finally:
        stop.set()
        await worker
