"""Albums: several attachments that a platform delivers as separate messages, and which input
each attachment of a command is.

Telegram delivers an album (a media group) as one message per photo or video, each with the
same group id and only one of them with the caption, so an adapter collects them here: the
first part to arrive waits until no other has come for a short settle window, then gets them
all, in order; the others get nothing. The command may be on any part. Then each attachment's
role comes from its place (which image is the mask, the last frame or a further image).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reelbot.catalog import Task
from reelbot.chat.attachments import IMAGE, MASK, MORE_IMAGES, VIDEO, Inputs, task_for
from reelbot.errors import InvalidVideo, MissingImage
from reelbot.jobs import check_image_count

__all__ = [
    "ALBUM_MAX",
    "ONE_PART",
    "ROLES",
    "SETTLE_S",
    "Albums",
    "Attachment",
    "check_whole",
    "fetched",
    "planned",
    "roles",
]

T = TypeVar("T")

SETTLE_S = 1.0
"""How long an album stays open after its latest part (its parts come within milliseconds)."""
ALBUM_MAX = 10
"""The most parts an album has (sendMediaGroup takes 2-10): a full one closes at once."""
ONE_PART = (
    "I only got one picture of that album: in a group, Telegram shows me just the message with "
    "the command unless I am an admin there. Send the album in a private chat with me, or ask an "
    "admin to make me one (or to turn my privacy mode off with @BotFather's /setprivacy)."
)
"""An album of which one part came: the others never reach a bot in privacy mode."""
KEPT = 256
"""Finished albums remembered, so that a command replying to one part gets them all."""


class Albums(Generic[T]):
    """The open albums by group id, and the last ``KEPT`` finished ones."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._open: dict[str, list[tuple[int, T]]] = {}
        self._done: OrderedDict[str, list[T]] = OrderedDict()
        self._arrived: dict[str, asyncio.Event] = {}

    async def collect(self, group_id: str, order: int, part: T) -> list[T] | None:
        """Add a part; the call that opened the album returns all its parts, sorted by
        ``order``, once none has arrived for ``settle_s``; every other call returns None."""
        if (parts := self._open.get(group_id)) is not None:
            parts.append((order, part))
            self._arrived[group_id].set()
            return None
        self._open[group_id], arrived = [(order, part)], asyncio.Event()
        self._arrived[group_id] = arrived
        try:
            while len(self._open[group_id]) < ALBUM_MAX:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), self.settle_s)
                except TimeoutError:
                    break
        finally:
            del self._arrived[group_id]
            parts = self._open.pop(group_id)
        album = [p for _, p in sorted(parts, key=lambda each: each[0])]
        self._done[group_id] = album
        while len(self._done) > KEPT:
            self._done.popitem(last=False)
        return album

    def finished(self, group_id: str | None) -> list[T] | None:
        """A finished album's parts (None when unknown or forgotten)."""
        return self._done.get(group_id) if group_id else None


@dataclass(frozen=True)
class Attachment:
    """An image or a clip that came with a command, by the platform's reference (a file id)."""

    ref: str
    size: int | None
    video: bool = False


ROLES: dict[Task, tuple[str, ...]] = {
    Task.REMIX: (IMAGE, MASK),
    Task.ANIMATE: (IMAGE, MORE_IMAGES[-1]),
    Task.BLEND: (IMAGE, *MORE_IMAGES[:-1]),
}
"""Each image's input name (``reelbot.chat.attachments``), in order, where a command takes more
than one: /remix's second is the mask (white = change), /animate's the last frame (keyframes),
/blend's the 2nd to 4th images. Other commands take one image."""


def check_whole(album: Sequence[Any] | None) -> None:
    """Refuse an album of which only one part came (an album has 2 to 10): run on that part
    alone, /blend would say it got one image and /remix would ignore the mask.

    Raises:
        MissingImage: ``ONE_PART``.
    """
    if album is not None and len(album) < 2:
        raise MissingImage(ONE_PART)


def roles(task: Task, found: Sequence[Attachment]) -> list[str]:
    """The input name of each attachment, in order; a clip is the ``video``.

    Raises:
        MissingImage: more images than the command takes (or fewer than /blend's 2), in words.
        InvalidVideo: more than one clip.
    """
    if (clips := sum(a.video for a in found)) > 1:
        raise InvalidVideo(f"/{task.value} takes one clip; this came with {clips}.")
    names, images = iter(ROLES.get(task, (IMAGE,))), len(found) - clips
    if task == Task.BLEND:
        check_image_count(task, images)  # 2 to 4
    elif images > len(ROLES.get(task, (IMAGE,))):
        what = {Task.REMIX: "an image and its mask", Task.ANIMATE: "a first and a last image"}
        takes = what.get(task, "one image")
        raise MissingImage(f"/{task.value} takes {takes}; this came with {images}.")
    return [VIDEO if a.video else next(names) for a in found]


def planned(task: Task, found: Sequence[Attachment]) -> dict[str, Any]:
    """``ChatService.plan``'s ``task`` (what the command becomes with these: /remix with a mask
    is /inpaint, /animate with a last image /keyframes), ``has_image`` and ``has_video``."""
    names = roles(task, found)
    return {"task": task_for(task, names), "has_image": IMAGE in names, "has_video": VIDEO in names}


async def fetched(
    task: Task, found: Sequence[Attachment], fetch: Callable[..., Awaitable[bytes]]
) -> dict[str, Any]:
    """Download the attachments (``fetch(ref, video=…)``, the surface's ``fetch_input``) into
    ``ChatService.generate``'s inputs."""
    names = roles(task, found)
    files = {name: await fetch(a.ref, video=a.video) for name, a in zip(names, found, strict=True)}
    return Inputs.named(files).as_kwargs()
