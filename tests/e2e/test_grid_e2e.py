"""Grids end to end, with the real queue and the real worker on the tiny models.

discord.py against the local Discord: ``/imagine … count:4`` posts one grid image with U1–U4 and
V1–V4, each button a job of the presser's own; /history lists it and /show posts it again after
a restart. The real web server: ``--n 4`` shows four tiles, each served only to its client."""

from __future__ import annotations

import io

import httpx
from PIL import Image
from test_discord_e2e import BOB, Stack, acknowledged, decoded, png, result_of
from test_discord_e2e import stack as stack  # the fixture: a Discord process on Valkey
from test_web_up import _delivered, page

from conftest import WebUp
from reelbot.catalog import Task, load_catalog
from reelbot.jobs import job_id_for

SIZE = (load_catalog("tiny").models["tiny-zimage"].width,) * 2
"""The tiny image model's size (square): each image of a grid, and half the grid's sides."""


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def test_discord_grid_is_one_image_with_u_and_v_buttons(stack: Stack) -> None:
    emu = stack.emu
    await stack.start_worker()
    inter = await acknowledged(emu, await emu.slash("imagine", {"prompt": "a fox", "count": 4}))
    message = await result_of(emu, inter)
    job = job_id_for("discord", inter.id)
    _, grid = decoded(emu, message)
    assert grid.size == (2 * SIZE[0], 2 * SIZE[1])  # 2×2 tiles at full resolution
    record = await stack.record(job)
    assert record.params.count == 4 and len(record.result.tiles) == 4
    rows = [
        [c["custom_id"] for c in row["components"]]
        for row in emu.messages[message["id"]]["components"]
    ]
    # Discord's rows of at most five: U1–U4 and Re-roll, then V1–V4 (and whatever follows).
    assert rows[0] == [*(f"rb:up:{job}:{i}" for i in range(4)), f"rb:rr:{job}"]
    assert rows[1][:4] == [f"rb:vs:{job}:{i}" for i in range(4)]
    assert all(len(row) <= 5 for row in rows)
    labels = [
        c["label"] for row in emu.messages[message["id"]]["components"] for c in row["components"]
    ]
    assert labels[:9] == ["U1", "U2", "U3", "U4", "Re-roll", "V1", "V2", "V3", "V4"]

    # U2, clicked by someone else: their own upscale job of image 2 (twice its sides).
    click = await acknowledged(emu, await emu.click(message["id"], f"rb:up:{job}:1", user_id=BOB))
    upscaled = await result_of(emu, click)
    up = await stack.record(job_id_for("discord", click.id))
    assert up.request.task == Task.UPSCALE and up.request.requester.user_id == BOB
    assert decoded(emu, upscaled)[1].size == (2 * SIZE[0], 2 * SIZE[1])

    # V1 (subtle), clicked by Bob: a grid of variations of image 1, with its size and model.
    click = await acknowledged(emu, await emu.click(message["id"], f"rb:vs:{job}:0", user_id=BOB))
    varied = await result_of(emu, click)
    vary = await stack.record(job_id_for("discord", click.id))
    assert vary.params.task == Task.REMIX and vary.params.model == record.params.model
    assert vary.params.strength == 0.35 and (vary.params.width, vary.params.height) == SIZE
    assert decoded(emu, varied)[1].size == grid.size and vary.params.count == 4

    # A 16:9 picture keeps its shape through /remix (no square centre-crop).
    wide = emu.add_attachment("wide.png", png(320, 180))
    remix = await acknowledged(
        emu, await emu.slash("remix", {"prompt": "in snow"}, attachments={"image": wide})
    )
    _, remixed = decoded(emu, await result_of(emu, remix))
    assert remixed.width / remixed.height > 1.5, remixed.size

    # /history lists the grid, privately; after the adapter restarts /show posts it again.
    listed = await acknowledged(emu, await emu.slash("history", {}))
    [said] = await emu.wait_for(lambda: emu.followups(listed), within=10)
    assert listed.ephemeral and job in said["content"] and f"/show {job}" in said["content"]
    await stack.stop("discord")
    await stack.start_adapter()
    shown = await acknowledged(emu, await emu.slash("show", {"job": job}))
    again = await emu.wait_for(
        lambda: (m := emu.original(shown)) is not None and m["attachments"] and m, within=10
    )
    assert emu.files_of(again["id"])[0][1] == emu.files_of(message["id"])[0][1]
    assert "seed" in again["content"] and any(
        c["custom_id"] == f"rb:in:{job}" for row in again["components"] for c in row["components"]
    )
    assert emu.violations == []


async def test_web_grid_shows_four_tiles_served_only_to_their_client(web_up: WebUp) -> None:
    async with page(web_up.url) as p:
        answer = await p.send("/imagine a lighthouse --n 4 --seed 3")
        assert answer.status_code == 200, answer.text
        job = answer.json()["job_id"]
        card = await p.wait(job, _delivered)
        media = card["media"]
        assert _image((await p.http.get(media["url"])).content).size == (
            2 * SIZE[0],
            2 * SIZE[1],
        )
        assert "reroll" in card["actions"] and "upscale" not in card["actions"]
        tiles = media["tiles"]
        assert [t["actions"] for t in tiles] == [["upscale", "vary_subtle"]] * 4
        for i, tile in enumerate(tiles):
            got = await p.http.get(tile["url"])
            assert got.status_code == 200 and got.headers["content-type"] == "image/png"
            assert _image(got.content).size == SIZE == (tile["width"], tile["height"])
            # The same tile for another browser (another client id) is not there at all.
            other = tile["url"].replace(f"client={p.client}", "client=someone-else-01")
            assert (await p.http.get(other)).status_code == 404, i
        assert (await p.http.get(f"{media['url']}&part=4")).status_code == 404

        # U2 from the page: the form's ``index`` picks image 2 of the grid.
        clicked = await p.send(action="upscale", job=job, index="1")
        assert clicked.status_code == 200, clicked.text
        up = await p.wait(clicked.json()["job_id"], _delivered)
        async with httpx.AsyncClient(base_url=web_up.url) as http:
            data = (await http.get(up["media"]["url"])).content
        assert _image(data).size == (2 * SIZE[0], 2 * SIZE[1])
        assert up["task"] == "upscale"
