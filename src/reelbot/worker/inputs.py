"""A job's inputs, read back from Redis and decoded for its pipeline call.

An image (the one to remix, animate, upscale, inpaint or describe; /blend's first), a clip
(/restyle's, /smooth's, the one an Upscale enlarges, or the video an Extend continues),
/inpaint's mask and the further images (/blend's others, /keyframes' last frame). Each is
checked again here as it is decoded: what the platform sent has been probed from its header at
submit, but only decoding proves it is sound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from arq.connections import ArqRedis
from PIL import Image

from reelbot.catalog import Task
from reelbot.clips import edit_size, whole_clip
from reelbot.config import Settings
from reelbot.errors import InvalidImage, InvalidVideo, UserError
from reelbot.inputs import load_input_image
from reelbot.jobs import VIDEO_UPSCALE, VIDEO_UPSCALE_MAX_SIDE, GenerationParams
from reelbot.masks import load_mask
from reelbot.store.records import JobRecord
from reelbot.store.results import load_input
from reelbot.video_inputs import VideoLimits, load_input_video, probe_clip

__all__ = ["JobInputs", "load_inputs"]


@dataclass
class JobInputs:
    """What a job starts from, decoded."""

    image: Image.Image | None = None
    video: Sequence[Image.Image] | None = None
    fps: float | None = None
    note: str = ""
    """For the user: the sound was dropped, only the first seconds were used."""
    mask: Image.Image | None = None
    references: list[Image.Image] = field(default_factory=list)

    @property
    def more_than_an_image(self) -> bool:
        """Whether the call needs ``video_edit.run_job`` rather than ``Runner.generate``."""
        return self.video is not None or self.mask is not None or bool(self.references)


def needs_inputs(record: JobRecord) -> bool:
    """Whether the job starts from anything stored."""
    request = record.request
    return bool(request.image_ref or request.video_ref or request.mask_ref or request.more_refs)


async def _bytes(redis: ArqRedis, ref: str, what: str, error: type[UserError]) -> bytes:
    data = await load_input(redis, ref)
    if data is None:
        raise error(f"{what} expired before the job ran. Please send it again.")
    return data


def _image(data: bytes) -> Image.Image:
    return load_input_image(data)


def _clip(
    data: bytes, params: GenerationParams, settings: Settings
) -> tuple[Sequence[Image.Image], float, str]:
    """The clip's frames: on /restyle's grid and size (``clips.restyle_params``); for /smooth,
    Extend and Upscale, the clip itself (``clips.whole_clip``: at most ``video_max_s`` of it),
    its long side at most 1024 (``clips.edit_size``); an Upscale's note says the size it
    makes."""
    limits = VideoLimits(max_duration_s=settings.video_input_max_s)
    note = ""
    if params.task == Task.RESTYLE:
        fps = float(params.fps or 16)
        size = (params.width, params.height)
        frames = params.frames
    else:
        info = probe_clip(data, limits=limits)
        frames, fps = whole_clip(info, settings.video_max_s)
        size = edit_size(info, exact=params.task == Task.UPSCALE_VIDEO)
        if params.task == Task.UPSCALE_VIDEO:
            note = _upscaled(info.display_size, size)
    clip = load_input_video(
        data, frames=frames, fps=fps, width=size[0], height=size[1], limits=limits
    )
    return clip.frames, clip.fps, " ".join(n for n in (note, clip.note) if n)


def _upscaled(clip: tuple[int, int], decoded: tuple[int, int]) -> str:
    """An Upscale's note: "Upscaled x2 (W×H)", or by how much when the clip was larger than
    the decode allows (its long side over 1024)."""
    width, height = (VIDEO_UPSCALE * side for side in decoded)
    if decoded == clip:
        return f"Upscaled x{VIDEO_UPSCALE} ({width}×{height})."
    factor = width / clip[0]
    return (
        f"Upscaled x{factor:.2g} ({width}×{height}): videos here stop at "
        f"{VIDEO_UPSCALE_MAX_SIDE} pixels on the long side."
    )


async def load_inputs(redis: ArqRedis, record: JobRecord, settings: Settings) -> JobInputs:
    """Read and decode every input of ``record``; a missing or unreadable one is a
    ``UserError`` in words (the job fails with it, nothing is retried)."""
    request, params = record.request, record.params
    inputs = JobInputs()
    if request.image_ref:
        data = await _bytes(redis, request.image_ref, "The input image", InvalidImage)
        inputs.image = await asyncio.to_thread(_image, data)
    if request.video_ref:
        data = await _bytes(redis, request.video_ref, "The input video", InvalidVideo)
        frames, inputs.fps, inputs.note = await asyncio.to_thread(_clip, data, params, settings)
        inputs.video = frames
        if params.task == Task.ANIMATE and inputs.image is None:
            inputs.image = frames[-1]  # Extend: an /animate from the clip's last frame
    for ref in request.more_refs:
        data = await _bytes(redis, ref, "An input image", InvalidImage)
        inputs.references.append(await asyncio.to_thread(_image, data))
    if request.mask_ref:
        if inputs.image is None:
            raise InvalidImage("A mask needs the image it masks; send both together.")
        data = await _bytes(redis, request.mask_ref, "The mask", InvalidImage)
        inputs.mask = await asyncio.to_thread(load_mask, data, inputs.image.size)
    return inputs
