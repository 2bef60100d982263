"""What the video edits may make, from a clip's header and the model: frames, lengths, models.

Bottom layer (no torch): chat can size and price /restyle, Extend and /animate with two images
before a job is queued, and the worker runs what these functions say
(``reelbot.generation.video_edit``).
"""

from __future__ import annotations

import math

from reelbot.catalog import Catalog, ModelSpec, Task, UpscalerSpec
from reelbot.errors import InvalidOption, UnknownModel
from reelbot.jobs import GenerationParams
from reelbot.video_inputs import ClipInfo

__all__ = [
    "CLIP_MAX_FPS",
    "CLIP_MAX_SIDE",
    "UPSCALE_FRAME_SHARE",
    "edit_size",
    "extend_frames",
    "grid_floor",
    "keyframes_model",
    "restyle_params",
    "upscale_clip_params",
    "whole_clip",
]

CLIP_MAX_FPS = 30.0
"""The rate a clip that is smoothed, extended or upscaled is decoded at, at most."""
CLIP_MAX_SIDE = 1024
"""The long side a clip that is smoothed, extended or upscaled is decoded at, at most (memory:
20 s at 30 fps of 1024×576 RGB is 1.1 GB); an upscaled one stops at twice that
(``jobs.VIDEO_UPSCALE_MAX_SIDE``)."""
UPSCALE_FRAME_SHARE = 0.1
"""What one frame of a video's Upscale costs, as a share of an image Upscale of the same size.
At the image's full rate an 81-frame Wan clip cost 2.6 times what making it did (35.7 credits
against 13.9), while the network is a small part of either job's GPU time (the default
compact Real-ESRGAN is ~1.2 M parameters over the frames in batches; decoding and encoding the
clip weigh as much). A tenth puts that Upscale at about a quarter of the clip (3.6 credits),
near what hosted video services charge for an upscale against a generation. An estimate until
bench/gpu.py measures it on a card."""


def grid_floor(spec: ModelSpec, frames: int) -> int:
    """The longest frame count on the model's grid (k x frame_step + 1) not above ``frames``."""
    k = max(0, (min(frames, spec.frames_max) - 1) // spec.frame_step)
    return k * spec.frame_step + 1


def restyle_params(params: GenerationParams, spec: ModelSpec, info: ClipInfo) -> GenerationParams:
    """/restyle's parameters fitted to the clip: no more frames (at ``params.fps``) than the clip
    covers, on the model's grid, and the cost of those frames."""
    fps = params.fps or spec.fps_default
    covered = max(1, math.floor(info.duration_s * fps + 1e-6))
    frames = grid_floor(spec, min(params.frames, covered))
    cost = spec.estimate_cost(
        width=params.width, height=params.height, steps=params.steps, frames=frames
    )
    return params.model_copy(update={"frames": frames, "fps": fps, "cost": cost})


def whole_clip(info: ClipInfo, max_s: float) -> tuple[int, float]:
    """The frames and rate a clip to smooth, extend or upscale is decoded at: every frame of its
    first ``max_s`` seconds, at most ``CLIP_MAX_FPS``."""
    fps = min(CLIP_MAX_FPS, max(1.0, info.fps))
    # Rounded, not floored: a GIF's 0.12 s frames read as 8.33 fps, and 0.6 s of it is
    # 4.998 frames that are 5.
    return max(1, round(min(info.duration_s, max_s) * fps)), fps


def edit_size(info: ClipInfo, *, exact: bool = False) -> tuple[int, int]:
    """The size a clip to smooth, extend or upscale is decoded at: its upright size, its long
    side at most ``CLIP_MAX_SIDE``, rounded to even sides (``exact``: an Upscale's clip keeps
    its own size when it fits, so that twice it is exactly twice the clip)."""
    width, height = info.display_size
    scale = min(1.0, CLIP_MAX_SIDE / max(width, height))
    if exact and scale == 1.0:
        return width, height
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def upscale_clip_params(
    params: GenerationParams, upscaler: UpscalerSpec, info: ClipInfo, *, max_s: float
) -> GenerationParams:
    """A video's Upscale fitted to the clip: twice the size it is decoded at (``edit_size``:
    a clip over ``CLIP_MAX_SIDE`` ends at twice that, less than twice its own), the frames the
    worker upscales (``whole_clip``), and their cost: ``UPSCALE_FRAME_SHARE`` of an upscaled
    image of the output's size (``UpscalerSpec.estimate_cost``'s rate) for each frame."""
    frames, fps = whole_clip(info, max_s)
    width, height = (2 * side for side in edit_size(info, exact=True))
    per_frame = UPSCALE_FRAME_SHARE * upscaler.cost_weight * width * height / (512 * 512)
    cost = max(0.01, round(per_frame * frames, 2))
    update = {"width": width, "height": height, "frames": frames, "fps": round(fps), "cost": cost}
    return params.model_copy(update=update)


def extend_frames(spec: ModelSpec, *, have: int, fps: float, asked: int, max_s: float) -> int:
    """How many frames Extend generates (its first is the clip's last, so the clip grows by one
    fewer): on the model's grid, at most ``asked``, the whole within ``max_s`` seconds.

    Raises:
        InvalidOption: the clip is already too long for even the shortest extension.
    """
    room = math.floor(max_s * fps + 1e-6) - have + 1
    if room < spec.frame_step + 1:
        raise InvalidOption(
            f"This video is already {have / fps:.3g} s long and videos here stop at "
            f"{max_s:g} s, so it cannot be extended.",
            option="extend",
        )
    return grid_floor(spec, min(asked, room))


def keyframes_model(catalog: Catalog, name: str | None) -> ModelSpec:
    """The model that makes a video from a first and a last frame: ``name`` if it can, else the
    deployment's; the refusal names which model can.

    Raises:
        UnknownModel: ``name`` cannot (or no model here can), in one sentence.
    """
    able = catalog.for_task(Task.KEYFRAMES)
    if name is not None:
        model = catalog.get(name)
        if Task.KEYFRAMES in model.tasks:
            return model
        if able:
            raise UnknownModel(
                f"{model.name} cannot end a video on a given last frame; "
                f"{able[0].name} can: add --model {able[0].name}."
            )
    if not able:
        raise UnknownModel(
            "No model on this server can end a video on a given last frame (Wan 2.2 starts "
            "from the first frame only); send one image to /animate, or ask the operator to "
            "enable an LTX-Video model's keyframes."
        )
    return able[0]
