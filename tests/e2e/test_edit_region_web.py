"""Edit region through the real web server on a private Valkey (no worker: the jobs it makes
wait in the queue): a signed link to a Discord result opens in one browser only, submits an
/inpaint of the presser's that goes back to the Discord chat, and refuses expired and forged
links; the web chat's own editor sends its mask with the press."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from integration.conftest import make_settings
from reelbot.bots.web.service import bind, serve_web
from reelbot.catalog import Task, load_catalog
from reelbot.chat.edit_links import LINK_TTL_S, EditLinks
from reelbot.chat.service import ChatService, Context
from reelbot.config import Settings
from reelbot.jobs import JobStatus, ReplyAddress
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.store.records import JobRecord, ResultInfo

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "111111111111111111", "222222222222222222"


def png(size: int = 64, box: tuple[int, int, int, int] | None = None) -> bytes:
    """A grey image, or a black mask with a white ``box``."""
    image = Image.new("RGB", (size, size), (0, 0, 0) if box else (90, 120, 150))
    if box:
        image.paste((255, 255, 255), box)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@dataclass
class Served:
    url: str
    settings: Settings
    redis: object


@pytest.fixture
async def served(tmp_path: Path, discord_data_dir: Path) -> AsyncIterator[Served]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(server.url, discord_data_dir, public_url=url)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_web(settings, stop, sock))
    redis = connect(server.url)
    try:
        yield Served(url, settings, redis)
    finally:
        await redis.aclose(close_connection_pool=True)
        stop.set()
        async with asyncio.timeout(30):
            await serving
        server.stop(kill=True)


async def _finished(service: ChatService, ctx: Context, reply: ReplyAddress) -> JobRecord:
    """An /imagine of ``ctx`` in ``reply``'s chat, finished as the worker finishes one."""
    ticket = await service.generate(ctx, Task.IMAGINE, "a lighthouse", reply=reply, source_id="1")
    data = png()
    ref = await service.results.put(ticket.job_id, data, mime="image/png")
    info = ResultInfo(ref=ref, mime="image/png", ext="png", size=len(data), width=64, height=64)
    record = await service.queue.records.update(
        ticket.job_id, lambda r: r.moved(JobStatus.DELIVERING, result=info)
    )
    assert record is not None
    return record


async def _submit(
    http: httpx.AsyncClient, link: str, mask: bytes, msg: str | None = None
) -> httpx.Response:
    return await http.post(
        link.replace("/edit?", "/edit/submit?"),
        data={"msg": msg or secrets.token_hex(8), "text": "a red door"},
        files={"mask": ("mask.png", mask, "image/png")},
    )


async def test_a_link_opens_in_one_browser_and_edits_as_the_presser_in_their_chat(
    served: Served,
) -> None:
    catalog = load_catalog("tiny")
    discord = ChatService(served.redis, served.settings, catalog, platform="discord")  # type: ignore[arg-type]
    where = ReplyAddress(
        platform="discord",
        channel_id="42",
        message_id="7",
        status_message_id="7",
        interaction_token="the-interaction-token",
        extra={"application_id": "5", "max_bytes": "10485760"},
    )
    alice = Context(discord.requester(ALICE, server_id="9", role_ids=("77",)), "42")
    source = await _finished(discord, alice, where)
    # Bob presses Edit region under Alice's result: his link, his job, posted in that channel.
    bob = Context(discord.requester(BOB, server_id="9", role_ids=("88",), display_name="Bob"), "42")
    links = EditLinks(discord)
    said = await links.offer(bob, source.id)
    link = next(word for word in said.split() if word.startswith(served.url))
    assert "15 minutes" in said and "the-interaction-token" not in link
    middle = png(box=(16, 16, 48, 48))
    async with (
        httpx.AsyncClient(timeout=10) as first,
        httpx.AsyncClient(timeout=10) as second,
    ):
        opened = await first.get(link)
        assert opened.status_code == 200 and "Edit region" in opened.text
        assert opened.headers["cache-control"] == "no-store"
        [cookie] = [c for c in first.cookies.jar if c.name.startswith("reelbot_edit_")]
        assert cookie.path == "/edit" and cookie.has_nonstandard_attr("HttpOnly")
        image = await first.get(link.replace("/edit?", "/edit/source?"))
        assert image.status_code == 200 and image.content == png()
        # Another browser is refused, to open it, to see its image and to submit.
        refused = await second.get(link)
        assert refused.status_code == 403 and "opened by someone else" in refused.text
        for answer in (
            await second.get(link.replace("/edit?", "/edit/source?")),
            await _submit(second, link, middle),
        ):
            assert answer.status_code == 403, answer.text
            assert "opened by someone else" in answer.json()["message"]
        # The mask is checked as any mask is: all black changes nothing.
        black = await _submit(first, link, png(box=(0, 0, 0, 0)))
        assert black.status_code == 400 and "all black" in black.json()["message"]
        sent = await _submit(first, link, middle, msg="request-0001")
        assert sent.status_code == 200, sent.text
        body = sent.json()
        assert body["type"] == "queued" and "posted in the chat" in body["text"]
        again = await _submit(first, link, middle, msg="request-0001")  # a retried POST
        assert again.json()["job_id"] == body["job_id"]
    record = await discord.queue.records.get(body["job_id"])
    assert record is not None and record.params.task == Task.INPAINT
    assert record.params.prompt == "a red door" and record.request.mask_ref is not None
    who = record.requester
    assert (who.platform, who.user_id, who.server_id, who.role_ids) == (
        "discord",
        BOB,
        "9",
        ("88",),
    )
    assert who.display_name == "Bob"
    reply = record.request.reply
    assert (reply.platform, reply.channel_id, reply.extra) == ("discord", "42", where.extra)
    # A new post in the channel: no interaction token, no status message to edit.
    assert reply.interaction_token is None and reply.status_message_id is None
    assert reply.message_id is None

    # Expired and forged links are refused in words.
    stale = await links.mint(bob, source.id, now=0.0)
    signature = link.split("t=")[1].split(".")[1]
    forged = link.replace(signature, ("A" if signature[0] != "A" else "B") + signature[1:])
    async with httpx.AsyncClient(timeout=10) as third:
        old = await third.get(stale)
        assert old.status_code == 410 and "expired; press Edit region again" in old.text
        fake = await third.get(forged)
        assert fake.status_code == 403 and "not valid" in fake.text
        sneaky = await _submit(third, forged, middle)
        assert sneaky.status_code == 403 and "not valid" in sneaky.json()["message"]
    assert LINK_TTL_S == 15 * 60


async def test_the_web_chats_editor_sends_its_mask_with_the_press(served: Served) -> None:
    catalog = load_catalog("tiny")
    web = ChatService(served.redis, served.settings, catalog, platform="web")  # type: ignore[arg-type]
    client = "client-of-alice-01"
    here = ReplyAddress(platform="web", channel_id=client)
    source = await _finished(web, Context(web.requester(client), client), here)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        listed = (await http.get("/api/history", params={"client": client})).json()["jobs"]
        assert "edit" in listed[0]["actions"]
        script = await http.get("/edit/editor.js")
        assert script.status_code == 200 and "ReelbotEditor" in script.text
        page = await http.get("/")
        assert '<script src="/edit/editor.js">' in page.text

        async def press(who: str) -> httpx.Response:
            return await http.post(
                "/api/command",
                data={"msg": secrets.token_hex(8), "action": "edit", "job": source.id},
                files={"mask": ("mask.png", png(box=(0, 0, 32, 64)), "image/png")},
                headers={"X-Reelbot-Client": who},
            )

        card = (await press(client)).json()
        assert card["type"] == "job" and card["task"] == "inpaint", card
        assert card["prompt"] == "a lighthouse"  # an empty prompt keeps the result's
        other = (await press("someone-else-0001")).json()
        assert other["type"] == "error" and "no job" in other["message"], other
