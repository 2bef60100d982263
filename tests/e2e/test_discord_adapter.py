"""The real Discord adapter (discord.py) against the local emulator, on the real queue and chat
layer (a private Valkey, a real ``ChatService``), with no worker: the tests finish jobs themselves.

These pin the platform side: acknowledgements within 3 s, option parsing, ephemeral errors with
nothing queued, throttled status edits, result posting with buttons, the 15-minute token, 429s,
5xx, gateway reconnects and restarts. The path through the real worker is in
``test_discord_e2e.py``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis as sync_redis
from discord_emulator import ADMIN_PERMISSIONS, DiscordEmulator, Interaction
from PIL import Image

from reelbot.bots.discord.app import DiscordAdapter
from reelbot.catalog import load_catalog
from reelbot.chat.service import ChatService
from reelbot.config import Settings
from reelbot.jobs import JobStatus, job_id_for
from reelbot.queue.delivery import Delivery, enqueue_delivery
from reelbot.store import keys
from reelbot.store.connection import connect
from reelbot.store.progress import ProgressEvent, publish
from reelbot.store.records import JobRecord, RecordStore, ResultInfo
from reelbot.store.results import RedisResultStore, load_input

ALICE = "111111111111111111"
BOB = "222222222222222222"


def png(width: int = 64, height: int = 64, color: str = "red") -> bytes:
    """A small PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


class Queue:
    """The real queue's records, read back by the tests, and a stand-in for the worker's end."""

    def __init__(self, url: str) -> None:
        self.redis = connect(url)
        self.records = RecordStore(self.redis, finished_ttl_s=600)
        self.results = RedisResultStore(self.redis, ttl_s=600)
        self.inters: list[Interaction] = []

    def watch(self, inter: Interaction) -> Interaction:
        """Remember a command (or click) whose job the test follows."""
        self.inters.append(inter)
        return inter

    def job_of(self, index: int) -> str:
        return job_id_for("discord", self.inters[index].id)

    async def record(self, index: int) -> JobRecord | None:
        return await self.records.get(self.job_of(index))

    async def submitted(self) -> list[JobRecord]:
        """The jobs the watched interactions made, in order."""
        found = [await self.records.get(job_id_for("discord", i.id)) for i in self.inters]
        return [r for r in found if r is not None]

    async def wait_submitted(self, count: int) -> list[JobRecord]:
        async with asyncio.timeout(10):
            while len(records := await self.submitted()) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return records

    async def input_keys(self) -> list[bytes]:
        return list(await self.redis.keys(keys.input_image("*")))

    async def delivering(self, index: int, data: bytes | None = None) -> JobRecord:
        """Store a result for the job and move it to DELIVERING, as the worker does."""
        job = self.job_of(index)
        data = data if data is not None else png()
        ref = await self.results.put(job, data, mime="image/png")
        info = ResultInfo(ref=ref, mime="image/png", ext="png", size=len(data), width=64, height=64)
        record = await self.records.update(
            job, lambda r: r.moved(JobStatus.DELIVERING, result=info)
        )
        assert record is not None
        return record

    async def finish(self, index: int, data: bytes | None = None, **ended: Any) -> None:
        """End the job (a result, or ``status=FAILED/CANCELLED`` with an error) and enqueue its
        delivery for the adapter's own consumer."""
        if ended:
            status = ended.pop("status")
            record = await self.records.update(
                self.job_of(index), lambda r: r.moved(status, **ended)
            )
            assert record is not None
        else:
            record = await self.delivering(index, data)
        await enqueue_delivery(self.redis, record)

    async def progress(self, index: int, **fields: Any) -> None:
        event = ProgressEvent(job_id=self.job_of(index), at=0.0, **fields)
        await publish(self.redis, "discord", event)


def mp4() -> bytes:
    """A short 16:9 clip."""
    from reelbot.generation.media import encode_video

    frames = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(9)]
    return encode_video(frames, fps=8, max_bytes=10**7).data


Start = Callable[..., Awaitable[DiscordAdapter]]


@pytest.fixture
async def queue(discord_redis_url: str) -> AsyncIterator[Queue]:
    """The real queue on a flushed private server."""
    with sync_redis.Redis.from_url(discord_redis_url) as r:
        r.flushall()
    queue = Queue(discord_redis_url)
    yield queue
    await queue.redis.aclose(close_connection_pool=True)


@pytest.fixture
async def start(
    discord_emu: DiscordEmulator, queue: Queue, discord_redis_url: str
) -> AsyncIterator[Start]:
    """Start (and at the end stop) Discord adapters on the emulator and the real queue."""
    running: list[DiscordAdapter] = []
    catalog = load_catalog("tiny")

    async def _start(edit_interval_s: float = 0.3, **settings: Any) -> DiscordAdapter:
        config = Settings(
            redis_url=discord_redis_url,
            discord_token=discord_emu.bot_token,
            discord_api_url=discord_emu.api_url,
            discord_gateway_url=discord_emu.gateway_url,
            models="tiny",
            **settings,
        )
        service = ChatService(queue.redis, config, catalog, platform="discord")
        adapter = DiscordAdapter(
            config, service=service, edit_interval_s=edit_interval_s, delivery_poll_s=0.1
        )
        await adapter.start()
        running.append(adapter)
        return adapter

    yield _start
    for adapter in running:
        await adapter.stop()


async def answered(emu: DiscordEmulator, inter: Interaction) -> Interaction:
    """Wait for the first response and check it came within Discord's 3 seconds."""
    await emu.wait_for(lambda: inter.response_type is not None, within=5)
    assert inter.responded_at is not None
    assert inter.responded_at - inter.created_at < 3.0
    return inter


def content(emu: DiscordEmulator, inter: Interaction) -> str:
    """What the interaction shows: its response, then its followups (a private answer after a
    deferral is a followup; an error deletes the "thinking…" placeholder first)."""
    shown = [m for m in (emu.original(inter), *emu.followups(inter)) if m is not None]
    return "\n".join(str(m["content"]) for m in shown)


async def test_connects_and_syncs_commands(discord_emu: DiscordEmulator, start: Start) -> None:
    await start()
    assert discord_emu.identifies == 1
    cmds = {c["name"]: c for c in discord_emu.commands["global"]}
    expected = {"imagine", "remix", "video", "animate", "jobs", "cancel", "quota", "models"}
    assert expected | {"help", "admin"} <= set(cmds)
    admin = cmds["admin"]
    assert int(admin["default_member_permissions"]) == 1 << 5
    imagine = {o["name"]: o for o in cmds["imagine"]["options"]}
    assert imagine["steps"]["min_value"] == 1 and imagine["steps"]["max_value"] == 150
    assert "16:9" in [c["value"] for c in imagine["aspect"]["choices"]]
    assert imagine["model"]["autocomplete"] is True
    remix = {o["name"]: o for o in cmds["remix"]["options"]}
    assert remix["image"]["type"] == 11 and remix["image"]["required"] is True
    assert remix["mask"]["type"] == 11 and not remix["mask"].get("required")
    # The inputs of issues 17 and 18, as attachment options (type 11), required ones first.
    files = {n: [o["name"] for o in c["options"] if o["type"] == 11] for n, c in cmds.items()}
    assert files["restyle"] == files["smooth"] == ["video"]
    assert files["blend"] == ["image", "image2", "image3", "image4"]
    assert files["animate"] == ["image", "last_image"] and files["describe"] == ["image"]
    assert [o["name"] for o in cmds["smooth"]["options"]] == ["video"]
    # Nothing asked for a privileged intent (the emulator closes with 4014 if so).
    assert discord_emu.connected
    await discord_emu.wait_for(lambda: discord_emu.heartbeats >= 1)


async def test_imagine_defers_parses_and_queues(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = queue.watch(
        await discord_emu.slash(
            "imagine", {"prompt": "a red fox --ar 16:9", "seed": 42, "steps": 3}
        )
    )
    await answered(discord_emu, inter)
    assert inter.response_type == 5 and not inter.ephemeral
    await discord_emu.wait_for(lambda: "Queued" in content(discord_emu, inter))
    [record] = await queue.submitted()
    request, params = record.request, record.params
    assert (params.prompt, params.seed, params.steps) == ("a red fox", 42, 3)
    assert params.width > params.height
    assert request.reply.interaction_token == inter.token
    assert request.reply.status_message_id == inter.original_id
    assert request.reply.extra["max_bytes"] == str(10 * 1024 * 1024)
    assert request.requester.user_id == ALICE and not request.requester.is_admin
    assert "position 1" in content(discord_emu, inter)
    buttons = discord_emu.buttons(inter.original_id or "")
    assert buttons == [f"rb:cx:{queue.job_of(0)}"]
    assert all(len(b) <= 100 for b in buttons)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"prompt": "a fox", "steps": 99}, "--steps 99 is out of range"),
        ({"prompt": "a fox --sed 4"}, "Did you mean --seed?"),
        ({"prompt": "a fox", "model": "nope"}, "no model called 'nope'"),
        ({"prompt": "a fox", "model": "tiny-wan"}, "does not do /imagine"),
    ],
)
async def test_bad_options_answered_privately_nothing_queued(
    discord_emu: DiscordEmulator,
    start: Start,
    queue: Queue,
    options: dict[str, Any],
    needle: str,
) -> None:
    await start()
    inter = await answered(discord_emu, queue.watch(await discord_emu.slash("imagine", options)))
    assert inter.response_type == 4 and inter.ephemeral
    assert needle in content(discord_emu, inter)
    assert await queue.submitted() == []


async def test_remix_attachment_checks(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    text = discord_emu.add_attachment("notes.txt", b"hello", "text/plain")
    inter = await answered(
        discord_emu, await discord_emu.slash("remix", {"prompt": "x"}, attachments={"image": text})
    )
    assert inter.ephemeral and "not an image" in content(discord_emu, inter)
    queue.watch(inter)

    big = discord_emu.add_attachment("big.png", png(), "image/png")
    big["size"] = 30 * 1024 * 1024
    inter = await answered(
        discord_emu, await discord_emu.slash("remix", {"prompt": "x"}, attachments={"image": big})
    )
    assert inter.ephemeral and "under" in content(discord_emu, inter)
    queue.watch(inter)

    # Claims to be a PNG, is not: found only after downloading, so the public placeholder is
    # replaced by a private answer.
    fake = discord_emu.add_attachment("fake.png", b"\x89PNG not really", "image/png")
    inter = await answered(
        discord_emu, await discord_emu.slash("remix", {"prompt": "x"}, attachments={"image": fake})
    )
    queue.watch(inter)
    await discord_emu.wait_for(lambda: discord_emu.followups(inter))
    followup = discord_emu.followups(inter)[0]
    assert followup["flags"] & 64 and "Send a PNG, JPEG or WEBP" in followup["content"]
    assert discord_emu.original(inter) is None
    assert await queue.submitted() == [] and await queue.input_keys() == []


async def test_clips_masks_and_more_images_are_checked_then_stored(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    emu = discord_emu
    # Refused from what Discord declares of each file, privately, before anything is queued.
    big = emu.add_attachment("big.mp4", b"x", "video/mp4")
    big["size"] = 30 * 1024 * 1024
    refused = [
        ("restyle", {"prompt": "x"}, {"video": emu.add_attachment("a.png", png())}, "not a video"),
        (
            "remix",
            {"prompt": "x"},
            {
                "image": emu.add_attachment("a.png", png()),
                "mask": emu.add_attachment("m.txt", b"m", "text/plain"),
            },
            "not an image",
        ),
        ("smooth", {}, {"video": big}, "over the 20 MB"),
    ]
    for name, options, files, needle in refused:
        inter = await answered(emu, await emu.slash(name, options, attachments=files))
        assert inter.ephemeral and needle in content(emu, inter), content(emu, inter)
        queue.watch(inter)
    assert await queue.submitted() == []

    clip = mp4()
    image, mask, other = png(64, 64), png(64, 64, "white"), png(64, 64, "blue")

    def attach(**files: bytes) -> dict[str, dict[str, Any]]:
        return {name: emu.add_attachment(f"{name}.png", data) for name, data in files.items()}

    gif = io.BytesIO()
    frames = [Image.new("RGB", (64, 36), (30 * i, 90, 160)) for i in range(6)]
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=125, loop=0)
    accepted = [
        ("smooth", {}, {"video": emu.add_attachment("c.mp4", clip, "video/mp4")}),
        (
            "restyle",
            {"prompt": "ink"},
            {"video": emu.add_attachment("c.gif", gif.getvalue(), "image/gif")},
        ),
        ("remix", {"prompt": "a door"}, attach(image=image, mask=mask)),
        ("blend", {}, attach(image=image, image2=other)),
        ("animate", {}, attach(image=image, last_image=other)),
    ]
    for name, options, files in accepted:
        inter = queue.watch(await emu.slash(name, options, attachments=files))
        assert not (await answered(emu, inter)).ephemeral
    records = [r.request for r in await queue.wait_submitted(5)]
    assert [r.task.value for r in records] == ["smooth", "restyle", "inpaint", "blend", "keyframes"]
    smooth, restyle, inpaint, blend, keyframes = records
    assert restyle.video_ref and await load_input(queue.redis, restyle.video_ref) == gif.getvalue()
    assert smooth.video_ref and await load_input(queue.redis, smooth.video_ref) == clip
    assert inpaint.mask_ref and await load_input(queue.redis, inpaint.mask_ref) == mask
    for request in (blend, keyframes):
        assert request.image_ref and await load_input(queue.redis, request.image_ref) == image
        [more] = request.more_refs
        assert await load_input(queue.redis, more) == other


@pytest.mark.parametrize("status", [404, 500])
async def test_an_attachment_discord_will_not_hand_over_is_answered_in_words(
    discord_emu: DiscordEmulator, start: Start, queue: Queue, status: int
) -> None:
    await start()
    att = discord_emu.add_attachment("in.png", png())
    discord_emu.inject("GET", r"^/cdn/", status=status, count=10)
    inter = queue.watch(
        await discord_emu.slash("remix", {"prompt": "waves"}, attachments={"image": att})
    )
    await answered(discord_emu, inter)
    [followup] = await discord_emu.wait_for(lambda: discord_emu.followups(inter), within=40)
    assert followup["flags"] & 64
    assert "attachment" in followup["content"] and "Attach it again" in followup["content"]
    assert "Something went wrong" not in followup["content"]
    assert discord_emu.original(inter) is None
    assert await queue.submitted() == []


async def test_remix_and_animate_store_the_image(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    image = png(80, 60)
    for name in ("remix", "animate"):
        att = discord_emu.add_attachment("in.png", image)
        inter = await discord_emu.slash(name, {"prompt": "waves"}, attachments={"image": att})
        await answered(discord_emu, queue.watch(inter))
        await discord_emu.wait_for(lambda i=inter: "Queued" in content(discord_emu, i))
    records = await queue.submitted()
    assert [r.request.task.value for r in records] == ["remix", "animate"]
    for record in records:
        assert record.request.image_ref is not None
        assert await load_input(queue.redis, record.request.image_ref) == image


async def test_progress_edits_are_throttled(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start(edit_interval_s=0.5)
    inter = queue.watch(await discord_emu.slash("video", {"prompt": "waves"}))
    await answered(discord_emu, inter)
    await discord_emu.wait_for(lambda: "Queued" in content(discord_emu, inter))
    await asyncio.sleep(0.5)  # the Queued edit's interval
    for step in range(1, 9):
        await queue.progress(0, status=JobStatus.RUNNING, step=step, total=8)
        await asyncio.sleep(0.05)
    await discord_emu.wait_for(lambda: "8/8" in content(discord_emu, inter), within=3)
    times = discord_emu.messages[inter.original_id or ""]["edit_times"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) <= 4, times  # 9 states arrived; only the latest per interval is shown
    assert min(gaps) >= 0.45
    assert "▰" in content(discord_emu, inter)


async def test_result_posted_as_followup_with_buttons(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = queue.watch(await discord_emu.slash("imagine", {"prompt": "a fox", "seed": 7}))
    await answered(discord_emu, inter)
    await queue.wait_submitted(1)
    await queue.finish(0)
    followups = await discord_emu.wait_for(lambda: discord_emu.followups(inter))
    msg = followups[0]
    assert "a fox" in msg["content"] and "--seed 7" in msg["content"]
    name, data = discord_emu.files_of(msg["id"])[0]
    job = queue.job_of(0)
    assert name == f"reelbot-{job}.png"
    assert Image.open(io.BytesIO(data)).size == (64, 64)
    shorts = ["up", "vs", "vx", "rr", "ani", "zo", "zh", "pl", "pr", "pu", "pd", "in"]
    assert discord_emu.buttons(msg["id"]) == [f"rb:{short}:{job}" for short in shorts]
    await discord_emu.wait_for(lambda: "Done" in content(discord_emu, inter))
    assert discord_emu.buttons(inter.original_id or "") == []
    async with asyncio.timeout(10):  # marked once the delivery returns
        while (record := await queue.record(0)) is None or record.status != JobStatus.DELIVERED:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert record.posted_message_id == msg["id"]


async def test_edit_region_answers_the_presser_alone_with_a_link_that_opens(
    discord_emu: DiscordEmulator, start: Start, queue: Queue, discord_redis_url: str
) -> None:
    """With REELBOT_PUBLIC_URL an image result offers Edit region (before Info); Bob's press is
    answered privately with a link to the web editor that opens on Alice's image. (Without the
    setting there is no such button: ``test_result_posted_as_followup_with_buttons``.)"""
    import httpx

    from reelbot.bots.web.service import bind, serve_web

    sock = bind("127.0.0.1", 0)
    web_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = asyncio.Event()
    web = Settings(redis_url=discord_redis_url, models="tiny", public_url=web_url)
    serving = asyncio.create_task(serve_web(web, stop, sock))
    try:
        await start(public_url=web_url)
        inter = queue.watch(await discord_emu.slash("imagine", {"prompt": "a fox"}))
        await answered(discord_emu, inter)
        await queue.wait_submitted(1)
        await queue.finish(0, data=png(color="blue"))
        result = (await discord_emu.wait_for(lambda: discord_emu.followups(inter)))[0]
        job = queue.job_of(0)
        assert discord_emu.buttons(result["id"])[-2:] == [f"rb:ed:{job}", f"rb:in:{job}"]
        click = await discord_emu.click(result["id"], f"rb:ed:{job}", user_id=BOB)
        [said] = await discord_emu.wait_for(lambda: discord_emu.followups(click))
        assert int(said["flags"]) & 64, said  # ephemeral: for Bob only
        link = next(w for w in str(said["content"]).split() if w.startswith(f"{web_url}/edit?t="))
        async with httpx.AsyncClient(timeout=10) as browser:
            assert (await browser.get(link)).status_code == 200
            image = await browser.get(link.replace("/edit?", "/edit/source?"))
            assert Image.open(io.BytesIO(image.content)).getpixel((0, 0)) == (0, 0, 255)
        assert await queue.records.get(job_id_for("discord", click.id)) is None  # no job yet
        # /show posts the result again with the same buttons, Edit region among them.
        shown = await answered(discord_emu, await discord_emu.slash("show", {"job": job}))
        again = await discord_emu.wait_for(lambda: discord_emu.buttons(shown.original_id or ""))
        assert again[-2:] == [f"rb:ed:{job}", f"rb:in:{job}"], again
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await serving


async def test_failure_and_cancel_outcomes(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    a = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "one"}))
    )
    b = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "two"}))
    )
    await queue.wait_submitted(2)
    from reelbot.errors import OutOfMemory

    oom = OutOfMemory()
    await queue.finish(
        0, status=JobStatus.FAILED, error_code=oom.code, error_message=oom.user_message
    )
    await queue.finish(1, status=JobStatus.CANCELLED)
    await discord_emu.wait_for(lambda: "Failed" in content(discord_emu, a))
    await discord_emu.wait_for(lambda: "Cancelled" in content(discord_emu, b))
    await discord_emu.wait_for(lambda: discord_emu.followups(a))
    assert "ran out of memory" in discord_emu.followups(a)[0]["content"]
    assert discord_emu.followups(b) == []


async def test_expired_token_posts_to_channel_with_bot_token(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "late"}))
    )
    await discord_emu.wait_for(lambda: "Queued" in content(discord_emu, inter))
    discord_emu.clock.advance(16 * 60)
    await queue.finish(0)
    posted = await discord_emu.wait_for(
        lambda: [m for m in discord_emu.channel() if m["attachments"] and "webhook_id" not in m]
    )
    msg = posted[0]
    assert msg["content"].startswith(f"<@{ALICE}>")
    assert msg["message_reference"]["message_id"] == inter.original_id
    assert Image.open(io.BytesIO(discord_emu.files_of(msg["id"])[0][1])).format == "PNG"
    channel_post = [c for c in discord_emu.calls if c.path.endswith("/messages") and c.files]
    assert channel_post[0].auth == f"Bot {discord_emu.bot_token}"
    assert discord_emu.followups(inter) == []
    # The status message is still updated, through the channel endpoint.
    await discord_emu.wait_for(lambda: "Done" in content(discord_emu, inter))


async def test_reroll_and_cancel_buttons(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "a fox --seed 5"}))
    )
    await queue.wait_submitted(1)
    await queue.finish(0)
    result = (await discord_emu.wait_for(lambda: discord_emu.followups(inter)))[0]

    reroll = queue.watch(await discord_emu.click(result["id"], f"rb:rr:{queue.job_of(0)}"))
    await answered(discord_emu, reroll)
    first, second = (r.params for r in await queue.wait_submitted(2))
    assert second.prompt == first.prompt == "a fox"
    assert second.seed != first.seed == 5
    await discord_emu.wait_for(lambda: "Queued" in content(discord_emu, reroll))

    # Bob cannot cancel Alice's job; Alice can.
    status_id = reroll.original_id or ""
    job = queue.job_of(1)
    bob = await answered(
        discord_emu, await discord_emu.click(status_id, f"rb:cx:{job}", user_id=BOB)
    )
    [refusal] = await discord_emu.wait_for(lambda: discord_emu.followups(bob))
    assert refusal["flags"] & 64 and "no job" in refusal["content"].lower()
    assert (await queue.records.require(job)).status == JobStatus.QUEUED
    alice = await answered(discord_emu, await discord_emu.click(status_id, f"rb:cx:{job}"))
    # A deferred update of the status message first (Discord's 3 s), then Redis, then the edit.
    assert alice.response_type == 6
    await discord_emu.wait_for(lambda: "Cancelled" in discord_emu.messages[status_id]["content"])
    assert (await queue.records.require(job)).status == JobStatus.CANCELLED
    assert discord_emu.buttons(status_id) == []


async def test_variations_button_remixes_the_stored_result(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "a fox"}))
    )
    await queue.wait_submitted(1)
    await queue.finish(0, data=png(color="blue"))
    result = (await discord_emu.wait_for(lambda: discord_emu.followups(inter)))[0]
    downloads = len([c for c in discord_emu.calls if c.path.startswith("/cdn/")])
    click = queue.watch(await discord_emu.click(result["id"], f"rb:vs:{queue.job_of(0)}"))
    await answered(discord_emu, click)
    request, params = (r := (await queue.wait_submitted(2))[1]).request, r.params
    assert params.task.value == "remix" and params.prompt == "a fox"
    assert request.image_ref is not None
    stored = Image.open(io.BytesIO(await load_input(queue.redis, request.image_ref) or b""))
    assert stored.getpixel((0, 0)) == (0, 0, 255)
    # From the stored result, not a download from Discord.
    assert len([c for c in discord_emu.calls if c.path.startswith("/cdn/")]) == downloads


async def test_admin_is_checked_at_run_time(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    await answered(discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "mine"})))
    await queue.wait_submitted(1)
    job = queue.job_of(0)
    # Discord would hide /admin from Bob, but a stale or crafted client can still send it.
    refused = await discord_emu.slash("admin", {"job": job}, subcommand="cancel", user_id=BOB)
    await answered(discord_emu, refused)
    await discord_emu.wait_for(lambda: "Manage Server" in content(discord_emu, refused))
    assert refused.ephemeral
    assert (await queue.records.require(job)).status == JobStatus.QUEUED
    status = await discord_emu.slash("admin", subcommand="status", user_id=BOB)
    await answered(discord_emu, status)
    await discord_emu.wait_for(lambda: "Manage Server" in content(discord_emu, status))

    allowed = await discord_emu.slash(
        "admin", {"job": job}, subcommand="cancel", user_id=BOB, permissions=ADMIN_PERMISSIONS
    )
    await answered(discord_emu, allowed)
    async with asyncio.timeout(10):
        while (await queue.records.require(job)).status != JobStatus.CANCELLED:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_an_admin_cancels_a_members_job_with_plain_cancel(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    await answered(discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "hers"})))
    await queue.wait_submitted(1)
    job = queue.job_of(0)
    member = await answered(
        discord_emu, await discord_emu.slash("cancel", {"job": job}, user_id=BOB)
    )
    await discord_emu.wait_for(
        lambda: discord_emu.followups(member) or discord_emu.original(member)
    )
    assert (await queue.records.require(job)).status == JobStatus.QUEUED
    admin = await answered(
        discord_emu,
        await discord_emu.slash("cancel", {"job": job}, user_id=BOB, permissions=ADMIN_PERMISSIONS),
    )
    [said] = await discord_emu.wait_for(lambda: discord_emu.followups(admin))
    assert said["content"].startswith(f"{job}: Cancelled") and said["flags"] & 64
    assert (await queue.records.require(job)).status == JobStatus.CANCELLED


async def test_jobs_cancel_models_help_quota(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "first"}))
    )
    await queue.wait_submitted(1)
    jobs = await answered(discord_emu, await discord_emu.slash("jobs"))
    listing = (await discord_emu.wait_for(lambda: discord_emu.followups(jobs)))[0]
    assert queue.job_of(0) in listing["content"] and listing["flags"] & 64
    cancel = await answered(discord_emu, await discord_emu.slash("cancel"))
    await discord_emu.wait_for(lambda: discord_emu.followups(cancel))
    assert (await queue.records.require(queue.job_of(0))).status == JobStatus.CANCELLED
    models = await answered(discord_emu, await discord_emu.slash("models"))
    await discord_emu.wait_for(lambda: discord_emu.followups(models))
    assert "tiny-zimage" in content(discord_emu, models) and models.ephemeral
    assert "Styles" in content(discord_emu, models) and "watercolor" in content(discord_emu, models)
    helped = await answered(discord_emu, await discord_emu.slash("help"))
    assert "/imagine" in content(discord_emu, helped)
    quota = await answered(discord_emu, await discord_emu.slash("quota"))
    assert quota.ephemeral


async def test_redis_errors_read_temporarily_unavailable(
    discord_emu: DiscordEmulator, start: Start, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from reelbot.queue.submit import JobQueue

    await start()

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(JobQueue, "user_jobs", down)
    monkeypatch.setattr(JobQueue, "cancel", down)
    for name in ("jobs", "cancel"):
        inter = await answered(
            discord_emu, await discord_emu.slash(name, {"job": "di1"} if name == "cancel" else None)
        )
        [said] = await discord_emu.wait_for(lambda i=inter: discord_emu.followups(i))
        assert "temporarily unavailable" in said["content"], said["content"]
        assert "Something went wrong" not in said["content"]


async def test_model_autocomplete(discord_emu: DiscordEmulator, start: Start) -> None:
    await start()
    inter = await discord_emu.autocomplete("video", "model", "ltx")
    await answered(discord_emu, inter)
    call = next(c for c in discord_emu.calls if c.path.endswith("/callback"))
    assert call.json["type"] == 8
    assert [c["value"] for c in call.json["data"]["choices"]] == ["tiny-ltx"]


async def test_rate_limits_and_server_errors_lose_nothing(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "busy"}))
    )
    await discord_emu.wait_for(lambda: "Queued" in content(discord_emu, inter))
    discord_emu.inject("POST", r"^/webhooks/\d+/[^/]+$", status=429, retry_after=0.3)
    discord_emu.inject("POST", r"^/webhooks/\d+/[^/]+$", status=502)
    await queue.finish(0)
    followups = await discord_emu.wait_for(lambda: discord_emu.followups(inter), within=10)
    assert len(followups) == 1
    statuses = [
        c.status for c in discord_emu.calls if c.method == "POST" and "/webhooks/" in c.path
    ]
    assert statuses == [429, 502, 200]


async def test_gateway_reconnect_resumes_and_replays(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "before"}))
    )
    await discord_emu.disconnect()
    # Sent while the bot is away: Discord keeps it for the session and replays it on RESUME.
    during = queue.watch(await discord_emu.slash("imagine", {"prompt": "during"}))
    await discord_emu.wait_for(lambda: discord_emu.resumes == 1, within=10)
    await answered(discord_emu, during)
    await queue.wait_submitted(2)
    assert discord_emu.identifies == 1
    await queue.finish(0)
    await discord_emu.wait_for(lambda: any(m["attachments"] for m in discord_emu.channel()))


async def test_buttons_work_after_restart(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    first = await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "a fox"}))
    )
    await queue.wait_submitted(1)
    await queue.finish(0)
    result = (await discord_emu.wait_for(lambda: discord_emu.followups(inter)))[0]
    pending = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "later"}))
    )
    await queue.wait_submitted(2)
    await first.stop()

    await start()
    assert discord_emu.identifies == 2
    click = await answered(
        discord_emu, queue.watch(await discord_emu.click(result["id"], f"rb:rr:{queue.job_of(0)}"))
    )
    assert click.response_type == 5
    await queue.wait_submitted(3)
    # A job submitted before the restart is delivered by the new process.
    await queue.finish(1)
    await discord_emu.wait_for(lambda: discord_emu.followups(pending))


async def test_dm_with_a_user_installed_app(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    await start()
    inter = await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "dm"}, dm=True))
    )
    [record] = await queue.wait_submitted(1)
    request = record.request
    assert request.requester.server_id is None and not request.requester.is_admin
    assert request.reply.channel_id == discord_emu.dm_channel_id
    await queue.finish(0)
    await discord_emu.wait_for(lambda: discord_emu.followups(inter))
    refused = await answered(
        discord_emu, await discord_emu.slash("admin", subcommand="status", dm=True)
    )
    assert refused.ephemeral


async def test_a_repeated_late_delivery_posts_once(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    adapter = await start()
    await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "twice"}))
    )
    await queue.wait_submitted(1)
    discord_emu.clock.advance(20 * 60)
    record = await queue.delivering(0)
    data = await queue.results.get(record.result.ref if record.result else "")
    # A delivery re-run after a crash between posting and recording it: same job, same nonce.
    delivery = Delivery(
        job_id=record.id, kind="result", record=record, data=data, idempotency_key="k"
    )
    first = await adapter.conversation.deliver(delivery)
    second = await adapter.conversation.deliver(delivery)
    assert first == second
    assert len([m for m in discord_emu.channel() if m["attachments"]]) == 1


async def test_a_429_without_via_is_handed_back_for_retry(
    discord_emu: DiscordEmulator, start: Start, queue: Queue
) -> None:
    from reelbot.errors import RateLimited

    adapter = await start()
    await answered(
        discord_emu, queue.watch(await discord_emu.slash("imagine", {"prompt": "banned"}))
    )
    await queue.wait_submitted(1)
    record = await queue.delivering(0)
    discord_emu.inject("POST", r"^/webhooks/\d+/[^/]+$", status=429, via=False)
    delivery = Delivery(
        job_id=record.id, kind="result", record=record, data=png(), idempotency_key="k"
    )
    with pytest.raises(RateLimited):
        await adapter.conversation.deliver(delivery)


async def test_commands_sync_to_one_guild_when_configured(
    discord_emu: DiscordEmulator, start: Start
) -> None:
    await start(discord_guild_id=discord_emu.guild_id)
    # A guild's commands update at once in Discord; global ones can take an hour.
    names = {c["name"] for c in discord_emu.commands[discord_emu.guild_id]}
    assert {"imagine", "remix", "video", "animate", "admin"} <= names
    assert "global" not in discord_emu.commands


async def test_a_failing_command_sync_is_retried_and_the_adapter_runs_on(
    discord_emu: DiscordEmulator, start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reelbot.bots.discord import app as discord_app
    from reelbot.runtime.supervise import Backoff

    monkeypatch.setattr(discord_app, "SYNC_RETRY", Backoff(first_s=0.05, max_s=0.2))
    # 503: discord.py retries 500/502/504 itself (for 25 s); a 503 reaches reelbot at once.
    discord_emu.inject("PUT", r"^/applications/\d+/commands$", status=503, count=3)
    await start()
    assert discord_emu.connected and "global" not in discord_emu.commands
    await discord_emu.wait_for(lambda: discord_emu.commands.get("global"), within=10)
