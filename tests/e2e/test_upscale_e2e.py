"""Upscale end to end on Telegram: the Upscale button under a result, and /upscale with a photo,
through the Bot API emulator, the real queue and the real worker on the tiny models."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from telegram_emulator import TelegramEmulator
from test_telegram_adapter import ALICE, BOB, Running, _at_least, png, replies_to, until, worker
from test_telegram_adapter import bot as bot  # the fixture: a Telegram process on Valkey

from reelbot.catalog import Task


def _photo_of(emu: TelegramEmulator, message: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(emu.files[message["photo"][-1]["file_id"]].data))
    image.load()
    return image


async def test_the_upscale_button_gives_twice_the_size(
    telegram_emu: TelegramEmulator, bot: Running, runner: Any
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a lighthouse --seed 3")
    async with worker(bot.settings, runner):
        await replies_to(emu, update)
        (job,) = await until(lambda: _at_least(bot, 1))
        await emu.wait_for(lambda: emu.calls_of("sendPhoto"), within=60, what="the result")
        posted = emu.bot_messages(chat.id)[-1]
        source = _photo_of(emu, posted)
        # Whoever clicks starts a job of their own.
        emu.press_button(BOB, posted, f"up:{job.id}")
        up = (await until(lambda: _at_least(bot, 2)))[1]
        assert up.request.task == Task.UPSCALE
        assert up.request.requester.user_id == str(BOB.id)
        await emu.wait_for(lambda: len(emu.calls_of("sendPhoto")) == 2, within=60, what="upscale")
    result = _photo_of(emu, emu.bot_messages(chat.id)[-1])
    assert result.size == (source.width * 2, source.height * 2)


async def test_upscale_with_a_photo_and_scale_4(
    telegram_emu: TelegramEmulator, bot: Running, runner: Any
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    update = emu.user_photo(chat, ALICE, png(64, 48, "blue"), caption="/upscale --scale 4")
    async with worker(bot.settings, runner):
        await replies_to(emu, update)
        await emu.wait_for(lambda: emu.calls_of("sendPhoto"), within=60, what="the result")
    assert _photo_of(emu, emu.bot_messages(chat.id)[-1]).size == (256, 192)
