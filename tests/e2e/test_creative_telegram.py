"""The image loop on Telegram, end to end through the Bot API emulator, the real queue and the
real worker on the tiny models: a grid's U2 and V1, a 16:9 remix that stays 16:9, Info, and
/history and /show after the adapter restarts."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from telegram_emulator import TelegramEmulator
from test_telegram_adapter import (
    ALICE,
    BOB,
    Running,
    _at_least,
    png,
    replies_to,
    running,
    settings_for,
    until,
    worker,
)

from reelbot.catalog import Catalog, Task
from reelbot.store.connection import connect

TILE = (64, 64)
"""The tiny image model's size: each image of a grid."""


def _photo(emu: TelegramEmulator, message: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(emu.files[message["photo"][-1]["file_id"]].data))
    image.load()
    return image


def _with_keyboard(emu: TelegramEmulator, chat_id: int) -> list[dict[str, Any]]:
    """The message with a grid's U1–U4 / V1–V4 keyboard (an album takes none)."""
    return [
        m
        for m in emu.bot_messages(chat_id)
        for row in m.get("reply_markup", {}).get("inline_keyboard", [])[:1]
        if row and row[0]["text"].endswith("U1")
    ]


async def test_grid_buttons_remix_shape_info_history_and_show_after_a_restart(
    telegram_emu: TelegramEmulator,
    telegram_redis_url: str,
    tiny_catalog: Catalog,
    tiny_data_dir: Any,
    runner: Any,
) -> None:
    emu = telegram_emu
    flush = connect(telegram_redis_url)
    await flush.flushall()
    await flush.aclose(close_connection_pool=True)
    settings = settings_for(emu, telegram_redis_url, tiny_data_dir)
    group = emu.group(-1000000901, "artists")
    async with running(settings, tiny_catalog) as bot, worker(settings, runner):
        await replies_to(emu, emu.user_text(group, ALICE, "/imagine a red fox --n 4 --seed 3"))
        (grid,) = await until(lambda: _at_least(bot, 1))
        [keys] = await emu.wait_for(
            lambda: _with_keyboard(emu, group.id), within=60, what="the grid's keyboard"
        )
        # U2, pressed by Bob: his own upscale job of image 2, twice its sides.
        emu.press_button(BOB, keys, f"up:{grid.id}:1")
        up = (await until(lambda: _at_least(bot, 2)))[1]
        assert up.request.task == Task.UPSCALE and up.request.requester.user_id == str(BOB.id)
        upscaled = await emu.wait_for(
            lambda: [m for m in emu.calls_of("sendPhoto") if m.status == 200],
            within=60,
            what="the upscaled photo",
        )
        assert _photo(emu, emu.bot_messages(group.id)[-1]).size == (2 * TILE[0], 2 * TILE[1])
        assert len(upscaled) == 1
        # V1 (subtle): a grid of variations of image 1, the source's model, size and a strength.
        emu.press_button(BOB, keys, f"vs:{grid.id}:0")
        vary = (await until(lambda: _at_least(bot, 3)))[2]
        assert vary.params.task == Task.REMIX and vary.params.model == grid.params.model
        assert (vary.params.width, vary.params.height) == TILE and vary.params.strength == 0.35
        assert vary.params.count == 4
        await emu.wait_for(
            lambda: len(emu.calls_of("sendMediaGroup")) >= 2, within=60, what="the varied grid"
        )
        # A 16:9 photo keeps its shape through /remix.
        wide = emu.user_photo(group, ALICE, png(320, 180, "blue"), caption="/remix in winter")
        await replies_to(emu, wide)
        remix = (await until(lambda: _at_least(bot, 4)))[3]
        assert remix.params.width / remix.params.height > 1.5, remix.params
        await emu.wait_for(
            lambda: len([c for c in emu.calls_of("sendPhoto") if c.status == 200]) >= 2,
            within=60,
            what="the remix",
        )
        remixed = _photo(emu, emu.bot_messages(group.id)[-1])
        assert remixed.width / remixed.height > 1.5
        # Info under the grid: how it was made, as a reply.
        emu.press_button(BOB, keys, f"in:{grid.id}")
        info = await emu.wait_for(
            lambda: [m for m in emu.bot_messages(group.id) if "Model " in m.get("text", "")],
            within=10,
            what="the Info reply",
        )
        assert "seed 3" in info[-1]["text"] and "4 images" in info[-1]["text"]
    # The adapter restarts; the grid's record and its stored images are still there.
    async with running(settings, tiny_catalog) as again:
        assert isinstance(again, Running)
        [listed] = await replies_to(emu, emu.user_text(group, ALICE, "/history"))
        assert grid.id in listed and f"/show {grid.id}" in listed
        albums = len(emu.calls_of("sendMediaGroup"))
        emu.user_text(group, ALICE, f"/show {grid.id}")
        await emu.wait_for(
            lambda: len(emu.calls_of("sendMediaGroup")) > albums, within=20, what="the re-post"
        )
        # Bob may not /show Alice's job; he is told in words.
        [refused] = await replies_to(emu, emu.user_text(group, BOB, f"/show {grid.id}"))
        assert "no job" in refused
