"""End to end: discord.py against the local Discord, the real queue on a private Valkey, the real
worker on the tiny models. Command in, file out, decoded."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from discord_emulator import ADMIN_PERMISSIONS, DiscordEmulator, Interaction
from PIL import Image

from reelbot.bots.discord.service import run_up
from reelbot.config import Settings
from reelbot.generation.media import probe_video
from reelbot.jobs import JobStatus, job_id_for
from reelbot.store.connection import connect
from reelbot.store.leases import live_workers
from reelbot.store.progress import ProgressEvent, publish
from reelbot.store.records import RecordStore
from reelbot.worker.worker import serve_generation

ALICE = "111111111111111111"
BOB = "222222222222222222"
STEP_S = 30.0
"""Upper bound for one tiny job through the whole stack on a slow CI machine."""


def png(width: int = 64, height: int = 48) -> bytes:
    """A small PNG to attach."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "green").save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Stack:
    """The whole service around one emulator: a worker and the Discord process, each stoppable."""

    emu: DiscordEmulator
    settings: Settings
    runner: Any
    tasks: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=dict)

    async def start_worker(self) -> None:
        stop = asyncio.Event()
        queues = [self.settings.image_queue, self.settings.video_queue]
        url = self.settings.effective_redis_url
        coro = serve_generation(self.settings, self.runner, queues, redis_url=url, stop=stop)
        self.tasks["worker"] = (stop, asyncio.create_task(coro))
        # Wait until both workers announce themselves: a worker closed before its loop started
        # would never stop (seen with the queue's QueueWorker.close; see the report).
        redis = connect(url)
        try:
            async with asyncio.timeout(STEP_S):
                for _ in itertools.count():
                    if len(await live_workers(redis)) >= len(queues):
                        break
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose(close_connection_pool=True)

    async def start_adapter(self) -> None:
        before = self.emu.identifies
        stop = asyncio.Event()
        self.tasks["discord"] = (stop, asyncio.create_task(run_up(self.settings, stop)))
        await self.emu.wait_for(lambda: self.emu.identifies > before and self.emu.connected)

    async def stop(self, name: str) -> None:
        stop, task = self.tasks.pop(name)
        stop.set()
        # Each process bounds its own shutdown (about 8 s per part); a hang beyond that fails.
        async with asyncio.timeout(30):
            await task

    async def record(self, job_id: str) -> Any:
        redis = connect(self.settings.effective_redis_url)
        try:
            return await RecordStore(redis, finished_ttl_s=60).get(job_id)
        finally:
            await redis.aclose(close_connection_pool=True)

    async def close(self) -> None:
        for name in list(self.tasks):
            stop, task = self.tasks.pop(name)
            stop.set()
            try:
                async with asyncio.timeout(30):
                    await task
            except TimeoutError:
                # Teardown only: a hung shutdown is not what these tests check; the tests that
                # stop a process mid-way use stop(), which fails on a hang.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def stack(
    discord_emu: DiscordEmulator,
    discord_redis_url: str,
    discord_runner: Any,
    discord_data_dir: Path,
) -> AsyncIterator[Stack]:
    """A running Discord process on a flushed server; tests start the worker when jobs may run.

    Jobs wait in the queue until then, which is how these tests hold a job "mid-way".
    """
    with sync_redis.Redis.from_url(discord_redis_url) as r:
        r.flushall()
    settings = Settings(
        redis_url=discord_redis_url,
        discord_token=discord_emu.bot_token,
        discord_api_url=discord_emu.api_url,
        discord_gateway_url=discord_emu.gateway_url,
        models="tiny",
        device="cpu",
        data_dir=discord_data_dir,
    )
    running = Stack(discord_emu, settings, discord_runner)
    await running.start_adapter()
    try:
        yield running
    finally:
        await running.close()


async def acknowledged(emu: DiscordEmulator, inter: Interaction) -> Interaction:
    """The first response came within Discord's 3 s."""
    await emu.wait_for(lambda: inter.response_type is not None, within=5)
    assert inter.responded_at is not None and inter.responded_at - inter.created_at < 3.0
    return inter


async def result_of(emu: DiscordEmulator, inter: Interaction) -> dict[str, Any]:
    """The followup with a file, once it is posted."""
    found = await emu.wait_for(
        lambda: [m for m in emu.followups(inter) if m["attachments"]], within=STEP_S
    )
    assert len(found) == 1
    return found[0]


def decoded(emu: DiscordEmulator, message: dict[str, Any]) -> tuple[str, Any]:
    """The message's one file, decoded: a Pillow image or ffprobe's view of an MP4."""
    [(name, data)] = emu.files_of(message["id"])
    if name.endswith(".mp4"):
        return name, probe_video(data)
    image = Image.open(io.BytesIO(data))
    image.load()
    return name, image


async def test_every_command_end_to_end(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_worker()
    inters = {
        "imagine": await emu.slash("imagine", {"prompt": "a red fox --seed 7"}),
        "video": await emu.slash("video", {"prompt": "waves", "duration": 1.0}),
        "remix": await emu.slash(
            "remix",
            {"prompt": "in snow"},
            attachments={"image": emu.add_attachment("a.png", png())},
        ),
        "animate": await emu.slash(
            "animate", {}, attachments={"image": emu.add_attachment("b.png", png())}
        ),
    }
    for inter in inters.values():
        await acknowledged(emu, inter)
        assert inter.response_type == 5
    for name, inter in inters.items():
        message = await result_of(emu, inter)
        filename, media = decoded(emu, message)
        if name in ("video", "animate"):
            assert filename.endswith(".mp4") and media.frames > 1
            assert "Re-roll" not in message["content"]
            shorts = [b.split(":")[1] for b in emu.buttons(message["id"])]
            assert shorts == ["rr", "ex", "sm", "up", "in"]
        else:
            assert isinstance(media, Image.Image) and media.format == "PNG"
            shorts = [b.split(":")[1] for b in emu.buttons(message["id"])]
            assert shorts == [
                "up",
                "vs",
                "vx",
                "rr",
                "ani",
                "zo",
                "zh",
                "pl",
                "pr",
                "pu",
                "pd",
                "in",
            ]
        assert "--seed" in message["content"]
    assert "--seed 7" in (await result_of(emu, inters["imagine"]))["content"]
    for inter in inters.values():
        await emu.wait_for(lambda i=inter: "Done" in emu.original(i)["content"], within=10)
        # Status edits respect the per-message pace (at most one per 3 s).
        times = emu.original(inter)["edit_times"]
        assert all(b - a >= 2.9 for a, b in itertools.pairwise(times)), times
    assert emu.violations == []


async def test_reroll_and_cancel_buttons(stack: Stack) -> None:
    emu = stack.emu
    # Cancel while queued: with no worker yet the job waits, and cancelling removes it.
    waiting = await acknowledged(emu, await emu.slash("imagine", {"prompt": "never"}))
    await emu.wait_for(lambda: "Queued" in emu.original(waiting)["content"])
    waiting_job = job_id_for("discord", waiting.id)
    assert emu.buttons(waiting.original_id or "") == [f"rb:cx:{waiting_job}"]
    cancel = await emu.click(waiting.original_id or "", f"rb:cx:{waiting_job}")
    # A deferred update first (Discord's 3 s), then Redis, then the edit of the status message.
    assert (await acknowledged(emu, cancel)).response_type == 6
    await emu.wait_for(lambda: "Cancelled" in emu.original(waiting)["content"])
    assert (await stack.record(waiting_job)).status == JobStatus.CANCELLED

    await stack.start_worker()
    first = await acknowledged(emu, await emu.slash("imagine", {"prompt": "a fox --seed 11"}))
    result = await result_of(emu, first)
    job = job_id_for("discord", first.id)
    reroll = await acknowledged(emu, await emu.click(result["id"], f"rb:rr:{job}"))
    again = await result_of(emu, reroll)
    assert "a fox" in again["content"] and "--seed 11" not in again["content"]
    assert decoded(emu, again)[1].format == "PNG"
    # The cancelled job never ran, and its status message still says so.
    assert not [m for m in emu.followups(waiting) if m["attachments"]]
    assert "Cancelled" in emu.original(waiting)["content"]


async def test_result_after_token_expiry_goes_to_channel(stack: Stack) -> None:
    emu = stack.emu
    inter = await acknowledged(emu, await emu.slash("imagine", {"prompt": "a slow fox"}))
    await emu.wait_for(lambda: "Queued" in emu.original(inter)["content"])
    emu.clock.advance(16 * 60)
    await stack.start_worker()
    posted = await emu.wait_for(
        lambda: [m for m in emu.channel() if m["attachments"] and "webhook_id" not in m],
        within=STEP_S,
    )
    message = posted[0]
    assert message["content"].startswith(f"<@{ALICE}>")
    assert message["message_reference"]["message_id"] == inter.original_id
    assert decoded(emu, message)[1].format == "PNG"
    # The adapter tried the interaction token first, was refused (401), and used the bot token.
    uploads = [(c.status, c.auth) for c in emu.calls if c.files]
    assert uploads == [(401, None), (200, f"Bot {emu.bot_token}")]
    assert emu.followups(inter) == []
    # The post is marked once the delivery (post, then the final status edit) returns.
    record = await until_status(stack, job_id_for("discord", inter.id), JobStatus.DELIVERED)
    assert record.status == JobStatus.DELIVERED and record.posted_message_id == message["id"]


async def test_non_admin_admin_command_changes_nothing(stack: Stack) -> None:
    emu = stack.emu
    inter = await acknowledged(emu, await emu.slash("imagine", {"prompt": "keep me"}))
    job = job_id_for("discord", inter.id)
    await emu.wait_for(lambda: "Queued" in emu.original(inter)["content"])
    refused = await emu.slash("admin", {"job": job}, subcommand="cancel", user_id=BOB)
    await acknowledged(emu, refused)
    assert refused.ephemeral and "Manage Server" in (emu.original(refused) or {})["content"]
    assert (await stack.record(job)).status == JobStatus.QUEUED
    status = await acknowledged(
        emu, await emu.slash("admin", subcommand="status", permissions=ADMIN_PERMISSIONS)
    )
    listing = (await emu.wait_for(lambda: emu.followups(status)))[0]
    assert "waiting reelbot:image: 1" in listing["content"]
    await stack.start_worker()
    await result_of(emu, inter)


async def test_gateway_reconnect_mid_job_loses_nothing(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_worker()
    first = await acknowledged(emu, await emu.slash("video", {"prompt": "one"}))
    # The job is queued or running while the gateway drops.
    await emu.disconnect()
    # Arrives while the bot is away; Discord replays it when the session resumes.
    second = await emu.slash("imagine", {"prompt": "two"})
    await emu.wait_for(lambda: emu.resumes >= 1, within=15)
    await acknowledged(emu, second)
    for inter in (first, second):
        decoded(emu, await result_of(emu, inter))
        await emu.wait_for(lambda i=inter: "Done" in emu.original(i)["content"], within=10)
    assert emu.identifies == 1
    assert len([m for m in emu.channel() if m["attachments"]]) == 2


async def test_result_delivered_after_adapter_restart(stack: Stack) -> None:
    emu = stack.emu
    inter = await acknowledged(emu, await emu.slash("imagine", {"prompt": "survivor"}))
    await emu.wait_for(lambda: "Queued" in emu.original(inter)["content"])
    job = job_id_for("discord", inter.id)
    await stack.stop("discord")
    # The job runs and its result waits in Redis while no Discord process is up.
    await stack.start_worker()
    for _ in range(int(STEP_S / 0.1)):
        if (await stack.record(job)).status == JobStatus.DELIVERING:
            break
        await asyncio.sleep(0.1)
    assert (await stack.record(job)).status == JobStatus.DELIVERING
    assert emu.followups(inter) == []
    await stack.start_adapter()
    message = await result_of(emu, inter)
    assert decoded(emu, message)[1].format == "PNG"
    # And its buttons work in the new process (persistent, keyed by job id).
    reroll = await acknowledged(emu, await emu.click(message["id"], f"rb:rr:{job}"))
    await result_of(emu, reroll)
    record = await stack.record(job)
    assert record.status == JobStatus.DELIVERED and record.post_attempts == 1


async def test_worker_progress_reaches_the_status_message(stack: Stack) -> None:
    emu = stack.emu
    inter = await acknowledged(emu, await emu.slash("video", {"prompt": "slowly"}))
    await emu.wait_for(lambda: "Queued" in emu.original(inter)["content"])
    job = job_id_for("discord", inter.id)
    # What a worker publishes after a denoising step, through Redis pub/sub.
    redis = connect(stack.settings.effective_redis_url)
    try:
        event = ProgressEvent(job_id=job, status=JobStatus.RUNNING, step=3, total=8, at=0.0)
        for _ in range(int(STEP_S / 0.5)):
            await publish(redis, "discord", event)
            if "3/8" in emu.original(inter)["content"]:
                break
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose(close_connection_pool=True)
    status = emu.original(inter)
    assert "Running" in status["content"] and "3/8" in status["content"]
    assert emu.buttons(status["id"]) == [f"rb:cx:{job}"]


SLOW_VIDEO = "a long shot of the sea --steps 8 --duration 4 --fps 8"


async def until_status(stack: Stack, job: str, *wanted: JobStatus, within: float = STEP_S) -> Any:
    """The job's record once it is in one of ``wanted``."""
    async with asyncio.timeout(within):
        while (record := await stack.record(job)) is None or record.status not in wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return record


async def test_a_dm_job_stays_out_of_a_server_channels_jobs_and_cancel(stack: Stack) -> None:
    emu = stack.emu
    secret = await acknowledged(emu, await emu.slash("imagine", {"prompt": "my secret"}, dm=True))
    here = await acknowledged(emu, await emu.slash("imagine", {"prompt": "for the channel"}))
    secret_job, here_job = job_id_for("discord", secret.id), job_id_for("discord", here.id)
    await emu.wait_for(lambda: "Queued" in emu.original(here)["content"])
    listing = await acknowledged(emu, await emu.slash("jobs"))
    [shown] = await emu.wait_for(lambda: emu.followups(listing))
    assert here_job in shown["content"]
    assert secret_job not in shown["content"] and "secret" not in shown["content"]
    # A bare /cancel in the channel picks the channel's job, never the DM's.
    for _ in range(2):
        cancel = await acknowledged(emu, await emu.slash("cancel"))
        await emu.wait_for(lambda c=cancel: emu.followups(c))
    assert (await stack.record(here_job)).status == JobStatus.CANCELLED
    assert (await stack.record(secret_job)).status == JobStatus.QUEUED
    assert "no queued or running jobs here" in emu.followups(cancel)[0]["content"]
    # In the DM, /jobs still knows it.
    dm_listing = await acknowledged(emu, await emu.slash("jobs", dm=True))
    [dm_shown] = await emu.wait_for(lambda: emu.followups(dm_listing))
    assert secret_job in dm_shown["content"]


async def test_cancel_of_a_running_job_says_cancelling_until_the_worker_confirms(
    stack: Stack,
) -> None:
    emu = stack.emu
    await stack.start_worker()
    inter = await acknowledged(emu, await emu.slash("video", {"prompt": SLOW_VIDEO}))
    job = job_id_for("discord", inter.id)
    await until_status(stack, job, JobStatus.RUNNING)
    click = await acknowledged(emu, await emu.click(inter.original_id or "", f"rb:cx:{job}"))
    assert click.response_type == 6
    await emu.wait_for(lambda: "Cancelling" in emu.original(inter)["content"])
    said = emu.original(inter)["content"]
    assert "Cancelling" in said and "Cancelled" not in said, said
    assert emu.buttons(inter.original_id or "") == []
    # Until the worker confirms, the status message never claims the job is cancelled.
    async with asyncio.timeout(STEP_S):
        while (await stack.record(job)).status != JobStatus.CANCELLED:
            assert "Cancelled" not in emu.original(inter)["content"]
            await asyncio.sleep(0.02)
    await emu.wait_for(lambda: "Cancelled" in emu.original(inter)["content"], within=10)
    assert not [m for m in emu.followups(inter) if m["attachments"]]


async def test_every_upload_refused_ends_the_status_in_words(stack: Stack) -> None:
    emu = stack.emu
    # Discord refuses each upload for good (a 400 with its JSON error body), by token or bot.
    emu.inject("POST", r"^/webhooks/\d+/[^/]+$", status=400, count=100)
    emu.inject("POST", r"^/channels/\d+/messages$", status=400, count=100)
    await stack.start_worker()
    inter = await acknowledged(emu, await emu.slash("imagine", {"prompt": "refused"}))
    job = job_id_for("discord", inter.id)
    await emu.wait_for(lambda: "could not be posted" in emu.original(inter)["content"], within=60)
    status = emu.original(inter)
    assert "Failed" in status["content"] and emu.buttons(status["id"]) == []
    assert not [m for m in emu.channel() if m["attachments"]]
    record = await stack.record(job)
    assert record.status == JobStatus.FAILED and record.error_code == "undeliverable"


async def test_progress_survives_a_30_s_redis_outage(
    discord_emu: DiscordEmulator, discord_runner: Any, discord_data_dir: Path, tmp_path: Path
) -> None:
    from reelbot.runtime.server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = Settings(
        redis_url=server.url,
        discord_token=discord_emu.bot_token,
        discord_api_url=discord_emu.api_url,
        discord_gateway_url=discord_emu.gateway_url,
        models="tiny",
        device="cpu",
        data_dir=discord_data_dir,
    )
    stack = Stack(discord_emu, settings, discord_runner)
    emu = stack.emu
    try:
        await stack.start_adapter()
        inter = await acknowledged(emu, await emu.slash("video", {"prompt": "through it"}))
        job = job_id_for("discord", inter.id)
        await emu.wait_for(lambda: "Queued" in emu.original(inter)["content"])
        await asyncio.sleep(1.5)  # the queued job reaches the append-only file
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(30)
        await asyncio.to_thread(server.start)  # the same port and data
        # Progress after the outage still reaches the status message.
        redis = connect(settings.effective_redis_url)
        try:
            event = ProgressEvent(job_id=job, status=JobStatus.RUNNING, step=3, total=8, at=0.0)
            for _ in range(int(STEP_S / 0.5)):
                await publish(redis, "discord", event)
                if "3/8" in emu.original(inter)["content"]:
                    break
                await asyncio.sleep(0.5)
        finally:
            await redis.aclose(close_connection_pool=True)
        assert "3/8" in emu.original(inter)["content"]
        await stack.start_worker()
        decoded(emu, await result_of(emu, inter))
        await emu.wait_for(lambda: "Done" in emu.original(inter)["content"], within=10)
        await asyncio.sleep(1.0)  # a second post would show here
        assert len([m for m in emu.channel() if m["attachments"]]) == 1
    finally:
        await stack.close()
        server.stop(kill=True)


def clip_16_9() -> bytes:
    """A short 128x72 MP4 to attach."""
    from reelbot.generation.media import encode_video

    frames = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(9)]
    return encode_video(frames, fps=8, max_bytes=10**7).data


def mask_png(width: int, height: int) -> bytes:
    """White (change) in the middle, black around it."""
    out = io.BytesIO()
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    mask.save(out, "PNG")
    return out.getvalue()


async def test_video_and_edit_inputs_and_buttons(stack: Stack) -> None:
    """The memo platform's loop, through Discord's attachment options and buttons: /restyle of a
    16:9 clip stays wide, Extend makes it longer, Smooth doubles its frames, Upscale its size;
    Zoom Out 2x doubles an image; /remix with a mask is a region edit that keeps every pixel
    outside the mask; /blend of two images gives one; /describe offers four prompts and pressing
    one queues an /imagine of it; /animate with a last image is keyframes."""
    emu = stack.emu
    await stack.start_worker()

    def job(inter: Interaction) -> str:
        return job_id_for("discord", inter.id)

    async def posted(inter: Interaction) -> tuple[dict[str, Any], bytes]:
        message = await result_of(emu, inter)
        [(_, data)] = emu.files_of(message["id"])
        return message, data

    def attach(**files: bytes) -> dict[str, dict[str, Any]]:
        return {name: emu.add_attachment(f"{name}.png", data) for name, data in files.items()}

    # Everything that needs no result first, so that the jobs share the workers' time.
    video = {"video": emu.add_attachment("clip.mp4", clip_16_9(), "video/mp4")}
    restyle = await emu.slash("restyle", {"prompt": "watercolor"}, attachments=video)
    imagine = await emu.slash("imagine", {"prompt": "a lighthouse --seed 3"})
    image, mask = png(64, 64), mask_png(64, 64)
    masked = await emu.slash(
        "remix", {"prompt": "a door"}, attachments=attach(image=image, mask=mask)
    )
    blend = await emu.slash("blend", {}, attachments=attach(image=image, image2=png(48, 64)))
    described = await emu.slash("describe", {}, attachments=attach(image=image))
    keyed = await emu.slash("animate", {}, attachments=attach(image=image, last_image=png(64, 64)))

    message, data = await posted(restyle)
    info = probe_video(data)
    assert info.width > info.height  # the input's aspect ratio
    assert {f"rb:ex:{job(restyle)}", f"rb:sm:{job(restyle)}"} <= set(emu.buttons(message["id"]))
    extend = await emu.click(message["id"], f"rb:ex:{job(restyle)}", user_id=BOB)
    smooth = await emu.click(message["id"], f"rb:sm:{job(restyle)}", user_id=BOB)
    upscale = await emu.click(message["id"], f"rb:up:{job(restyle)}", user_id=BOB)
    source, made = await posted(imagine)
    assert emu.buttons(source["id"])[5] == f"rb:zo:{job(imagine)}"  # Zoom Out 2x
    zoom = await emu.click(source["id"], f"rb:zo:{job(imagine)}")
    ideas, _ = await posted(described)
    presses = [b for b in emu.buttons(ideas["id"]) if b.startswith("rb:im:")]
    assert presses == [f"rb:im:{job(described)}:{i}" for i in range(4)]
    again = await emu.click(ideas["id"], presses[2], user_id=BOB)

    edited = Image.open(io.BytesIO((await posted(masked))[1])).convert("RGB")
    assert (await stack.record(job(masked))).params.task.value == "inpaint"
    source_px, edited_px = Image.open(io.BytesIO(image)).convert("RGB"), edited.load()
    outside = [(x, y) for x in range(64) for y in range(64) if not 16 <= x < 48 or not 16 <= y < 48]
    assert edited.size == (64, 64)  # only the masked (white) middle may change
    assert [edited_px[xy] for xy in outside] == [source_px.getpixel(xy) for xy in outside]
    assert Image.open(io.BytesIO((await posted(blend))[1])).format == "PNG"
    assert len((await stack.record(job(blend))).request.more_refs) == 1
    assert probe_video((await posted(keyed))[1]).frames > 1
    assert (await stack.record(job(keyed))).params.task.value == "keyframes"
    assert probe_video((await posted(extend))[1]).frames > info.frames
    assert probe_video((await posted(smooth))[1]).frames == 2 * info.frames
    upscaled, data = await posted(upscale)  # every frame twice the size; no Upscale again
    assert (probe_video(data).width, probe_video(data).height) == (2 * info.width, 2 * info.height)
    assert f"rb:up:{job(upscale)}" not in emu.buttons(upscaled["id"])
    width, height = Image.open(io.BytesIO(made)).size
    assert Image.open(io.BytesIO((await posted(zoom))[1])).size == (2 * width, 2 * height)
    texts = (await stack.record(job(described))).result.texts
    await posted(again)
    record = await stack.record(job(again))
    assert record.params.task.value == "imagine" and record.requester.user_id == BOB
    assert record.params.prompt == texts[2]
    assert emu.violations == []
