"""Which attachment is which input: a command's named files sorted into a generation's inputs.

Platforms that take files as named fields (Discord's attachment options, a web form) say which
file is the clip, the mask or a further image by the field's name; these rules turn the names into
the checks made before acknowledging (from what the platform declares of each file) and into
``ChatService.generate``'s inputs once the files are downloaded.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from reelbot.catalog import Task
from reelbot.inputs import DEFAULT_MAX_BYTES, check_declared
from reelbot.video_inputs import check_declared_video

__all__ = [
    "IMAGE",
    "MASK",
    "MORE_IMAGES",
    "VIDEO",
    "Inputs",
    "check_declared_file",
    "has",
    "task_for",
]

IMAGE, VIDEO, MASK = "image", "video", "mask"
"""The picture to start from (/blend's first), the clip (/restyle, /smooth), the mask (/remix)."""
MORE_IMAGES = ("image2", "image3", "image4", "last_image")
"""Further images, in order: /blend's second to fourth, /animate's last frame (keyframes)."""


def check_declared_file(
    name: str, size: int | None, mime: str | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    """Refuse the file named ``name`` from its declared size and type, before downloading it.

    ``max_bytes`` is the platform's own limit on images; a clip has the video input limits.
    """
    if name == VIDEO:
        check_declared_video(size, mime)
    else:
        check_declared(size, mime, max_bytes=min(max_bytes, DEFAULT_MAX_BYTES))


def task_for(task: Task, names: Collection[str]) -> Task:
    """What a command becomes with these files, as ``ChatService.generate`` decides it: /remix
    with a mask is /inpaint, /animate with a last image is /keyframes (checked before the
    acknowledgement, so that a model that cannot do it is answered privately)."""
    if task == Task.REMIX and MASK in names:
        return Task.INPAINT
    if task == Task.ANIMATE and any(name in MORE_IMAGES for name in names):
        return Task.KEYFRAMES
    return task


def has(names: Collection[str]) -> dict[str, bool]:
    """``has_image=`` and ``has_video=`` for ``ChatService.plan``, from the files' names."""
    return {"has_image": IMAGE in names, "has_video": VIDEO in names}


@dataclass(frozen=True)
class Inputs:
    """A command's downloaded files by role, as ``ChatService.generate`` takes them."""

    image: bytes | None = None
    video: bytes | None = None
    mask: bytes | None = None
    images: tuple[bytes, ...] = ()

    @classmethod
    def named(cls, files: Mapping[str, bytes]) -> Inputs:
        """Sort files by their field names; unknown names are a bug of the caller."""
        unknown = set(files) - {IMAGE, VIDEO, MASK, *MORE_IMAGES}
        if unknown:
            raise ValueError(f"no input is called {sorted(unknown)}")
        more = tuple(files[name] for name in MORE_IMAGES if name in files)
        return cls(files.get(IMAGE), files.get(VIDEO), files.get(MASK), more)

    def as_kwargs(self, **more: Any) -> dict[str, Any]:
        """``image=``, ``video=``, ``mask=``, ``images=`` (and ``more``) for
        ``ChatService.generate``."""
        inputs = {"image": self.image, "video": self.video, "mask": self.mask}
        return {**inputs, "images": self.images, **more}
