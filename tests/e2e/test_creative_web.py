"""The image loop on the web chat, in process with the real worker on the tiny models: the card
shows a preview before the result, Vary (subtle) keeps the source's size and model, a 16:9
upload stays 16:9 through /remix, Info and /history answer in words, and /show brings a result
back after the server restarts."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from test_previews_e2e import Slow
from test_web_up import Page, _delivered, page

from integration.conftest import make_settings, start_generation
from reelbot.bots.web.service import bind, serve_web
from reelbot.config import Settings
from reelbot.runtime.server import RedisServer

pytestmark = pytest.mark.timeout(150)


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(out, "PNG")
    return out.getvalue()


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def _serving(settings: Settings) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    sock = bind("127.0.0.1", 0)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_web(settings, stop, sock))
    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop, task


@pytest.fixture
async def settings(tmp_path: Path, discord_data_dir: Path) -> AsyncIterator[Settings]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield make_settings(server.url, discord_data_dir)
    finally:
        server.stop(kill=True)


async def _upload(p: Page, text: str, image: bytes) -> dict[str, Any]:
    sent = await p.http.post(
        "/api/command",
        data={"msg": secrets.token_hex(8), "text": text},
        files={"image": ("wide.png", image, "image/png")},
        headers={"X-Reelbot-Client": p.client},
    )
    assert sent.status_code == 200, sent.text
    answer: dict[str, Any] = sent.json()
    return answer


async def test_vary_remix_shape_info_history_and_show_after_a_restart(
    settings: Settings, discord_runner: Any
) -> None:
    stop_worker = asyncio.Event()
    slow = Slow(discord_runner, delay_s=0.6)  # steps slow enough for a preview to be published
    worker = await start_generation(settings, slow, stop_worker)
    url, stop, serving = await _serving(settings)
    try:
        async with page(url) as p:
            job = (await p.send("/imagine a red fox --ar 16:9 --seed 5 --steps 8")).json()["job_id"]
            card = await p.wait(job, _delivered)
            # The card showed the picture forming before the result (a preview every 4 steps).
            seen = [e for e in p.events if e.get("job_id") == job]
            first_preview = next(i for i, e in enumerate(seen) if "preview" in e)
            assert seen[first_preview]["preview"].startswith("data:image/jpeg;base64,")
            assert first_preview < next(i for i, e in enumerate(seen) if _delivered(e))
            slow.delay_s = 0.0
            source = _size((await p.http.get(card["media"]["url"])).content)
            assert source[0] > source[1]
            assert card["actions"] == [
                *("upscale", "vary_subtle", "vary_strong", "reroll", "animate"),
                *("zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down", "edit"),
                "info",
            ]
            # Vary (subtle): the source's size and model.
            varied = (await p.send(action="vary_subtle", job=job)).json()
            assert varied["task"] == "remix" and varied["model"] == card["model"]
            done = await p.wait(varied["job_id"], _delivered)
            assert _size((await p.http.get(done["media"]["url"])).content) == source
            # A 16:9 upload stays wide through /remix.
            remix = await _upload(p, "/remix in winter", _png(320, 180))
            done = await p.wait(remix["job_id"], _delivered)
            width, height = _size((await p.http.get(done["media"]["url"])).content)
            assert width / height > 1.5, (width, height)
            # Info and /history answer in words.
            info = (await p.send(action="info", job=job)).json()
            assert info["type"] == "text" and "seed 5" in info["text"], info
            listed = (await p.send("/history")).json()
            assert job in listed["text"] and f"/show {job}" in listed["text"]
            client = p.client
        stop.set()
        async with asyncio.timeout(30):
            await serving
        # A fresh server on the same Redis: /show brings the card back, its image still served.
        url, stop, serving = await _serving(settings)
        async with page(url) as p:
            p.client = client
            shown = (await p.send(f"/show {job}")).json()
            assert shown["type"] == "job" and shown["job_id"] == job, shown
            again = await p.http.get(shown["media"]["url"])
            assert again.status_code == 200 and _size(again.content) == source
            # Another browser cannot see it.
            p.client = "someone-else-0001"
            other = (await p.send(f"/show {job}")).json()
            assert other["type"] == "error" and "no job" in other["message"], other
    finally:
        stop.set()
        stop_worker.set()
        async with asyncio.timeout(30):
            await asyncio.gather(serving, worker, return_exceptions=True)


async def _files(p: Page, text: str, *files: tuple[str, bytes, str]) -> Any:
    """POST a command with files under ``image`` in order (as the page's file input sends them)."""
    sent = await p.http.post(
        "/api/command",
        data={"msg": secrets.token_hex(8), "text": text},
        files=[("image", each) for each in files],
        headers={"X-Reelbot-Client": p.client},
    )
    assert sent.status_code == 200, sent.text
    return sent.json()


def _clip() -> bytes:
    from reelbot.generation.media import encode_video

    frames = [Image.new("RGB", (128, 72), (20 + 20 * i, 90, 160)) for i in range(9)]
    return encode_video(frames, fps=8, max_bytes=10**7).data


def _gif() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (96, 64), (40 * i, 120, 200 - 20 * i)) for i in range(5)]
    # 10 fps: a GIF frame lasts whole centiseconds, so 8 fps would read back as 8.33.
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def _mask(width: int, height: int) -> bytes:
    out = io.BytesIO()
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 4, height // 4, width * 3 // 4, height * 3 // 4))
    mask.save(out, "PNG")
    return out.getvalue()


def _rgb(data: bytes) -> Any:
    import numpy as np

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_clips_masks_several_images_and_describe_from_the_page(
    settings: Settings, discord_runner: Any
) -> None:
    """Issues 17 and 18 on the web chat, through the real server, queue and worker: an MP4 to
    /restyle stays wide, Extend lengthens it; a GIF to /smooth doubles its frames and Upscale
    doubles its size; Zoom Out 2x
    doubles an image; /remix with a second image as its mask changes only the masked area;
    /describe offers four suggestions and pressing 3 queues an /imagine of the third; /blend of
    two images gives one image; /animate with two images is a keyframes video."""
    from reelbot.generation.media import probe_video

    stop_worker = asyncio.Event()
    worker = await start_generation(settings, discord_runner, stop_worker)
    url, stop, serving = await _serving(settings)
    try:
        async with page(url) as p:

            async def done(card: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
                final = await p.wait(card["job_id"], _delivered)
                return final, (await p.http.get(final["media"]["url"])).content

            card, data = await done(
                await _files(p, "/restyle watercolor", ("in.mp4", _clip(), "video/mp4"))
            )
            clip = probe_video(data)
            assert card["task"] == "restyle" and card["media"]["kind"] == "video"
            assert clip.width > clip.height  # the input's aspect ratio
            assert {"extend", "smooth"} <= set(card["actions"])
            extend = (await p.send(action="extend", job=card["job_id"])).json()
            assert probe_video((await done(extend))[1]).frames > clip.frames
            gif = probe_video(_gif())
            smooth, data = await done(await _files(p, "/smooth", ("in.gif", _gif(), "image/gif")))
            assert smooth["task"] == "smooth" and probe_video(data).frames == 2 * gif.frames
            # Upscale on the smoothed clip: every frame twice the size, offered no second time.
            smoothed = probe_video(data)
            up, data = await done((await p.send(action="upscale", job=smooth["job_id"])).json())
            upscaled = probe_video(data)
            assert up["task"] == "upscale_video" and "upscale" not in up["actions"]
            assert (upscaled.width, upscaled.height) == (2 * smoothed.width, 2 * smoothed.height)
            assert upscaled.frames == smoothed.frames

            source, picture = await done((await p.send("/imagine a lighthouse --seed 3")).json())
            width, height = _size(picture)
            zoomed = await done((await p.send(action="zoom_2", job=source["job_id"])).json())
            assert _size(zoomed[1]) == (2 * width, 2 * height)

            png, mask = ("source.png", picture, "image/png"), _mask(width, height)
            masked, edited = await done(
                await _files(p, "/remix a red door", png, ("mask.png", mask, "image/png"))
            )
            assert masked["task"] == "inpaint"
            got, want = _rgb(edited), _rgb(picture)
            inside = _rgb(mask)[..., 0] > 0
            assert (got[~inside] == want[~inside]).all()  # only the masked area changes
            assert abs(got[inside] - want[inside]).mean() > 5

            described = await p.wait((await _files(p, "/describe", png))["job_id"], _delivered)
            ideas = described["media"]["texts"]
            assert len(ideas) == 4 and all(i["actions"] == ["imagine"] for i in ideas), ideas
            again = (await p.send(action="imagine", job=described["job_id"], index="2")).json()
            said = (again, ideas)
            assert again.get("task") == "imagine" and again["prompt"] == ideas[2]["text"], said
            await done(again)

            other = ("other.png", _png(64, 64), "image/png")
            blended, data = await done(await _files(p, "/blend --model tiny-flux2", png, other))
            assert blended["task"] == "blend" and blended["media"]["kind"] == "image"
            keyed, data = await done(await _files(p, "/animate --model tiny-ltx", other, png))
            assert keyed["task"] == "keyframes" and probe_video(data).frames > 1
    finally:
        stop.set()
        stop_worker.set()
        async with asyncio.timeout(30):
            await asyncio.gather(serving, worker, return_exceptions=True)
