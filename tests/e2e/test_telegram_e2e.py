"""Telegram end to end: emulator → real adapter → Valkey queue → real worker (tiny models) → post.

Each test drives the bot the way people do (commands, photos with captions, buttons) and checks
what they would: a status message at once, a result that decodes, a caption that reproduces it,
buttons that work, nothing lost or doubled by restarts, duplicates or 429s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from telegram_emulator import TOKEN, Chat, TelegramEmulator, User

from reelbot.bots.telegram.service import TelegramService
from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.generation.runner import Runner
from reelbot.jobs import JobStatus, job_id_for
from reelbot.store import keys
from reelbot.store.connection import connect
from reelbot.store.records import RecordStore
from reelbot.worker.worker import serve_generation

pytestmark = pytest.mark.timeout(90)

ALICE = User(111, "Alice", "alice")
BOB = User(222, "Bob", "bob")
GROUP_ID = -1001234567890
RESULT_WAIT_S = 45.0


class Stack:
    """The emulator, Redis, the generation worker and the Telegram process, each startable."""

    def __init__(
        self, emu: TelegramEmulator, settings: Settings, catalog: Catalog, runner: Runner
    ) -> None:
        self.emu = emu
        self.settings = settings
        self.catalog = catalog
        self.runner = runner
        self.redis = connect(settings.effective_redis_url)
        self.records = RecordStore(self.redis, finished_ttl_s=settings.result_ttl_s)
        self.service: TelegramService | None = None
        self._worker: asyncio.Task[None] | None = None
        self._worker_stop = asyncio.Event()

    async def start_bot(self) -> TelegramService:
        self.service = TelegramService(
            self.settings,
            self.redis,
            self.catalog,
            token=TOKEN,
            poll_timeout=1,
            delivery_poll_s=0.2,
        )
        await self.service.start()
        return self.service

    async def stop_bot(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    def start_worker(self) -> None:
        self._worker_stop = asyncio.Event()
        queues = [self.settings.image_queue, self.settings.video_queue]
        self._worker = asyncio.create_task(
            serve_generation(
                self.settings,
                self.runner,
                queues,
                redis_url=self.settings.effective_redis_url,
                stop=self._worker_stop,
            )
        )

    async def stop_worker(self) -> None:
        if self._worker is not None:
            self._worker_stop.set()
            async with asyncio.timeout(30):
                await self._worker
            self._worker = None

    async def close(self) -> None:
        await self.stop_bot()
        await self.stop_worker()
        await self.redis.aclose(close_connection_pool=True)

    async def job_status(self, job_id: str) -> JobStatus | None:
        record = await self.records.get(job_id)
        return record.status if record is not None else None


@pytest.fixture
async def stack(
    telegram_emu: TelegramEmulator,
    telegram_redis_url: str,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
    runner: Runner,
) -> AsyncIterator[Stack]:
    settings = Settings(
        redis_url=telegram_redis_url,
        telegram_token=TOKEN,
        telegram_api_url=telegram_emu.root,
        models="tiny",
        data_dir=tiny_data_dir,
        device="cpu",
        heartbeat_s=0.5,
        dead_worker_s=2.0,
    )
    stack = Stack(telegram_emu, settings, tiny_catalog, runner)
    await stack.redis.flushall()
    try:
        yield stack
    finally:
        await stack.close()


def png(width: int = 96, height: int = 96, color: str = "orange") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def replies(emu: TelegramEmulator, update: dict[str, Any]) -> list[dict[str, Any]]:
    """The bot's messages that reply to the update's message, oldest first."""
    message = update["message"]
    return [
        m
        for m in emu.bot_messages(message["chat"]["id"])
        if m.get("reply_to_message", {}).get("message_id") == message["message_id"]
    ]


def results(emu: TelegramEmulator, update: dict[str, Any]) -> list[dict[str, Any]]:
    """The media replies (photo, video or document) to the update's message."""
    return [m for m in replies(emu, update) if {"photo", "video", "document"} & m.keys()]


async def wait_result(emu: TelegramEmulator, update: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = await emu.wait_for(
        lambda: results(emu, update), within=RESULT_WAIT_S, what="the result"
    )
    return found[0]


def status_of(emu: TelegramEmulator, update: dict[str, Any]) -> dict[str, Any]:
    """The one status message for the command (an empty one until it is sent)."""
    found = [m for m in replies(emu, update) if "text" in m]
    assert len(found) <= 1, [m["text"] for m in found]
    return found[0] if found else {"text": ""}


def send(emu: TelegramEmulator, chat: Chat, user: User, task: str, text: str) -> dict[str, Any]:
    """The command as people send it: text, or a photo with the command as its caption."""
    name = f"/{task}@emu_bot" if chat.type != "private" else f"/{task}"
    command = f"{name} {text}".strip()
    if task in ("remix", "animate"):
        return emu.user_photo(chat, user, png(), caption=command)
    return emu.user_text(chat, user, command)


def check_media(emu: TelegramEmulator, message: dict[str, Any], task: str) -> None:
    """The posted file decodes as what the task makes."""
    if task in ("imagine", "remix"):
        data = emu.files[message["photo"][-1]["file_id"]].data
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size == (64, 64)
        return
    from reelbot.generation.media import probe_video

    data = emu.files[message["video"]["file_id"]].data
    info = probe_video(data)
    assert info.codec == "h264" and info.frames >= 2 and (info.width, info.height) == (64, 64)


def check_edit_spacing(emu: TelegramEmulator, chat: Chat) -> None:
    """At most one status edit per chat interval, and none that changed nothing."""
    interval = 3.0 if chat.type != "private" else 1.0
    edits = emu.calls_of("editMessageText", chat.id)
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= interval - 0.05 for gap in gaps), gaps
    assert not [c for c in emu.calls if c.status == 400], [c.error for c in emu.calls]


# Videos at the shortest length and one step: the tiny video model is the slow part on a CPU.
PROMPTS = {
    "imagine": "a red fox in the snow --seed 42",
    "remix": "make it winter --seed 42",
    "video": "waves at dusk --seed 42 --steps 1 --duration 0.7",
    "animate": "gentle wind --seed 42 --steps 1 --duration 0.7",
}


@pytest.mark.parametrize("where", ["private", "group"])
@pytest.mark.parametrize("task", ["imagine", "remix", "video", "animate"])
async def test_each_command_end_to_end(stack: Stack, task: str, where: str) -> None:
    emu = stack.emu
    stack.start_worker()
    await stack.start_bot()
    chat = emu.private_chat(ALICE) if where == "private" else emu.group(GROUP_ID)
    update = send(emu, chat, ALICE, task, PROMPTS[task])
    sent_at = time.monotonic()

    first = await emu.wait_for(lambda: emu.calls_of("sendMessage", chat.id), what="status")
    assert first[0].at - sent_at < 1.0
    assert status_of(emu, update)["text"].startswith("⏳ Queued")

    result = await wait_result(emu, update)
    check_media(emu, result, task)
    prompt = PROMPTS[task].split(" --")[0]
    caption = result["caption"]
    assert caption.startswith(prompt) and "seed 42" in caption and "--seed 42" in caption
    assert "--model tiny-" in caption
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    rows = result["reply_markup"]["inline_keyboard"]
    buttons = [b["callback_data"].split(":")[0] for row in rows for b in row]
    if task in ("imagine", "remix"):  # then Zoom Out 2x and 1.5x, the four Pans, Info
        assert buttons == ["up", "vs", "vx", "rr", "an", "zo", "zh", "pl", "pr", "pu", "pd", "in"]
    else:  # Re-roll, Extend, Smooth, Upscale, Info
        assert buttons == ["rr", "ex", "sm", "up", "in"]
        video_call = emu.calls_of("sendVideo", chat.id)[0]
        assert video_call.params["supports_streaming"] == "true"

    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("✅ Done"), what="the final status"
    )
    assert "reply_markup" not in status_of(emu, update)  # no cancel button once done
    assert await stack.job_status(job_id) == JobStatus.DELIVERED
    check_edit_spacing(emu, chat)


async def test_a_duplicated_update_gives_one_result(stack: Stack) -> None:
    emu = stack.emu
    stack.start_worker()
    await stack.start_bot()
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a lighthouse at night")
    await wait_result(emu, update)
    emu.redeliver(update)
    marker = emu.user_text(chat, ALICE, "/help")
    await emu.wait_for(lambda: replies(emu, marker), what="the marker reply")
    await asyncio.sleep(1.0)  # room for a second result, if the bot were to make one
    assert len(results(emu, update)) == 1
    assert len([m for m in replies(emu, update) if "text" in m]) == 1
    assert len(emu.calls_of("sendPhoto")) == 1
    assert len(emu.calls_of("sendMessage", chat.id)) == 2  # one status, one /help answer


async def test_reroll_button_makes_a_new_result_with_a_new_seed(stack: Stack) -> None:
    emu = stack.emu
    stack.start_worker()
    await stack.start_bot()
    group = emu.group(GROUP_ID)
    update = emu.user_text(group, ALICE, "/imagine@emu_bot a paper boat --seed 5")
    result = await wait_result(emu, update)
    job_id = job_id_for("telegram", f"{group.id}:{update['message']['message_id']}")
    emu.press_button(BOB, result, f"rr:{job_id}")

    def rerolled() -> list[dict[str, Any]]:
        return [
            m
            for m in emu.bot_messages(group.id)
            if "photo" in m
            and m.get("reply_to_message", {}).get("message_id") == result["message_id"]
        ]

    (second,) = await emu.wait_for(rerolled, within=RESULT_WAIT_S, what="the re-rolled result")
    assert second["caption"].startswith("a paper boat") and "--seed 5 " not in second["caption"]
    assert "for Bob" in second["caption"]
    check_media(emu, second, "imagine")
    answers = emu.calls_of("answerCallbackQuery")
    assert answers and answers[0].params.get("text") == "Re-rolling…"

    # Animate: the posted image itself becomes the input of an image-to-video job.
    emu.press_button(ALICE, result, f"an:{job_id}")

    def animated() -> list[dict[str, Any]]:
        return [m for m in emu.bot_messages(group.id) if "video" in m]

    (video,) = await emu.wait_for(animated, within=RESULT_WAIT_S, what="the animated result")
    assert video["reply_to_message"]["message_id"] == result["message_id"]
    assert video["caption"].startswith("a paper boat") and "tiny-wan" in video["caption"]
    check_media(emu, video, "animate")


async def test_cancel_button_stops_a_queued_job(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_bot()  # no worker yet: the job waits in the queue
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/video a slow river --steps 1")
    status = await emu.wait_for(lambda: [m for m in replies(emu, update) if "text" in m])
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    # People press Cancel once they have read where the job is in line.
    await emu.wait_for(lambda: "position" in status_of(emu, update)["text"], what="position")
    emu.press_button(ALICE, status[0], f"cx:{job_id}")
    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("🚫 Cancelled"), what="cancelled"
    )
    assert await stack.job_status(job_id) == JobStatus.CANCELLED
    stack.start_worker()
    await asyncio.sleep(1.5)
    assert results(emu, update) == []
    assert status_of(emu, update)["text"].startswith("🚫 Cancelled")


async def test_result_is_delivered_after_the_bot_restarts(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_bot()
    chat = emu.group(GROUP_ID)
    update = emu.user_text(chat, ALICE, "/imagine@emu_bot a windmill --seed 11")
    await emu.wait_for(lambda: replies(emu, update), what="status")
    await stack.stop_bot()

    # The job runs while no Telegram process is up; its result waits in Redis.
    stack.start_worker()
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    deadline = time.monotonic() + RESULT_WAIT_S
    while await stack.job_status(job_id) != JobStatus.DELIVERING:
        assert time.monotonic() < deadline, await stack.job_status(job_id)
        await asyncio.sleep(0.1)
    assert results(emu, update) == []

    await stack.start_bot()
    emu.redeliver(update)  # as if the confirmation of the update had been lost as well
    result = await wait_result(emu, update)
    check_media(emu, result, "imagine")
    assert "--seed 11" in result["caption"]
    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("✅ Done"), what="the final status"
    )
    await asyncio.sleep(1.0)
    assert len(results(emu, update)) == 1
    assert await stack.job_status(job_id) == JobStatus.DELIVERED

    # Buttons carry only the job id, so they keep working in the restarted process.
    emu.press_button(ALICE, result, f"rr:{job_id}")
    await emu.wait_for(lambda: len(emu.calls_of("sendPhoto")) == 2, what="the re-roll")


async def test_429s_delay_but_lose_nothing(stack: Stack) -> None:
    emu = stack.emu
    stack.start_worker()
    await stack.start_bot()
    chat = emu.private_chat(ALICE)
    emu.fail_next("sendMessage", 1, retry_after=1)
    emu.fail_next("sendPhoto", 2, retry_after=1)
    emu.fail_next("editMessageText", 1, retry_after=1)
    update = emu.user_text(chat, ALICE, "/imagine a hot air balloon")
    sent_at = time.monotonic()
    result = await wait_result(emu, update)
    photo_calls = [c for c in emu.calls if c.method == "sendPhoto"]
    assert [c.status for c in photo_calls] == [429, 429, 200]
    assert photo_calls[-1].at - photo_calls[0].at >= 2.0  # both retry_after waits kept
    assert [c.status for c in emu.calls if c.method == "sendMessage"][:2] == [429, 200]
    assert time.monotonic() - sent_at >= 1.0
    check_media(emu, result, "imagine")
    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("✅ Done"), what="the final status"
    )
    with contextlib.suppress(AssertionError):
        await emu.wait_for(lambda: len(results(emu, update)) > 1, within=1.0)
    assert len(results(emu, update)) == 1


async def test_the_reelbot_telegram_process_answers_and_stops_cleanly(
    telegram_emu: TelegramEmulator, telegram_redis_url: str
) -> None:
    emu = telegram_emu
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")}
    env.update(
        REELBOT_REDIS_URL=telegram_redis_url,
        REELBOT_TELEGRAM_TOKEN=TOKEN,
        REELBOT_TELEGRAM_API_URL=emu.root,
        REELBOT_MODELS="tiny",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reelbot.cli", "telegram", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await emu.wait_for(lambda: emu.calls_of("getUpdates"), within=30, what="polling")
        assert [c["command"] for c in emu.commands][:4] == ["imagine", "remix", "video", "animate"]
        chat = emu.private_chat(BOB)
        update = emu.user_text(chat, BOB, "/imagine a tin robot")
        sent_at = time.monotonic()
        await emu.wait_for(lambda: replies(emu, update), what="status")
        assert emu.calls_of("sendMessage", chat.id)[0].at - sent_at < 1.0
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_failed_job_ends_with_its_reason_in_the_status_message(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_bot()
    chat = emu.group(GROUP_ID)
    update = send(emu, chat, ALICE, "remix", "make it autumn")
    await emu.wait_for(lambda: "position" in status_of(emu, update)["text"], what="queued")
    # The stored input image expires before any worker gets to the job.
    for key in await stack.redis.keys("reelbot:input:*"):
        await stack.redis.delete(key)
    stack.start_worker()
    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("⚠️ Failed: The input image expired"),
        within=RESULT_WAIT_S,
        what="the failure",
    )
    assert "reply_markup" not in status_of(emu, update)
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    assert await stack.job_status(job_id) == JobStatus.FAILED
    assert results(emu, update) == []
    check_edit_spacing(emu, chat)


# -- what the chat layer promises, on Telegram -----------------------------------------------


def text_reply(emu: TelegramEmulator, update: dict[str, Any]) -> list[str]:
    return [m["text"] for m in replies(emu, update) if "text" in m]


async def until_status(stack: Stack, job_id: str, status: JobStatus, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while await stack.job_status(job_id) != status:
        assert time.monotonic() < deadline, await stack.job_status(job_id)
        await asyncio.sleep(0.05)


OUTAGE_S = 30.0


async def test_progress_follows_on_after_a_30_s_redis_outage(
    telegram_emu: TelegramEmulator,
    tmp_path: Path,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
    runner: Runner,
) -> None:
    from reelbot.runtime.server import RedisServer

    emu = telegram_emu
    with RedisServer(tmp_path / "redis") as server:
        settings = Settings(
            redis_url=server.url,
            telegram_token=TOKEN,
            telegram_api_url=emu.root,
            models="tiny",
            data_dir=tiny_data_dir,
            device="cpu",
            heartbeat_s=0.5,
            dead_worker_s=2.0,
        )
        stack = Stack(emu, settings, tiny_catalog, runner)
        try:
            await stack.start_bot()
            chat = emu.private_chat(ALICE)
            update = emu.user_text(chat, ALICE, "/imagine a lighthouse in fog --seed 3")
            await emu.wait_for(lambda: "position" in status_of(emu, update)["text"], what="queued")
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(server.start)
            up = time.monotonic()
            # Progress is lossy by design: the worker starts once the bot has subscribed again.
            channel = keys.progress_channel("telegram")
            async with asyncio.timeout(30):
                while not sum(n for _, n in await stack.redis.pubsub_numsub(channel)):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            stack.start_worker()
            result = await wait_result(emu, update)
            check_media(emu, result, "imagine")
            await emu.wait_for(lambda: status_of(emu, update)["text"].startswith("✅ Done"))
            after = [c.params["text"] for c in emu.calls_of("editMessageText") if c.at > up]
            # Progress reached the status message again, not only the final state.
            assert [t for t in after if t.startswith(("🎨", "🎞️"))], after
            await asyncio.sleep(1.0)
            assert len(results(emu, update)) == 1
        finally:
            await stack.close()


async def test_jobs_and_a_bare_cancel_stay_in_their_chat(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_bot()  # no worker: the jobs wait
    private, group = emu.private_chat(ALICE), emu.group(GROUP_ID)
    secret = emu.user_text(private, ALICE, "/imagine my secret prompt")
    secret_id = job_id_for("telegram", f"{private.id}:{secret['message']['message_id']}")
    await emu.wait_for(lambda: "position" in status_of(emu, secret)["text"], what="queued")
    jobs = emu.user_text(group, ALICE, "/jobs@emu_bot")
    (listed,) = await emu.wait_for(lambda: text_reply(emu, jobs), what="/jobs")
    assert "no queued or running jobs" in listed and "secret" not in listed
    assert secret_id not in listed
    cancel = emu.user_text(group, ALICE, "/cancel@emu_bot")
    (said,) = await emu.wait_for(lambda: text_reply(emu, cancel), what="/cancel")
    assert "no queued or running jobs" in said, said
    assert await stack.job_status(secret_id) == JobStatus.QUEUED

    here = emu.user_text(group, ALICE, "/imagine@emu_bot a group fox")
    here_id = job_id_for("telegram", f"{group.id}:{here['message']['message_id']}")
    await emu.wait_for(lambda: "position" in status_of(emu, here)["text"], what="queued")
    jobs = emu.user_text(group, ALICE, "/jobs@emu_bot")
    (listed,) = await emu.wait_for(lambda: text_reply(emu, jobs), what="/jobs")
    assert here_id in listed and "group fox" in listed and "secret" not in listed
    cancel = emu.user_text(group, ALICE, "/cancel@emu_bot")
    (said,) = await emu.wait_for(lambda: text_reply(emu, cancel), what="/cancel")
    assert here_id in said and said.endswith("Cancelled; the credits are back.")
    assert await stack.job_status(here_id) == JobStatus.CANCELLED
    assert await stack.job_status(secret_id) == JobStatus.QUEUED
    # In the private chat, /jobs still shows it.
    mine = emu.user_text(private, ALICE, "/jobs")
    (listed,) = await emu.wait_for(lambda: text_reply(emu, mine), what="/jobs")
    assert secret_id in listed and "my secret prompt" in listed


async def test_cancelling_a_running_job_says_cancelling_until_the_worker_stops_it(
    stack: Stack,
) -> None:
    emu = stack.emu
    stack.start_worker()
    await stack.start_bot()
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/video a long slow river --steps 8 --seed 1")
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    status = await emu.wait_for(lambda: [m for m in replies(emu, update) if "text" in m])
    await until_status(stack, job_id, JobStatus.RUNNING)
    emu.press_button(ALICE, status[0], f"cx:{job_id}")
    (answer,) = await emu.wait_for(lambda: emu.calls_of("answerCallbackQuery"), what="answer")
    assert answer.params["text"].startswith("Cancelling…"), answer.params
    assert not status_of(emu, update)["text"].startswith("🚫")  # not before the worker says so
    await emu.wait_for(
        lambda: status_of(emu, update)["text"].startswith("🚫 Cancelled"),
        within=RESULT_WAIT_S,
        what="the confirmed cancel",
    )
    assert await stack.job_status(job_id) == JobStatus.CANCELLED
    assert results(emu, update) == []


async def test_a_refused_upload_ends_the_status_in_words(stack: Stack) -> None:
    emu = stack.emu
    emu.fail("sendPhoto", 400, 1, "Bad Request: file must be non-empty")
    stack.start_worker()
    await stack.start_bot()
    chat = emu.private_chat(ALICE)
    update = emu.user_text(chat, ALICE, "/imagine a kite over dunes")
    sent = time.monotonic()
    await emu.wait_for(
        lambda: "could not be posted" in status_of(emu, update)["text"],
        within=60,
        what="the words",
    )
    assert time.monotonic() - sent < 60
    final = status_of(emu, update)
    assert "Sending the result" not in final["text"] and "reply_markup" not in final
    assert results(emu, update) == []
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    record = await stack.records.require(job_id)
    assert record.status == JobStatus.FAILED and record.error_code == "undeliverable"


@pytest.mark.parametrize(("status", "description"), [(500, None), (400, "Bad Request: wrong file")])
async def test_a_failed_image_download_is_answered_in_words(
    stack: Stack, status: int, description: str | None
) -> None:
    emu = stack.emu
    await stack.start_bot()
    chat = emu.private_chat(ALICE)
    emu.fail("getFile", status, 1, description)
    update = emu.user_photo(chat, ALICE, png(), caption="/remix make it winter")
    (said,) = await emu.wait_for(lambda: text_reply(emu, update), what="the answer")
    assert "download that file" in said and "Something went wrong" not in said, said
    job_id = job_id_for("telegram", f"{chat.id}:{update['message']['message_id']}")
    assert await stack.job_status(job_id) is None
