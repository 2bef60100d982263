"""An album's parts, collected from separate messages, and which input each attachment is."""

from __future__ import annotations

import asyncio

import pytest

from reelbot.catalog import Task
from reelbot.chat.albums import ALBUM_MAX, Albums, Attachment, fetched, planned, roles
from reelbot.errors import InvalidVideo, MissingImage


async def test_the_first_part_gets_the_whole_album_in_order_the_others_nothing() -> None:
    albums: Albums[str] = Albums(settle_s=0.05)
    first = asyncio.create_task(albums.collect("g", 3, "c"))
    await asyncio.sleep(0)
    later = [await albums.collect("g", n, p) for n, p in ((1, "a"), (2, "b"))]
    assert later == [None, None]
    assert await first == ["a", "b", "c"]
    assert albums.finished("g") == ["a", "b", "c"] and albums.finished(None) is None
    # Another album with the same id later is a new one.
    assert await albums.collect("g", 9, "z") == ["z"]


async def test_a_full_album_closes_without_waiting() -> None:
    albums: Albums[int] = Albums(settle_s=30)
    first = asyncio.create_task(albums.collect("g", 0, 0))
    await asyncio.sleep(0)
    for n in range(1, ALBUM_MAX):
        await albums.collect("g", n, n)
    async with asyncio.timeout(1):
        assert await first == list(range(ALBUM_MAX))


async def test_which_input_each_attachment_is_by_its_place() -> None:
    a, b, c = (Attachment(ref, 1) for ref in "abc")
    clip = Attachment("v", 1, video=True)
    assert planned(Task.REMIX, [a, b]) == {
        "task": Task.INPAINT,
        "has_image": True,
        "has_video": False,
    }
    assert planned(Task.ANIMATE, [a, b])["task"] == Task.KEYFRAMES
    assert planned(Task.RESTYLE, [clip]) == {
        "task": Task.RESTYLE,
        "has_image": False,
        "has_video": True,
    }
    assert roles(Task.BLEND, [a, b, c]) == ["image", "image2", "image3"]

    async def fetch(ref: str, *, video: bool) -> bytes:
        return f"{ref}{video:d}".encode()

    inputs = await fetched(Task.REMIX, [a, b], fetch)
    assert (inputs["image"], inputs["mask"], inputs["images"]) == (b"a0", b"b0", ())
    assert (await fetched(Task.ANIMATE, [a, b], fetch))["images"] == (b"b0",)
    assert (await fetched(Task.SMOOTH, [clip], fetch))["video"] == b"v1"
    with pytest.raises(MissingImage, match="an image and its mask; this came with 3"):
        roles(Task.REMIX, [a, b, c])
    with pytest.raises(MissingImage, match="/blend combines 2 to 4 images; this came with 1"):
        roles(Task.BLEND, [a])
    with pytest.raises(MissingImage, match="/upscale takes one image"):
        roles(Task.UPSCALE, [a, b])
    with pytest.raises(InvalidVideo, match="one clip"):
        roles(Task.RESTYLE, [clip, clip])
