"""Which uploaded file is which input: the clip, the image to start from, the mask, the others.

A platform hands over the files one message carried, in the order the user attached them, with
the MIME types it declared; the rules that sort them live here once. A clip comes alone
(/restyle, /smooth, or the /animate that extends it); the first image is the one to start from;
a second image is /remix's mask (white = change) or /animate's last frame; /blend takes two to
four. Each file is checked against its own kind's limits before it is read further.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reelbot.catalog import Task
from reelbot.chat.attachments import Inputs
from reelbot.errors import InvalidImage, InvalidVideo, UserError
from reelbot.inputs import DEFAULT_MAX_BYTES, check_declared
from reelbot.jobs import check_image_count
from reelbot.video_inputs import DEFAULT_LIMITS, check_declared_video

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "TOO_HEAVY",
    "Inputs",
    "Upload",
    "oversized",
    "sort_uploads",
]

MAX_FILES = 4
"""Files one command takes: /blend's four images (a clip comes alone, a mask with one image)."""
MAX_FILE_BYTES = max(DEFAULT_MAX_BYTES, DEFAULT_LIMITS.max_bytes)
"""The most any one file may weigh; each is then held to its own kind's limit."""
TOO_HEAVY = (
    f"That is over {MAX_FILES * MAX_FILE_BYTES >> 20} MB: send up to {MAX_FILES} files (images, "
    f"or one clip) of {MAX_FILE_BYTES >> 20} MB each at most."
)
"""The refusal of a message whose files together weigh more than any command takes."""
_UNKNOWN = ("", "application/octet-stream")
"""Declared types that say nothing: the bytes are probed instead."""
_SECOND = {
    Task.REMIX: "/remix takes an image and, second, a mask (white = change)",
    Task.ANIMATE: "/animate takes a first and a last frame",
}
"""The tasks that give a second image a meaning, and the words when more came."""


@dataclass(frozen=True)
class Upload:
    """One file as the platform received it: its bytes and the MIME type it declared."""

    data: bytes
    mime: str = ""
    name: str = ""

    @property
    def declared(self) -> str | None:
        """The MIME type without parameters, or None where it says nothing."""
        mime = self.mime.split(";")[0].strip().lower()
        return None if mime in _UNKNOWN else mime


def _is_clip(task: Task, upload: Upload) -> bool:
    # A task that takes a clip reads every file as one (a GIF too); otherwise only a video/*.
    return task.needs_video or (upload.declared or "").startswith("video/")


def oversized(mime: str, size: int) -> str | None:
    """The refusal of a file over its kind's byte limit (a clip's or an image's), or None."""
    upload = Upload(b"", mime)
    check = check_declared_video if (upload.declared or "").startswith("video/") else check_declared
    try:
        check(size, None)
    except UserError as exc:
        return exc.user_message
    return None


def sort_uploads(task: Task, files: Sequence[Upload], mask: Upload | None = None) -> Inputs:
    """Say which file is which input of ``task``; refuse, in a sentence, what does not fit."""
    if len(files) + (mask is not None) > MAX_FILES:
        raise InvalidImage(f"Send at most {MAX_FILES} files with one command.")
    clips = [each for each in files if _is_clip(task, each)]
    if clips:
        if not (task.needs_video or task == Task.ANIMATE):
            raise InvalidVideo(
                f"/{task.value} takes no video; use /restyle or /smooth, or /animate to extend it."
            )
        if len(files) > 1 or mask is not None:
            raise InvalidVideo(f"/{task.value} takes one clip and nothing else with it.")
        check_declared_video(len(clips[0].data), clips[0].declared)
        return Inputs(video=clips[0].data)
    if not files and mask is None:
        return Inputs()
    if not task.needs_image:
        raise InvalidImage(
            f"/{task.value} takes no image; use /remix or /animate to start from one."
        )
    for each in (*files, *([mask] if mask is not None else [])):
        check_declared(len(each.data), each.declared)
    images = [each.data for each in files]
    if mask is not None and task != Task.REMIX:
        raise InvalidImage("A mask goes with /remix and the image to change (white = change).")
    if task in _SECOND and len(images) + (mask is not None) > 2:
        raise InvalidImage(f"{_SECOND[task]}; this came with {len(images)} images.")
    if task == Task.REMIX and mask is None and len(images) == 2:
        return Inputs(image=images[0], mask=images[1])
    if task not in _SECOND:
        check_image_count(task, len(images))
    first = images[0] if images else None
    return Inputs(image=first, mask=mask.data if mask else None, images=tuple(images[1:]))
