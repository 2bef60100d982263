"""The web chat serves a result only to the browser that asked for it (and to owners)."""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from arq.connections import ArqRedis

from reelbot.bots.web.app import build_app
from reelbot.bots.web.chat import WebChat
from reelbot.catalog import Task, load_catalog
from reelbot.config import Settings
from reelbot.jobs import GenerationRequest, JobStatus, ReplyAddress, Requester
from reelbot.runtime.http import Hub
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.store.records import ResultInfo

pytestmark = pytest.mark.timeout(60)

ALICE = "alice-client-0001"
BOB = "bob-client-000002"
OWNER = "owner-client-0003"
PICTURE = b"\x89PNG\r\n\x1a\n" + b"a picture" * 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private Valkey (or redis-server) for this module."""
    with RedisServer(tmp_path_factory.mktemp("web-media-redis")) as srv:
        yield srv


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[ArqRedis]:
    client = connect(server.url)
    await client.flushall()
    yield client
    await client.aclose(close_connection_pool=True)


@pytest.fixture
async def chat(server: RedisServer, redis: ArqRedis, tmp_path: Path) -> WebChat:
    settings = Settings(
        redis_url=server.url, models="tiny", data_dir=tmp_path, owner_ids=(f"web:{OWNER}",)
    )
    return WebChat(redis, settings, load_catalog("tiny"))


@pytest.fixture
async def http(chat: WebChat) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(chat, Hub(), token=None, loopback=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def finish(chat: WebChat, job_id: str) -> None:
    """What the worker does with a made result: store it, and the job is being delivered."""
    records = chat.service.queue.records
    assert await records.transition(job_id, JobStatus.RUNNING)
    assert await records.transition(job_id, JobStatus.ENCODING)
    ref = await chat.service.results.put(job_id, PICTURE, mime="image/png")
    info = ResultInfo(ref=ref, mime="image/png", ext="png", size=len(PICTURE), width=8, height=8)
    assert await records.transition(job_id, JobStatus.DELIVERING, result=info)


async def test_only_the_asker_and_owners_get_a_web_result(
    chat: WebChat, http: httpx.AsyncClient
) -> None:
    made = await http.post(
        "/api/command",
        data={"msg": "m0000001", "text": "/imagine a fox --seed 3"},
        headers={"X-Reelbot-Client": ALICE},
    )
    assert made.status_code == 200, made.text
    job_id = made.json()["job_id"]
    await finish(chat, job_id)

    (view,) = (await http.get(f"/api/history?client={ALICE}")).json()["jobs"]
    mine = await http.get(view["media"]["url"])
    assert mine.status_code == 200 and mine.content == PICTURE
    owner = await http.get(f"/media/{job_id}?client={OWNER}")
    assert owner.status_code == 200 and owner.content == PICTURE

    nothing = await http.get(f"/media/we{'0' * 20}?client={BOB}")
    for someone_else in (f"?client={BOB}", "", "?client=x"):
        other = await http.get(f"/media/{job_id}{someone_else}")
        assert other.status_code == 404, (someone_else, other.status_code)
        # The same words as for a job that never was: nothing tells Bob the job exists.
        assert other.json() == nothing.json()
        assert "No such result" in other.json()["message"]


async def test_discord_and_telegram_results_are_never_served(
    chat: WebChat, http: httpx.AsyncClient
) -> None:
    nothing = await http.get(f"/media/te{'0' * 20}?client={OWNER}")
    for platform, user in (("telegram", "123456789"), ("discord", "80351110224678912")):
        request = GenerationRequest(
            task=Task.IMAGINE,
            text="a lighthouse",
            requester=Requester(platform=platform, user_id=user, server_id="-100"),
            reply=ReplyAddress(platform=platform, channel_id="-100"),
            source_id="4242",
        )
        job_id = (await chat.service.queue.submit(request)).record.id
        await finish(chat, job_id)
        # A Telegram job id is computable from the update id; a Discord user id is public.
        for client in (user, OWNER, ALICE):
            served = await http.get(f"/media/{job_id}?client={client}")
            assert served.status_code == 404, (platform, client)
            assert served.json() == nothing.json()


async def test_an_upload_that_cannot_be_read_is_answered_in_words(http: httpx.AsyncClient) -> None:
    """The web's input arrives with the command: a broken or oversized one gets words, no job."""
    headers = {"X-Reelbot-Client": ALICE}
    broken = await http.post(
        "/api/command",
        data={"msg": "m0000010", "text": "/remix make it winter"},
        files={"image": ("fox.png", PICTURE[:40], "image/png")},
        headers=headers,
    )
    assert broken.status_code == 400 and broken.json()["code"] == "invalid_image"
    assert "image" in broken.json()["message"].lower()
    huge = await http.post(
        "/api/command",
        data={"msg": "m0000011", "text": "/remix make it winter"},
        files={"image": ("big.png", PICTURE + b"\0" * (21 * 1024 * 1024), "image/png")},
        headers=headers,
    )
    assert huge.status_code == 413 and "over the 20 MB limit" in huge.json()["message"]
    jobs = (await http.get(f"/api/history?client={ALICE}")).json()["jobs"]
    assert jobs == []


def _png(size: tuple[int, int], *, mask: bool = False) -> bytes:
    """A PNG picture, or a mask (white = change) over its middle."""
    from PIL import Image

    out = io.BytesIO()
    image = Image.new("L" if mask else "RGB", size, 0)
    if mask:
        image.paste(255, (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    image.save(out, "PNG")
    return out.getvalue()


async def test_the_form_counts_its_files_and_sorts_them_by_command(
    http: httpx.AsyncClient,
) -> None:
    """Up to four files, each within its kind's limit; a second image under /remix, or a file
    sent as ``mask``, is the mask; a clip goes only where a command takes one."""
    Files = list[tuple[str, tuple[str, bytes, str]]]

    async def post(text: str, files: Files) -> httpx.Response:
        data = {"msg": secrets.token_hex(8), "text": text}
        return await http.post(
            "/api/command", data=data, files=files, headers={"X-Reelbot-Client": ALICE}
        )

    picture = ("a.png", _png((64, 64)), "image/png")
    mask = ("m.png", _png((64, 64), mask=True), "image/png")
    five = await post("/blend --model tiny-flux2", [("image", picture)] * 5)
    assert five.status_code == 400 and "Too many files" in five.json()["message"]
    clip = ("big.mp4", b"\0" * (21 * 1024 * 1024), "video/mp4")
    big = await post("/restyle watercolor", [("image", clip)])
    assert big.status_code == 413, big.text
    assert "video is 21 MB, over the 20 MB limit" in big.json()["message"]
    wrong = await post("/imagine a fox", [("image", ("in.mp4", b"\0" * 64, "video/mp4"))])
    assert wrong.status_code == 400 and "/imagine takes no video" in wrong.json()["message"]
    for files in ([("image", picture), ("image", mask)], [("image", picture), ("mask", mask)]):
        remix = await post("/remix a red door", files)
        assert remix.status_code == 200 and remix.json()["task"] == "inpaint", remix.text
    two = await post("/remix a red door", [("image", picture), ("mask", mask), ("mask", mask)])
    assert two.status_code == 400 and two.json()["code"] == "invalid_mask", two.text
    blend = await post("/blend --model tiny-flux2", [("image", picture)] * 2)
    assert blend.status_code == 200 and blend.json()["task"] == "blend", blend.text
