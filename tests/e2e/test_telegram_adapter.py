"""The Telegram command layer against the Bot API emulator, on a real Valkey and ChatService.

The real PTB application polls the emulator and the real chat layer queues on a private Valkey;
no worker runs unless a test starts one, so these tests show what users see for each command
and each kind of bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from telegram import Bot
from telegram.error import Conflict
from telegram_emulator import TOKEN, TelegramEmulator, User

from reelbot.bots.telegram.app import CONFLICT_HELP
from reelbot.bots.telegram.service import TelegramService
from reelbot.bots.telegram.webhook import WebhookConfig
from reelbot.catalog import Catalog
from reelbot.chat.surface import result_buttons
from reelbot.config import Settings
from reelbot.errors import Busy
from reelbot.governance.quotas import QuotaBook
from reelbot.jobs import JobStatus
from reelbot.runtime.server import free_port
from reelbot.store import keys
from reelbot.store.connection import connect
from reelbot.store.progress import ProgressEvent, publish
from reelbot.store.records import JobRecord, RecordStore, ResultInfo
from reelbot.store.results import load_input
from reelbot.worker.worker import serve_generation

ALICE = User(111, "Alice", "alice")
BOB = User(222, "Bob", "bob")
GROUP_ID = -1001234567890


@dataclass
class Running:
    """The Telegram process on a flushed Valkey: what a test reads back from the queue."""

    service: TelegramService
    settings: Settings
    records: RecordStore

    @property
    def conflicts(self) -> int:
        return self.service.adapter.conflicts

    async def jobs(self) -> list[JobRecord]:
        """Every job the bot queued, oldest first."""
        redis = self.records.redis
        found = [
            await self.records.get(k.decode().removeprefix(keys.record("")))
            for k in await redis.keys(keys.record("*"))
        ]
        return sorted((r for r in found if r is not None), key=lambda r: r.created_at)

    async def input_of(self, job: JobRecord) -> bytes | None:
        return await load_input(self.records.redis, job.request.image_ref or "")

    async def inputs(self) -> list[bytes]:
        return list(await self.records.redis.keys(keys.input_image("*")))

    async def status_of(self, job_id: str) -> JobStatus | None:
        record = await self.records.get(job_id)
        return None if record is None else record.status


def settings_for(emu: TelegramEmulator, url: str, data_dir: Path, **more: Any) -> Settings:
    return Settings(
        redis_url=url,
        telegram_token=TOKEN,
        telegram_api_url=emu.root,
        models="tiny",
        data_dir=data_dir,
        device="cpu",
        heartbeat_s=0.5,
        dead_worker_s=2.0,
        **more,
    )


@asynccontextmanager
async def running(settings: Settings, catalog: Catalog, **kw: Any) -> AsyncIterator[Running]:
    redis = connect(settings.effective_redis_url)
    service = TelegramService(
        settings,
        redis,
        catalog,
        token=TOKEN,
        poll_timeout=1,
        private_interval=kw.pop("private_interval", 0.2),
        group_interval=kw.pop("group_interval", 0.6),
        delivery_poll_s=0.2,
    )
    try:
        await service.start(kw.pop("webhook", None))
        yield Running(service, settings, RecordStore(redis, finished_ttl_s=600))
    finally:
        await service.stop()
        await redis.aclose(close_connection_pool=True)


@asynccontextmanager
async def worker(settings: Settings, runner: Any) -> AsyncIterator[None]:
    """A real generation worker on the tiny models, until the block ends."""
    stop = asyncio.Event()
    queues = [settings.image_queue, settings.video_queue]
    url = settings.effective_redis_url
    task = asyncio.create_task(serve_generation(settings, runner, queues, redis_url=url, stop=stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


@pytest.fixture
async def bot(
    telegram_emu: TelegramEmulator,
    telegram_redis_url: str,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
) -> AsyncIterator[Running]:
    settings = settings_for(telegram_emu, telegram_redis_url, tiny_data_dir)
    flush = connect(telegram_redis_url)
    await flush.flushall()
    await flush.aclose(close_connection_pool=True)
    async with running(settings, tiny_catalog) as it:
        yield it


def png(width: int = 400, height: int = 300, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


async def replies_to(emu: TelegramEmulator, update: dict[str, Any], n: int = 1) -> list[str]:
    """The texts of the bot's first ``n`` replies to the update's message."""
    message = update["message"]
    chat_id = message["chat"]["id"]

    def found() -> list[str]:
        return [
            m["text"]
            for m in emu.bot_messages(chat_id)
            if m.get("reply_to_message", {}).get("message_id") == message["message_id"]
            and "text" in m
        ]

    texts: list[str] = await emu.wait_for(lambda: len(found()) >= n and found(), what="reply")
    return texts


async def test_start_registers_every_command_with_a_description(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    names = [c["command"] for c in telegram_emu.commands]
    assert names == [
        *("imagine", "remix", "video", "animate", "upscale", "restyle", "smooth", "blend"),
        *("describe", "history", "show", "jobs", "cancel", "quota", "models", "help"),
    ]
    assert all(c["description"] for c in telegram_emu.commands)
    assert bot.service.adapter.bot.username == "emu_bot"


@pytest.mark.parametrize("where", ["private", "group"])
async def test_imagine_answers_with_a_status_message_within_a_second(
    telegram_emu: TelegramEmulator, bot: Running, where: str
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE) if where == "private" else emu.group(GROUP_ID)
    command = (
        "/imagine a red fox --seed 42"
        if where == "private"
        else "/imagine@emu_bot a red fox --seed 42"
    )
    update = emu.user_text(chat, ALICE, command)
    sent_at = time.monotonic()
    (status,) = await replies_to(emu, update)
    first = emu.calls_of("sendMessage", chat.id)[0]
    assert first.at - sent_at < 1.0
    assert status.startswith("⏳ Queued") and "a red fox" in status

    (job,) = await until(lambda: _at_least(bot, 1))
    assert job.params.seed == 42 and job.params.prompt == "a red fox"
    reply = job.request.reply
    assert reply.channel_id == str(chat.id)
    assert reply.message_id == str(update["message"]["message_id"])
    status_message = emu.bot_messages(chat.id)[0]
    assert reply.status_message_id == str(status_message["message_id"])
    assert job.request.requester.server_id == (str(GROUP_ID) if where == "group" else None)
    cancel = status_message["reply_markup"]["inline_keyboard"][0][0]
    assert cancel["callback_data"] == f"cx:{job.id}"
    # The position arrives in an edit at the chat's next slot.
    await emu.wait_for(lambda: "position" in emu.bot_messages(chat.id)[0]["text"], what="position")


async def test_commands_for_another_bot_are_left_alone(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    group = emu.group(GROUP_ID)
    emu.user_text(group, ALICE, "/imagine@other_bot a fox")
    emu.user_text(group, ALICE, "/frobnicate")
    marker = emu.user_text(group, ALICE, "/help@emu_bot")
    await replies_to(emu, marker)
    assert len(emu.calls_of("sendMessage", group.id)) == 1
    assert await bot.jobs() == []


async def test_unknown_commands_get_a_pointer_to_help_in_private(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    chat = telegram_emu.private_chat(ALICE)
    (text,) = await replies_to(telegram_emu, telegram_emu.user_text(chat, ALICE, "/frobnicate"))
    assert "/help" in text


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("no prompt", "/imagine needs a prompt"),
        ("emoji only", "in words"),
        ("bad flag", "--ar 99:1 is out of range"),
        ("remix without photo", "/remix needs an image"),
        ("reply to a sticker", "Stickers can't be used"),
        ("pdf as document", "is not an image"),
        ("huge document", "up to 20 MB"),
        ("huge file without a size", "That image is over 20 MB; bots can only download"),
        ("broken image", "not an image reelbot can read"),
    ],
)
async def test_bad_input_gets_a_short_reply_and_nothing_is_queued(
    telegram_emu: TelegramEmulator,
    bot: Running,
    kind: str,
    needle: str,
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    if kind == "no prompt":
        update = emu.user_text(chat, ALICE, "/imagine")
    elif kind == "emoji only":
        update = emu.user_text(chat, ALICE, "/imagine 🦊🦊🦊 --seed 3")
    elif kind == "bad flag":
        update = emu.user_text(chat, ALICE, "/imagine a fox --ar 99:1")
    elif kind == "remix without photo":
        update = emu.user_text(chat, ALICE, "/remix make it blue")
    elif kind == "reply to a sticker":
        sticker = emu.user_sticker(chat, ALICE)["message"]
        update = emu.user_text(chat, ALICE, "/remix make it blue", reply_to=sticker)
    elif kind == "pdf as document":
        update = emu.user_document(
            chat,
            ALICE,
            b"%PDF-1.4",
            file_name="notes.pdf",
            mime_type="application/pdf",
            caption="/remix make it blue",
        )
    elif kind == "huge document":
        update = emu.user_document(
            chat,
            ALICE,
            png(),
            file_name="big.png",
            mime_type="image/png",
            caption="/animate",
            reported_size=25 * 1024 * 1024,
        )
    elif kind == "huge file without a size":
        update = emu.user_document(
            chat,
            ALICE,
            b"\0" * (20 * 1024 * 1024 + 1),
            file_name="big.png",
            mime_type="image/png",
            caption="/remix make it blue",
            reported_size=0,
        )
    else:
        update = emu.user_document(
            chat,
            ALICE,
            b"\x89PNG not really",
            file_name="x.png",
            mime_type="image/png",
            caption="/remix make it blue",
        )
    (text,) = await replies_to(emu, update)
    assert needle in text
    assert len(text) < 300
    assert await bot.jobs() == [] and await bot.inputs() == []
    assert not emu.calls_of("editMessageText")


async def test_remix_takes_the_largest_photo_from_the_caption_message(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    group = emu.group(GROUP_ID)
    original = png(800, 600, "blue")
    update = emu.user_photo(group, ALICE, original, caption="/remix@emu_bot make it winter")
    await replies_to(emu, update)
    (job,) = await until(lambda: _at_least(bot, 1))
    assert job.request.task == "remix" and job.params.prompt == "make it winter"
    assert await bot.input_of(job) == original
    file_ids = [c.params["file_id"] for c in emu.calls_of("getFile")]
    assert file_ids == [update["message"]["photo"][-1]["file_id"]]


async def test_remix_accepts_an_image_sent_as_a_file(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    original = png(1200, 900, "navy")
    update = emu.user_document(
        chat, ALICE, original, file_name="scan.png", mime_type="image/png", caption="/remix ink"
    )
    await replies_to(emu, update)
    (job,) = await until(lambda: _at_least(bot, 1))
    assert await bot.input_of(job) == original  # uncompressed, as sent


async def test_animate_replying_to_a_photo_uses_that_photo(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    original = png(320, 320, "green")
    photo = emu.user_photo(chat, ALICE, original)["message"]
    update = emu.user_text(chat, ALICE, "/animate", reply_to=photo)
    await replies_to(emu, update)
    (job,) = await until(lambda: _at_least(bot, 1))
    assert job.request.task == "animate" and await bot.input_of(job) == original


async def test_a_duplicated_update_makes_one_job_and_one_status(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a lighthouse")
    await replies_to(emu, update)
    emu.redeliver(update)
    marker = emu.user_text(chat, ALICE, "/help")
    await replies_to(emu, marker)
    assert len(await until(lambda: _at_least(bot, 1))) == 1
    assert len(emu.calls_of("sendMessage", chat.id)) == 2  # one status, one help


async def test_info_commands(telegram_emu: TelegramEmulator, bot: Running) -> None:
    emu = telegram_emu
    chat = emu.private_chat(BOB)
    redis = bot.records.redis
    await QuotaBook(redis, bot.settings).change(
        f"telegram:user:{BOB.id}", {"daily": 42}, actor="cli:test", origin="cli"
    )
    (models,) = await replies_to(emu, emu.user_text(chat, BOB, "/models"))
    assert "/imagine: tiny-zimage (default)" in models and "/video: tiny-wan (default)" in models
    (help_,) = await replies_to(emu, emu.user_text(chat, BOB, "/help"))
    assert "/imagine a red fox" in help_ and "--ar" in help_
    (quota,) = await replies_to(emu, emu.user_text(chat, BOB, "/quota"))
    assert "42 of 42" in quota, quota
    (jobs,) = await replies_to(emu, emu.user_text(chat, BOB, "/jobs"))
    assert "no queued or running jobs" in jobs
    await replies_to(emu, emu.user_text(chat, BOB, "/video waves at dusk"))
    (job,) = await until(lambda: _at_least(bot, 1))
    (jobs,) = await replies_to(emu, emu.user_text(chat, BOB, "/jobs"))
    assert job.id in jobs and "/video" in jobs and "waves at dusk" in jobs
    (cancelled,) = await replies_to(emu, emu.user_text(chat, BOB, "/cancel"))
    assert job.id in cancelled and await bot.status_of(job.id) == JobStatus.CANCELLED


async def test_cancel_button_is_only_for_the_owner(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    group = emu.group(GROUP_ID)
    update = emu.user_text(group, ALICE, "/video@emu_bot rain on a window")
    await replies_to(emu, update)
    (job,) = await until(lambda: _at_least(bot, 1))
    status = emu.bot_messages(group.id)[0]
    emu.press_button(BOB, status, f"cx:{job.id}")
    await emu.wait_for(lambda: emu.calls_of("answerCallbackQuery"), what="answer")
    # The queue's words for someone else's job: it does not say whether the job exists.
    assert "no job" in emu.calls_of("answerCallbackQuery")[0].params["text"]
    assert await bot.status_of(job.id) == JobStatus.QUEUED
    emu.press_button(ALICE, status, f"cx:{job.id}")
    await emu.wait_for(
        lambda: emu.bot_messages(group.id)[0]["text"].startswith("🚫 Cancelled"), what="cancel"
    )
    assert await bot.status_of(job.id) == JobStatus.CANCELLED
    assert "reply_markup" not in emu.bot_messages(group.id)[0]


async def test_a_group_admin_may_cancel_anyones_job(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    group = emu.group(GROUP_ID, admins={BOB.id})
    await replies_to(emu, emu.user_text(group, ALICE, "/imagine@emu_bot a kite"))
    (job,) = await until(lambda: _at_least(bot, 1))
    emu.press_button(BOB, emu.bot_messages(group.id)[0], f"cx:{job.id}")
    await emu.wait_for(lambda: emu.calls_of("answerCallbackQuery"), what="answer")
    assert await bot.status_of(job.id) == JobStatus.CANCELLED


async def until(check: Any, within: float = 30.0) -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    async with asyncio.timeout(within):
        while not (found := await check()):  # noqa: ASYNC110 (polls Redis)
            await asyncio.sleep(0.05)
    return found


async def test_result_post_and_buttons(
    telegram_emu: TelegramEmulator, bot: Running, runner: Any
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a <b>bold</b> fox & co --seed 9")
    async with worker(bot.settings, runner):
        await replies_to(emu, update)
        (job,) = await until(lambda: _at_least(bot, 1))
        await emu.wait_for(lambda: emu.calls_of("sendPhoto"), within=60, what="the result")
    (call,) = emu.calls_of("sendPhoto")
    assert call.params["parse_mode"] == "HTML"
    posted = emu.bot_messages(chat.id)[-1]
    assert posted["reply_to_message"]["message_id"] == update["message"]["message_id"]
    assert posted["caption"].startswith("a <b>bold</b> fox & co\n")  # escaped, shown as typed
    assert "--seed 9" in posted["caption"]
    got = emu.files[posted["photo"][-1]["file_id"]].data
    assert Image.open(io.BytesIO(got)).size == (64, 64)
    rows = posted["reply_markup"]["inline_keyboard"]
    data = [b["callback_data"] for row in rows for b in row]
    shorts = ("up", "vs", "vx", "rr", "an", "zo", "zh", "pl", "pr", "pu", "pd", "in")
    assert data == [f"{short}:{job.id}" for short in shorts]
    assert all(len(row) <= 5 for row in rows)
    await emu.wait_for(lambda: emu.bot_messages(chat.id)[0]["text"].startswith("✅ Done"))

    # Re-roll: a new job with the same prompt and a new seed, answered under the result.
    emu.press_button(BOB, posted, f"rr:{job.id}")
    jobs = await until(lambda: _at_least(bot, 2))
    reroll = jobs[1]
    assert reroll.params.prompt == job.params.prompt and reroll.params.seed != 9
    assert reroll.request.requester.user_id == str(BOB.id)
    # Variations: a remix of the result image itself, from the stored result, so a getFile
    # that fails (it used to lose the click without a word) does not matter.
    emu.fail("getFile", 500, 5)
    emu.press_button(ALICE, posted, f"vs:{job.id}")
    variation = (await until(lambda: _at_least(bot, 3)))[2]
    assert variation.request.task == "remix"
    assert await bot.input_of(variation) == got


async def _at_least(bot: Running, n: int) -> list[JobRecord] | None:
    jobs = await bot.jobs()
    return jobs if len(jobs) >= n else None


async def test_oversized_images_go_as_documents(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    await replies_to(emu, emu.user_text(chat, ALICE, "/imagine a panorama"))
    (job,) = await until(lambda: _at_least(bot, 1))
    wide = png(4200, 200)  # a 21:1 strip is over the photo ratio limit
    info = ResultInfo(ref="r", mime="image/png", ext="png", size=len(wide), width=4200, height=200)
    done = job.model_copy(update={"result": info})
    await bot.service.surface.post_result(done, wide, result_buttons(done))
    assert not emu.calls_of("sendPhoto") and len(emu.calls_of("sendDocument")) == 1


async def test_progress_edits_are_throttled_and_never_identical(
    telegram_emu: TelegramEmulator, bot: Running
) -> None:
    emu = telegram_emu
    group = emu.group(GROUP_ID)
    await replies_to(emu, emu.user_text(group, ALICE, "/imagine@emu_bot a storm"))
    (job,) = await until(lambda: _at_least(bot, 1))
    for step in (1, 1, 2, 2, 3, 4, 5, 6, 7, 8):
        event = ProgressEvent(
            job_id=job.id, status=JobStatus.RUNNING, step=step, total=8, at=time.time()
        )
        await publish(bot.records.redis, "telegram", event)
        await asyncio.sleep(0.15)
    await emu.wait_for(lambda: " 8/8" in emu.bot_messages(group.id)[0]["text"], what="last")
    edits = emu.calls_of("editMessageText", group.id)
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= 0.55 for gap in gaps), gaps  # the group interval here is 0.6 s
    texts = [e.params["text"] for e in edits]
    assert len(texts) == len(set(texts)) and len(edits) < 6
    assert not [c for c in emu.calls if c.status == 400]


async def test_429s_are_waited_out(telegram_emu: TelegramEmulator, bot: Running) -> None:
    emu = telegram_emu
    chat = emu.private_chat(ALICE)
    emu.fail_next("sendMessage", 2, retry_after=1)
    update = emu.user_text(chat, ALICE, "/imagine a red fox")
    sent_at = time.monotonic()
    await replies_to(emu, update)
    assert time.monotonic() - sent_at >= 2.0  # two retry_after waits
    assert len(await until(lambda: _at_least(bot, 1))) == 1
    assert [c.status for c in emu.calls if c.method == "sendMessage"] == [429, 429, 200]


async def test_a_second_poller_is_reported_as_a_conflict(
    telegram_emu: TelegramEmulator, bot: Running, caplog: pytest.LogCaptureFixture
) -> None:
    other = Bot(TOKEN, base_url=f"{telegram_emu.root}/bot")
    with caplog.at_level(logging.ERROR, logger="reelbot.bots.telegram.app"):
        async with other:
            for _ in range(3):
                with contextlib.suppress(Conflict):
                    await other.get_updates(timeout=1)
                if bot.conflicts:
                    break
    assert bot.conflicts >= 1
    assert CONFLICT_HELP in caplog.text


async def test_webhook_mode_takes_updates_only_with_the_secret(
    telegram_emu: TelegramEmulator, bot: Running, tiny_catalog: Catalog
) -> None:
    emu = telegram_emu
    await bot.service.stop()  # this test runs its own, in webhook mode
    port = free_port()
    hook = WebhookConfig(
        url=f"http://127.0.0.1:{port}/telegram", secret="s3cret-Token_1", port=port
    )
    async with running(bot.settings, tiny_catalog, webhook=hook):
        hooked = time.monotonic()
        assert emu.webhook == {"url": hook.url, "secret_token": hook.secret}
        chat = emu.private_chat(ALICE)
        update = emu.user_text(chat, ALICE, "/imagine a fox on a hill")
        await replies_to(emu, update)
        assert (update["update_id"], 200) in emu.webhook_posts
        assert len(await until(lambda: _at_least(bot, 1))) == 1

        forged = emu.user_text(chat, BOB, "/imagine forged")  # also POSTed by the emulator
        forged = {**forged, "update_id": forged["update_id"] + 1000}
        async with httpx.AsyncClient(timeout=5) as client:
            for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                response = await client.post(hook.url, json=forged, headers=headers)
                assert response.status_code == 403
        await until(lambda: _at_least(bot, 2))
        assert not [c for c in emu.calls_of("getUpdates") if c.at > hooked]


@pytest.mark.parametrize(
    ("error", "status_says", "reply_says"),
    [
        (Busy("reelbot is busy: 500 jobs are waiting.", retry_after=60), "reelbot is busy", None),
        (RuntimeError("redis exploded"), "could not be queued", "Something went wrong (ref "),
    ],
)
async def test_a_failed_submit_ends_the_status_message(
    telegram_emu: TelegramEmulator,
    bot: Running,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status_says: str,
    reply_says: str | None,
) -> None:
    emu = telegram_emu

    async def refuse(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(bot.service.service.queue, "submit", refuse)
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a crowded harbour")
    (_status, *more) = await replies_to(emu, update, n=2 if reply_says else 1)
    await emu.wait_for(lambda: status_says in emu.bot_messages(chat.id)[0]["text"], what="edit")
    assert "reply_markup" not in emu.bot_messages(chat.id)[0]  # no Cancel for a job that isn't
    if reply_says:
        assert more and more[0].startswith(reply_says) and "exploded" not in more[0]


async def test_the_emulator_answers_injected_errors_in_the_bot_api_shape(
    telegram_emu: TelegramEmulator,
) -> None:
    emu = telegram_emu
    emu.fail("getMe", 503, 1, "Service Unavailable: try later")
    emu.fail("getMe", 403)
    async with httpx.AsyncClient(base_url=f"{emu.root}/bot{TOKEN}", timeout=5) as http:
        first, second, third = [await http.post("/getMe") for _ in range(3)]
    assert first.status_code == 503
    assert first.json() == {
        "ok": False,
        "error_code": 503,
        "description": "Service Unavailable: try later",
    }
    assert second.status_code == 403 and second.json()["description"] == "Forbidden"
    assert third.status_code == 200 and third.json()["result"]["username"] == "emu_bot"


@pytest.mark.parametrize(("status", "times", "retried"), [(500, 5, True), (400, 1, False)])
async def test_a_failing_command_menu_does_not_stop_the_bot(
    telegram_emu: TelegramEmulator,
    bot: Running,
    tiny_catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    times: int,
    retried: bool,
) -> None:
    from reelbot.bots.telegram import app as telegram_app
    from reelbot.runtime.supervise import Backoff

    monkeypatch.setattr(telegram_app, "STARTUP_RETRY", Backoff(first_s=0.05, max_s=0.2))
    emu = telegram_emu
    emu.fail("setMyCommands", status, times)
    await bot.service.stop()  # this test starts its own
    emu.commands.clear()
    emu.calls.clear()
    with caplog.at_level(logging.WARNING, logger="reelbot"):
        async with running(bot.settings, tiny_catalog):
            chat = emu.private_chat(ALICE)
            (text,) = await replies_to(emu, emu.user_text(chat, ALICE, "/help"))
            assert "/imagine" in text
            if retried:
                # Telegram recovers after five 500s; the menu arrives then.
                await emu.wait_for(lambda: emu.commands, what="the command menu")
            else:
                await asyncio.sleep(0.5)  # a 400 will not get better: one try only
    statuses = [c.status for c in emu.calls if c.method == "setMyCommands"]
    assert statuses == [status] * times + ([200] if retried else [])
    assert bool(emu.commands) == retried
    assert "setMyCommands" in caplog.text


async def test_edit_region_sends_the_presser_a_private_link(
    telegram_emu: TelegramEmulator,
    telegram_redis_url: str,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
) -> None:
    """With REELBOT_PUBLIC_URL a result in a group offers Edit region; the link goes to the
    presser's private chat with the bot, never the group, and a presser the bot cannot write to
    yet is told how to get it."""
    from reelbot.queue.delivery import enqueue_delivery
    from reelbot.store.results import RedisResultStore

    emu = telegram_emu
    flush = connect(telegram_redis_url)
    await flush.flushall()
    await flush.aclose(close_connection_pool=True)
    public = "https://reelbot.example.com"
    settings = settings_for(emu, telegram_redis_url, tiny_data_dir, public_url=public)
    async with running(settings, tiny_catalog) as bot:
        group = emu.group(GROUP_ID)
        emu.user_text(group, ALICE, "/imagine@emu_bot a lighthouse")
        (job,) = await until(lambda: _at_least(bot, 1))
        # Finished as the worker finishes one: the result stored, its delivery queued.
        data, redis = png(64, 64), bot.records.redis
        ref = await RedisResultStore(redis, ttl_s=600).put(job.id, data, mime="image/png")
        info = ResultInfo(ref=ref, mime="image/png", ext="png", size=len(data), width=64, height=64)
        done = await bot.records.update(
            job.id, lambda r: r.moved(JobStatus.DELIVERING, result=info)
        )
        assert done is not None
        await enqueue_delivery(redis, done)
        await emu.wait_for(lambda: emu.calls_of("sendPhoto"), what="the result")
        posted = emu.bot_messages(group.id)[-1]
        data_of = [
            b["callback_data"] for row in posted["reply_markup"]["inline_keyboard"] for b in row
        ]
        assert data_of[-2:] == [f"ed:{job.id}", f"in:{job.id}"]
        in_group = len(emu.bot_messages(group.id))

        emu.press_button(BOB, posted, f"ed:{job.id}")  # Bob never opened a chat with the bot
        refused = await emu.wait_for(lambda: emu.calls_of("answerCallbackQuery"), what="alert")
        assert "press Start" in refused[0].params["text"], refused[0].params
        emu.private_chat(BOB)
        emu.press_button(BOB, posted, f"ed:{job.id}")
        [sent] = await emu.wait_for(lambda: emu.bot_messages(BOB.id), what="the private link")
        assert f"{public}/edit?t=" in sent["text"] and "15 minutes" in sent["text"]
        answered = await emu.wait_for(
            lambda: emu.calls_of("answerCallbackQuery")[1:], what="the press answered"
        )
        assert "private chat" in answered[0].params["text"]
        assert len(emu.bot_messages(group.id)) == in_group  # nothing of it in the group
