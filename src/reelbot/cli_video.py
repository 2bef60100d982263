"""``reelbot generate`` for the video edits: restyle, extend, keyframes, smooth and upscale a
video, locally and without Redis, through the same functions as the worker."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from reelbot.catalog import Catalog, Task, load_catalog
from reelbot.cli_io import fail, read_file
from reelbot.clips import keyframes_model, restyle_params
from reelbot.config import Settings
from reelbot.inputs import load_input_image
from reelbot.jobs import GenerationParams, Options, parse_prompt, resolve
from reelbot.video_inputs import ClipInfo, VideoLimits, load_input_video, probe_clip

__all__ = ["VIDEO_EDITS", "is_video_edit", "run"]

VIDEO_EDITS = ("restyle", "extend", "smooth")
"""``reelbot generate`` tasks that only this module runs."""

FRAME_SIDE_MAX = 1280
"""Smooth and Upscale take a clip's frames at most this long a side (the models' largest)."""


def is_video_edit(args: argparse.Namespace) -> bool:
    """Whether ``reelbot generate`` was asked for a video edit (this module's work)."""
    return bool(
        args.task in VIDEO_EDITS
        or getattr(args, "video", None) is not None
        or getattr(args, "last_image", None) is not None
    )


def _even_fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``size`` scaled down to at most ``side`` on its long side, both sides even (x264)."""
    scale = min(1.0, side / max(size))
    return tuple(max(2, round(v * scale / 2) * 2) for v in size)  # type: ignore[return-value]


def _clip_frames(
    data: bytes, info: ClipInfo, size: tuple[int, int], max_s: float, limits: VideoLimits
) -> tuple[Sequence[Image.Image], float]:
    """The clip's frames at its own rate (at most ``max_s`` seconds of it) at ``size``."""
    fps = max(1.0, min(60.0, round(info.fps) or 16.0))
    count = max(1, min(info.frames, int(max_s * fps)))
    video = load_input_video(
        data, frames=count, fps=fps, width=size[0], height=size[1], limits=limits
    )
    if video.note:
        print(video.note, file=sys.stderr)
    return video.frames, fps


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one video edit from ``reelbot generate``'s arguments and write the MP4."""
    out: Path = args.out
    if out.suffix.lower() != ".mp4":
        return fail(f"--out {out}: a video edit makes a video; name the file .mp4")
    task = args.task
    if args.last_image is not None and task != "animate":
        return fail("--last-image only goes with animate")
    if task not in (*VIDEO_EDITS, "upscale", "animate"):
        return fail(f"--video does not apply to {task}")
    if task == "animate":
        if args.image is None or args.video is not None:
            return fail("animate with --last-image takes --image FIRST, not --video")
    elif args.video is None:
        return fail(f"{task} needs --video IN (an MP4, MOV, MKV, WebM or GIF clip)")

    from reelbot.generation.gpu import GpuOptions
    from reelbot.generation.media import encode_video
    from reelbot.generation.runner import Runner
    from reelbot.generation.video_edit import extend, keyframes, restyle, smooth, upscale_video

    catalog = load_catalog(settings.models, settings.styles_file)
    limits = VideoLimits(max_duration_s=settings.video_input_max_s)
    seed = int(time.time_ns() % (2**32))
    runner = Runner(
        catalog,
        data_dir=settings.data_dir,
        device=settings.device,
        gpu=GpuOptions.from_settings(settings),
    )
    note = ""
    summary = ""
    if task == "animate":
        first = load_input_image(read_file(args.image, "--image"))
        last = load_input_image(read_file(args.last_image, "--last-image"))
        params = _keyframes_params(catalog, args.prompt, first.size, seed)
        output = keyframes(runner, params, first, last)
        summary = f"{params.prompt} {params.summary()}"
    else:
        video = Path(str(args.video))  # checked above: every task but animate has one
        data = read_file(video, "--video")
        info = probe_clip(data, limits=limits)
        if task == "restyle":
            params = resolve(
                Task.RESTYLE,
                args.prompt,
                catalog,
                has_video=True,
                image_size=info.display_size,
                default_seed=seed,
            )
            params = restyle_params(params, catalog.get(params.model), info)
            edited = restyle(runner, params, data, limits=limits)
            output, note = edited.output, edited.note
            summary = f"{params.prompt} {params.summary()}"
        elif task == "extend":
            params = resolve(
                Task.ANIMATE,
                args.prompt,
                catalog,
                has_image=True,
                image_size=info.display_size,
                default_seed=seed,
            )
            frames, fps = _clip_frames(
                data, info, (params.width, params.height), settings.video_max_s, limits
            )
            output = extend(runner, params, frames, fps, max_s=settings.video_max_s)
            summary = f"{params.prompt} {params.summary()}"
        else:
            size = _even_fit(info.display_size, FRAME_SIDE_MAX)
            frames, fps = _clip_frames(data, info, size, settings.video_max_s, limits)
            if task == "smooth":
                output = smooth(frames, fps, seed=seed)
            else:
                output = upscale_video(runner, frames, fps, scale=args.scale or 2)
    media = encode_video(output.frames, fps=output.fps or 16, max_bytes=args.max_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(media.data)
    print(f"{out}  {media.width}x{media.height}, {media.frames} frames at {media.fps:g} fps")
    for line in (note, media.note, summary):
        if line:
            print(line)
    return 0


def _keyframes_params(
    catalog: Catalog, prompt: str, size: tuple[int, int], seed: int
) -> GenerationParams:
    """/animate with two images: the keyframes model (named or the default) and its options."""
    _, options = parse_prompt(prompt)
    spec = keyframes_model(catalog, options.model)
    return resolve(
        Task.KEYFRAMES,
        prompt,
        catalog,
        has_image=True,
        image_size=size,
        default_seed=seed,
        explicit=Options(model=spec.name) if options.model is None else None,
    )
