"""The video edits on a ``Runner``: restyle a clip, extend it, keyframes, smooth and upscale.

Each is one blocking call, like ``Runner.generate``, for the worker (through
``asyncio.to_thread``) and ``reelbot generate``. Sizes, frame counts and the keyframes model are
planned beforehand, without torch, by ``reelbot.clips``; input clips are probed and sampled by
``reelbot.video_inputs``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter

from PIL import Image

from reelbot.catalog import Task
from reelbot.clips import extend_frames
from reelbot.errors import Cancelled, InvalidOption, MissingImage
from reelbot.generation.runner import GenerationOutput, ProgressCallback, Runner
from reelbot.generation.video_frames import interpolate_x2
from reelbot.jobs import VIDEO_UPSCALE, GenerationParams
from reelbot.video_inputs import DEFAULT_LIMITS, VideoLimits, load_input_video

__all__ = ["EditOutput", "extend", "keyframes", "restyle", "run_job", "smooth", "upscale_video"]


@dataclass
class EditOutput:
    """A video edit's frames, and what the user should be told (the sound was dropped …)."""

    output: GenerationOutput
    note: str = ""


def restyle(
    runner: Runner,
    params: GenerationParams,
    data: bytes,
    *,
    limits: VideoLimits = DEFAULT_LIMITS,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> EditOutput:
    """/restyle: the clip in ``data`` sampled to ``params`` (frames, fps, size: see
    ``clips.restyle_params``) and redrawn by the model's video-to-video pipeline."""
    if params.task != Task.RESTYLE:
        raise ValueError(f"restyle needs /restyle parameters, not /{params.task.value}")
    clip = load_input_video(
        data,
        frames=params.frames,
        fps=float(params.fps or 16),
        width=params.width,
        height=params.height,
        limits=limits,
    )
    output = runner.generate(params, video=clip.frames, on_progress=on_progress, cancel=cancel)
    return EditOutput(output, clip.note)


def extend(
    runner: Runner,
    params: GenerationParams,
    frames: Sequence[Image.Image],
    fps: float,
    *,
    max_s: float,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> GenerationOutput:
    """Extend: /animate from the clip's last frame (``params``: its prompt, model and size),
    joined to the clip. The new part's first frame is the clip's last, so it is dropped; the new
    frames take the clip's size and rate, and the whole stays within ``max_s`` seconds.

    Raises:
        InvalidOption: the clip is already as long as ``max_s`` allows.
    """
    if params.task != Task.ANIMATE:
        raise ValueError(f"extend runs /animate parameters, not /{params.task.value}")
    if not frames:
        raise InvalidOption("There is no video to extend.", option="extend")
    spec = runner.catalog.get(params.model)
    count = extend_frames(spec, have=len(frames), fps=fps, asked=params.frames, max_s=max_s)
    rate = max(spec.fps_min, min(spec.fps_max, round(fps)))
    step = params.model_copy(update={"frames": count, "fps": rate})
    output = runner.generate(step, frames[-1], on_progress=on_progress, cancel=cancel)
    size = frames[0].size
    new = [f if f.size == size else f.resize(size, Image.Resampling.LANCZOS) for f in output.frames]
    output.frames = [*frames, *new[1:]]
    output.fps = round(fps)
    return output


def keyframes(
    runner: Runner,
    params: GenerationParams,
    first: Image.Image,
    last: Image.Image,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> GenerationOutput:
    """/animate with two images: a video from ``first`` to ``last`` (``params`` for
    ``Task.KEYFRAMES``, on a model ``clips.keyframes_model`` chose)."""
    if params.task != Task.KEYFRAMES:
        raise ValueError(f"keyframes needs /keyframes parameters, not /{params.task.value}")
    return runner.generate(params, first, last_image=last, on_progress=on_progress, cancel=cancel)


def smooth(frames: Sequence[Image.Image], fps: float, *, seed: int = 0) -> GenerationOutput:
    """Smooth: twice the frames at twice the rate (motion-interpolated), the same duration."""
    start = perf_counter()
    doubled, rate = interpolate_x2(frames, fps)
    return GenerationOutput(
        frames=doubled,
        fps=round(rate),
        seed=seed,
        timings={"interpolate": perf_counter() - start},
    )


def upscale_video(
    runner: Runner,
    frames: Sequence[Image.Image],
    fps: float,
    *,
    scale: int = 2,
    model: str | None = None,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> GenerationOutput:
    """Upscale on a video: every frame ``scale`` times larger by the upscaler ``model`` (the
    deployment's default)."""
    start = perf_counter()
    out = runner.upscale_frames(
        frames, scale=scale, model=model, on_progress=on_progress, cancel=cancel
    )
    return GenerationOutput(
        frames=out, fps=round(fps), seed=seed, timings={"upscale": perf_counter() - start}
    )


def run_job(
    runner: Runner,
    params: GenerationParams,
    image: Image.Image | None = None,
    *,
    video: Sequence[Image.Image] | None = None,
    fps: float | None = None,
    mask: Image.Image | None = None,
    references: Sequence[Image.Image] = (),
    video_max_s: float = 20.0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> GenerationOutput:
    """One queued job with all its inputs, as the worker holds them: /smooth, a video's
    Upscale (every frame ×2 by ``params.model``, an upscaler), Extend (an
    /animate given the ``video`` it continues), /keyframes (``references[0]`` is its last
    image); the rest (/restyle's frames, /inpaint's mask, /blend's references) through
    ``Runner.generate``."""
    rate = fps or params.fps or 16
    if params.task == Task.SMOOTH:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        return smooth(video or [], rate, seed=params.seed)
    if params.task == Task.UPSCALE_VIDEO:
        if not video:
            raise InvalidOption("There is no video to upscale.", option="scale")
        return upscale_video(
            runner,
            video,
            rate,
            scale=VIDEO_UPSCALE,
            model=params.model,
            seed=params.seed,
            on_progress=on_progress,
            cancel=cancel,
        )
    if params.task == Task.ANIMATE and video is not None:
        return extend(
            runner, params, video, rate, max_s=video_max_s, on_progress=on_progress, cancel=cancel
        )
    if params.task == Task.KEYFRAMES:
        if image is None or not references:
            raise MissingImage("/keyframes needs two images: the first and the last frame.")
        return keyframes(
            runner, params, image, references[0], on_progress=on_progress, cancel=cancel
        )
    return runner.generate(
        params,
        image,
        video=video,
        mask=mask,
        references=references,
        on_progress=on_progress,
        cancel=cancel,
    )
