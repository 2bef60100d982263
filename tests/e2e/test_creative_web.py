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
                *("zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down", "info"),
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
