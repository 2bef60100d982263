"""A fourth platform, test-only, on the chat layer: /imagine, /cancel and /jobs end to end through
the real queue on a private Valkey and the real worker on the tiny models."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as sync_redis
from memo_platform import MemoBot, MemoChat
from PIL import Image

from integration.conftest import start_generation
from reelbot.catalog import load_catalog
from reelbot.chat.replies import Button
from reelbot.chat.service import ChatService
from reelbot.chat.surface import Conversation
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.store.connection import connect
from reelbot.store.records import RecordStore

SURFACE_LINES = 150
STEP_S = 30.0
T = TypeVar("T")


async def until(check: Callable[[], T], within: float = STEP_S) -> T:
    """Poll ``check`` until it returns something truthy."""
    async with asyncio.timeout(within):
        while not (found := check()):  # noqa: ASYNC110 (the chat is plain data, polled)
            await asyncio.sleep(0.05)
    return found


@pytest.fixture
async def memo(
    discord_redis_url: str, discord_runner: Any, discord_data_dir: Path
) -> AsyncIterator[tuple[MemoBot, Settings]]:
    with sync_redis.Redis.from_url(discord_redis_url) as r:
        r.flushall()
    settings = Settings(
        redis_url=discord_redis_url, models="tiny", device="cpu", data_dir=discord_data_dir
    )
    redis = connect(discord_redis_url)
    service = ChatService(redis, settings, load_catalog("tiny"), platform="memo")
    chat = MemoChat()
    conversation = Conversation(service, chat, settings, edit_interval_s=0.2, positions_every_s=0.2)
    bot = MemoBot(service, chat, conversation)
    stop = asyncio.Event()
    running = asyncio.create_task(bot.run(stop))
    try:
        yield bot, settings
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await running
        await redis.aclose(close_connection_pool=True)


def test_the_surface_is_small() -> None:
    source = (Path(__file__).parent / "memo_platform.py").read_text().splitlines()
    assert len(source) <= SURFACE_LINES, len(source)


async def test_imagine_jobs_cancel_through_the_real_queue_and_worker(
    memo: tuple[MemoBot, Settings], discord_runner: Any
) -> None:
    bot, settings = memo
    chat = bot.chat
    # Queued while no worker runs: /jobs lists it in this chat, /cancel removes it.
    waiting = await bot.say("ann", "room", "/imagine never drawn", group=True)
    await bot.say("ann", "room", "/jobs", group=True)
    assert waiting in chat.private[-1][1]
    # Its status shows its place in line while it waits, redrawn by the chat layer.
    await until(lambda: [m for m in chat.in_chat("room") if "Queued · position 1" in m.text])
    # A private prompt never shows in the group's /jobs.
    secret = await bot.say("ann", "ann-dm", "/imagine my secret prompt")
    await bot.say("ann", "room", "/jobs", group=True)
    assert "secret" not in chat.private[-1][1] and secret not in chat.private[-1][1]
    await bot.say("ann", "room", "/cancel", group=True)
    assert chat.private[-1][1].startswith("Cancelled")
    redis = connect(settings.effective_redis_url)
    records = RecordStore(redis, finished_ttl_s=60)
    try:
        assert (await records.require(waiting)).status == JobStatus.CANCELLED
        assert (await records.require(secret)).status == JobStatus.QUEUED
        # The cancelled job's status ends in words.
        await until(lambda: [m for m in chat.in_chat("room") if "Cancelled" in m.text])
        await bot.say("bob", "ann-dm", f"/cancel {secret}")
        assert "no job" in chat.private[-1][1].lower()

        stop = asyncio.Event()
        worker = await start_generation(settings, discord_runner, stop)
        try:
            job = await bot.say("ann", "room", "/imagine a red fox --seed 7", group=True)
            posted = await until(lambda: [m for m in chat.in_chat("room") if m.file])
            assert len(posted) == 1 and "--seed 7" in posted[0].text
            image = Image.open(io.BytesIO(posted[0].file or b""))
            assert image.size[0] > 0 and image.format == "PNG"
            assert [b.action for b in posted[0].buttons] == [
                "upscale",
                "vary_subtle",
                "vary_strong",
                "reroll",
                "animate",
                *("zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down"),
                "info",
            ]
            await until(lambda: any("Done" in m.text for m in chat.in_chat("room")))
            async with asyncio.timeout(STEP_S):
                while (await records.require(job)).status != JobStatus.DELIVERED:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            async with asyncio.timeout(30):
                await worker
    finally:
        await redis.aclose(close_connection_pool=True)
    # A bad flag is answered in words and queues nothing.
    await bot.say("ann", "room", "/imagine fox --sed 3", group=True)
    assert "--seed" in chat.private[-1][1]


async def test_a_refused_upload_ends_the_status_in_words(
    memo: tuple[MemoBot, Settings], discord_runner: Any
) -> None:
    bot, settings = memo
    bot.chat.refuse = ValueError("400 Bad Request: file rejected")
    stop = asyncio.Event()
    worker = await start_generation(settings, discord_runner, stop)
    try:
        job = await bot.say("ann", "room", "/imagine a fox", group=True)
        [status] = await until(
            lambda: [m for m in bot.chat.in_chat("room") if "could not be posted" in m.text]
        )
        assert "Sending the result" not in status.text and status.buttons == ()
        assert not [m for m in bot.chat.in_chat("room") if m.file]
        redis = connect(settings.effective_redis_url)
        try:
            record = await RecordStore(redis, finished_ttl_s=60).require(job)
        finally:
            await redis.aclose(close_connection_pool=True)
        assert record.status == JobStatus.FAILED and record.error_code == "undeliverable"
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await worker


async def test_a_post_that_keeps_failing_says_it_is_retrying_then_posts_once(
    memo: tuple[MemoBot, Settings], discord_runner: Any
) -> None:
    bot, settings = memo
    bot.chat.flaky = 3
    stop = asyncio.Event()
    worker = await start_generation(settings, discord_runner, stop)
    try:
        await bot.say("ann", "room", "/imagine a patient fox", group=True)
        await until(lambda: [m for m in bot.chat.in_chat("room") if "still trying" in m.text])
        posted = await until(lambda: [m for m in bot.chat.in_chat("room") if m.file], within=60)
        assert len(posted) == 1
        await until(lambda: [m for m in bot.chat.in_chat("room") if "Done" in m.text])
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await worker


async def test_a_conversation_stopped_past_its_timeout_leaves_no_task_behind(
    memo: tuple[MemoBot, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    bot, settings = memo
    conversation = Conversation(bot.service, bot.chat, settings)
    real_close = conversation.consumer.close

    async def slow_close() -> None:
        await asyncio.sleep(1.0)  # a post still in flight when the platform process stops
        await real_close()

    monkeypatch.setattr(conversation.consumer, "close", slow_close)
    before = asyncio.all_tasks()  # the fixture's own conversation runs beside this one
    conversation.start()
    await asyncio.sleep(0.5)
    await conversation.stop(timeout_s=0.2)
    left = [
        t.get_name()
        for t in asyncio.all_tasks() - before
        if t.get_name() in ("chat-delivery", "chat-positions")
    ]
    assert left == []


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


def _size(data: bytes | None) -> tuple[int, int]:
    return Image.open(io.BytesIO(data or b"")).size


async def test_variations_remix_aspect_history_show_and_info(
    memo: tuple[MemoBot, Settings], discord_runner: Any
) -> None:
    """The creative loop on one platform: V subtle/strong keep the source's size and model, a
    16:9 remix stays 16:9-ish (never a centre-cropped square), /history lists the results,
    /show re-posts one after the adapter restarts, Info tells how it was made, and Re-run with
    the same seed makes the same image."""
    bot, settings = memo
    chat = bot.chat
    stop = asyncio.Event()
    worker = await start_generation(settings, discord_runner, stop)

    def posts() -> list[Any]:
        return [m for m in chat.in_chat("room") if m.file]

    try:
        job = await bot.say("ann", "room", "/imagine a red fox --ar 16:9 --seed 7", group=True)
        [first] = await until(posts)
        wide = _size(first.file)
        assert wide[0] > wide[1]
        by_action = {b.action: b for b in first.buttons}
        # Vary (subtle) and Vary (strong): the source's size and model, a strength each.
        for n, action in enumerate(("vary_subtle", "vary_strong"), start=2):
            varied = await bot.say("bob", "room", by_action[action], group=True)
            assert varied, chat.private[-1:]
            made = await until(lambda n=n: len(posts()) >= n and posts())
            assert _size(made[-1].file) == wide
            record = await _record(settings, varied)
            assert record.params.model == "tiny-zimage" and record.params.task.value == "remix"
            assert record.requester.user_id == "bob"  # whoever clicks pays for their job
            strength = record.params.strength
            assert strength == (0.35 if action == "vary_subtle" else 0.75), strength
        # A 16:9 upload keeps its shape through /remix.
        await bot.say("ann", "room", "/remix in winter", group=True, image=_png(320, 180))
        remixed = await until(lambda: len(posts()) >= 4 and posts())
        width, height = _size(remixed[-1].file)
        assert width / height > 1.5, (width, height)
        # /history lists ann's results here, newest first; bob's DM sees none of them.
        await bot.say("ann", "room", "/history", group=True)
        listed = chat.private[-1][1]
        assert job in listed and f"/show {job}" in listed and "red fox" in listed
        await bot.say("bob", "bob-dm", "/history")
        assert job not in chat.private[-1][1]
        # Info: model, seed, steps, size, and the time it took.
        await bot.say("carol", "room", by_action["info"], group=True)
        info = chat.private[-1][1]
        assert "tiny-zimage" in info and "seed 7" in info and f"{wide[0]}×{wide[1]}" in info
        assert "Took" in info
        # Re-run: the same seed, so the same pixels.
        rerun = await bot.say("ann", "room", Button("rerun", job, "Re-run"), group=True)
        again = await until(lambda: len(posts()) >= 5 and posts())
        assert (await _record(settings, rerun)).params.seed == 7
        assert _pixels(again[-1].file) == _pixels(first.file)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await worker
    # A fresh adapter (a restart) on the same Redis: /show posts the stored result again.
    redis = connect(settings.effective_redis_url)
    try:
        service = ChatService(redis, settings, load_catalog("tiny"), platform="memo")
        fresh = MemoBot(service, MemoChat(), Conversation(service, MemoChat(), settings))
        assert await fresh.say("ann", "room", f"/show {job}", group=True) == ""
        [shown] = [m for m in fresh.chat.in_chat("room") if m.file]
        assert shown.file == first.file and "info" in [b.action for b in shown.buttons]
        # Someone else's job, or one from another chat, is not shown.
        await fresh.say("bob", "room", f"/show {job}", group=True)
        assert "no job" in fresh.chat.private[-1][1]
    finally:
        await redis.aclose(close_connection_pool=True)


async def _record(settings: Settings, job_id: str) -> Any:
    redis = connect(settings.effective_redis_url)
    try:
        return await RecordStore(redis, finished_ttl_s=60).require(job_id)
    finally:
        await redis.aclose(close_connection_pool=True)


def _pixels(data: bytes | None) -> bytes:
    return Image.open(io.BytesIO(data or b"")).convert("RGB").tobytes()


def _clip() -> bytes:
    from reelbot.generation.media import encode_video

    frames = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(9)]
    return encode_video(frames, fps=8, max_bytes=10**7).data


def _mask(width: int, height: int) -> bytes:
    out = io.BytesIO()
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    mask.save(out, "PNG")
    return out.getvalue()


async def test_video_and_edit_buttons_through_the_chat_layer(
    memo: tuple[MemoBot, Settings], discord_runner: Any
) -> None:
    """Written once in chat/, for every platform: /restyle of a 16:9 clip stays wide; Extend
    makes it longer, Smooth doubles its frames, Upscale its size; Zoom Out 2x doubles an image;
    /remix with a mask is a region edit; /describe offers four prompts and pressing one queues an
    /imagine of it; /animate with two images ends on the second (keyframes)."""
    from reelbot.generation.media import probe_video

    bot, settings = memo
    chat = bot.chat
    stop = asyncio.Event()
    worker = await start_generation(settings, discord_runner, stop)

    def posts() -> list[Any]:
        return [m for m in chat.in_chat("room") if m.file]

    async def nth(n: int) -> Any:
        return (await until(lambda: len(posts()) >= n and posts()))[n - 1]

    try:
        restyled = await bot.say("ann", "room", "/restyle watercolor", group=True, video=_clip())
        assert restyled, chat.private[-1:]
        clip = await nth(1)
        info = probe_video(clip.file)
        assert info.width > info.height  # the input's aspect ratio
        actions = {b.action: b for b in clip.buttons}
        assert {"extend", "smooth", "reroll", "info"} <= set(actions)
        await bot.say("bob", "room", actions["extend"], group=True)
        assert probe_video((await nth(2)).file).frames > info.frames
        await bot.say("bob", "room", actions["smooth"], group=True)
        assert probe_video((await nth(3)).file).frames == 2 * info.frames
        # --extend JOB: only one's own video; bob's asking for ann's is told there is none.
        await bot.say("bob", "room", f"/animate --extend {restyled} more", group=True)
        assert "no video" in chat.private[-1][1]
        extended = await bot.say("ann", "room", f"/animate --extend {restyled}", group=True)
        assert extended and probe_video((await nth(4)).file).frames > info.frames

        await bot.say("ann", "room", "/imagine a lighthouse --seed 3", group=True)
        source = await nth(5)
        zoom = {b.action: b for b in source.buttons}["zoom_2"]
        await bot.say("ann", "room", zoom, group=True)
        width, height = _size(source.file)
        assert _size((await nth(6)).file) == (2 * width, 2 * height)

        mask = _mask(width, height)
        masked = await bot.say(
            "ann", "room", "/remix a red door", group=True, image=source.file, mask=mask
        )
        await nth(7)
        assert (await _record(settings, masked)).params.task.value == "inpaint"

        described = await bot.say("ann", "room", "/describe", group=True, image=source.file)
        ideas = [b for b in (await nth(8)).buttons if b.action == "imagine"]
        assert [b.label for b in ideas] == ["1", "2", "3", "4"]
        texts = (await _record(settings, described)).result.texts
        again = await bot.say("carol", "room", ideas[2], group=True)
        record = await _record(settings, again)
        assert record.params.task.value == "imagine" and record.requester.user_id == "carol"
        assert record.params.prompt == texts[2]
        await nth(9)

        first, last = _png(64, 64), _png(64, 64)
        keyed = await bot.say(
            "ann", "room", "/animate --model tiny-ltx", group=True, image=first, images=[last]
        )
        assert probe_video((await nth(10)).file).frames > 1
        assert (await _record(settings, keyed)).params.task.value == "keyframes"

        # Upscale under the smoothed clip: every frame twice the size; not offered again.
        smoothed = await nth(3)
        up = {b.action: b for b in smoothed.buttons}["upscale"]
        upscaled = await bot.say("bob", "room", up, group=True)
        done = probe_video((await nth(11)).file)
        assert (done.width, done.height) == (2 * info.width, 2 * info.height)
        assert (await _record(settings, upscaled)).params.task.value == "upscale_video"
        assert "upscale" not in {b.action for b in (await nth(11)).buttons}
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await worker
