"""Clips, albums and the edit buttons on Telegram, end to end through the Bot API emulator, the
real queue and the real worker on the tiny models (the memo platform's loop, in Bot API terms):
/restyle with a video as caption, Extend, /smooth replying to an animation (a GIF), Zoom Out 2x,
/remix with an album's second photo as the mask, /describe and one of its 1-4, /blend of an
album and /animate of an album's first and last photo (keyframes)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from telegram_emulator import TelegramEmulator
from test_creative_web import _gif
from test_telegram_adapter import (
    ALICE,
    BOB,
    _at_least,
    replies_to,
    running,
    settings_for,
    until,
    worker,
)

from reelbot.catalog import Catalog, Task
from reelbot.chat.albums import ONE_PART
from reelbot.errors import UserError
from reelbot.generation.media import encode_video, probe_video
from reelbot.jobs import check_prompt_text
from reelbot.store.connection import connect


def _clip() -> bytes:
    frames = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(9)]
    return encode_video(frames, fps=8, max_bytes=10**7).data


def _png(width: int, height: int, mask: bool = False) -> bytes:
    out = io.BytesIO()
    image = Image.new("L" if mask else "RGB", (width, height), 0 if mask else (200, 120, 40))
    if mask:
        image.paste(255, (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    image.save(out, "PNG")
    return out.getvalue()


def _file(emu: TelegramEmulator, message: dict[str, Any]) -> bytes:
    media = message.get("video") or message["photo"][-1]
    return emu.files[media["file_id"]].data


def _words(text: str) -> bool:
    try:
        check_prompt_text(text)
    except UserError:
        return False
    return True


def _keys(message: dict[str, Any]) -> list[str]:
    return [b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row]


async def test_clips_albums_and_edit_buttons(
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
    chat = emu.private_chat(ALICE)  # in a group, privacy mode hides an album's other parts

    def results() -> list[dict[str, Any]]:
        """The results posted: a photo or video with the Info button."""
        return [
            m
            for m in emu.bot_messages(chat.id)
            if ("video" in m or "photo" in m) and any(k.startswith("in:") for k in _keys(m))
        ]

    async def nth(n: int) -> dict[str, Any]:
        found = await emu.wait_for(lambda: len(results()) >= n, within=90, what=f"result {n}")
        assert found
        return results()[n - 1]

    settings = settings_for(emu, telegram_redis_url, tiny_data_dir)
    async with running(settings, tiny_catalog) as bot, worker(settings, runner):
        bot.service.layer.albums.settle_s = 0.2

        async def job(n: int) -> Any:
            return (await until(lambda: _at_least(bot, n)))[n - 1]

        # /restyle with the clip as a video, its caption the command: the 16:9 shape is kept.
        clip = _clip()
        emu.user_media(chat, ALICE, [("video", clip)], caption="/restyle watercolor")
        restyled = await nth(1)
        assert (await job(1)).params.task == Task.RESTYLE
        info = probe_video(_file(emu, restyled))
        assert info.width > info.height
        # Extend (pressed by Bob, his own job): a longer clip.
        assert {f"ex:{(await job(1)).id}", f"sm:{(await job(1)).id}"} <= set(_keys(restyled))
        emu.press_button(BOB, restyled, f"ex:{(await job(1)).id}")
        assert probe_video(_file(emu, await nth(2))).frames > info.frames
        # /smooth as a reply to an animation (a GIF, as Telegram keeps it): twice the frames.
        [gif] = emu.user_media(chat, ALICE, [("animation", clip)])
        emu.user_text(chat, ALICE, "/smooth", reply_to=gif["message"])
        assert probe_video(_file(emu, await nth(3))).frames == 2 * probe_video(clip).frames

        # Zoom Out 2x under an image: twice its sides.
        emu.user_text(chat, ALICE, "/imagine a lighthouse --seed 3")
        source = await nth(4)
        emu.press_button(ALICE, source, f"zo:{(await job(4)).id}")
        size = Image.open(io.BytesIO(_file(emu, source))).size
        zoomed = Image.open(io.BytesIO(_file(emu, await nth(5)))).size
        assert zoomed == (2 * size[0], 2 * size[1])

        # /remix with an album: the second photo is the mask, so it is an inpaint.
        album = [("photo", _png(*size)), ("photo", _png(*size, mask=True))]
        emu.user_media(chat, ALICE, album, caption="/remix a red door")
        await nth(6)
        inpaint = await job(6)
        assert inpaint.params.task == Task.INPAINT and inpaint.request.mask_ref

        # /describe: four prompts (the tiny model's are random letters); pressing one that
        # reads as words queues an /imagine of it, on the presser's quota.
        emu.user_media(chat, ALICE, [("photo", _file(emu, source))], caption="/describe")
        described = await nth(7)
        ideas = [k for k in _keys(described) if k.startswith("im:")]
        assert len(ideas) == 4
        done = (await bot.records.require((await job(7)).id)).result
        assert done is not None and len(done.texts) == 4
        pick = next(i for i, text in enumerate(done.texts) if _words(text))
        emu.press_button(BOB, described, ideas[pick])
        again = await job(8)
        assert again.params.task == Task.IMAGINE and again.requester.user_id == str(BOB.id)
        assert again.params.prompt == done.texts[pick]
        await nth(8)

        # /blend of an album's two photos; /animate of two: first and last frame.
        pair = [("photo", _png(64, 64)), ("photo", _png(64, 64))]
        emu.user_media(chat, ALICE, pair, caption="/blend --model tiny-flux2")
        await nth(9)
        blend = await job(9)
        assert blend.params.task == Task.BLEND and len(blend.request.more_refs) == 1
        emu.user_media(chat, ALICE, pair, caption="/animate --model tiny-ltx")
        assert probe_video(_file(emu, await nth(10))).frames > 1
        assert (await job(10)).params.task == Task.KEYFRAMES

        # One photo is no /blend: the refusal says how many it takes.
        lone = emu.user_media(chat, ALICE, [("photo", _png(64, 64))], caption="/blend")
        [refused] = await replies_to(emu, lone[0])
        assert "2 to 4 images" in refused
        # In a group, privacy mode hands the bot only the album's photo with the command: said
        # so, rather than "2 to 4 images" (or a /remix without its mask).
        group = emu.group(-1001234567)
        seen = emu.user_media(group, ALICE, pair, caption="/blend --model tiny-flux2")
        [refused] = await replies_to(emu, seen[0])
        assert refused == ONE_PART

        # Upscale under the smoothed clip (Bob's press): every frame twice the size, and no
        # Upscale under the upscaled one.
        smoothed = await nth(3)
        emu.press_button(BOB, smoothed, f"up:{(await job(3)).id}")
        upscaled = await nth(11)
        before, after = probe_video(_file(emu, smoothed)), probe_video(_file(emu, upscaled))
        assert (after.width, after.height) == (2 * before.width, 2 * before.height)
        assert (await job(11)).params.task == Task.UPSCALE_VIDEO
        assert not any(k.startswith("up:") for k in _keys(upscaled))

        # A GIF sent as a file is the clip of /smooth (it was read as a picture and refused).
        gif = _gif()
        emu.user_document(
            chat, ALICE, gif, file_name="a.gif", mime_type="image/gif", caption="/smooth"
        )
        assert probe_video(_file(emu, await nth(12))).frames == 2 * probe_video(gif).frames
