"""A video result's Upscale (``Task.UPSCALE_VIDEO``): planned at submit from the clip's header
(twice its size up to 2048 pixels, refused in words past it, priced per frame), decoded by the
worker at the clip's own size, and run by the tiny upscaler over every frame."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.clips import (
    CLIP_MAX_SIDE,
    UPSCALE_FRAME_SHARE,
    edit_size,
    upscale_clip_params,
    whole_clip,
)
from reelbot.config import Settings
from reelbot.errors import InvalidOption, InvalidPrompt
from reelbot.generation.runner import Runner
from reelbot.generation.video_edit import run_job
from reelbot.jobs import VIDEO_UPSCALE_MAX_SIDE, Options, resolve
from reelbot.video_inputs import ClipInfo
from reelbot.worker.inputs import _clip, _upscaled

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _info(width: int, height: int, *, fps: float = 8.0, duration_s: float = 1.0) -> ClipInfo:
    return ClipInfo(
        container="MP4/MOV",
        codec="h264",
        width=width,
        height=height,
        rotation=0,
        duration_s=duration_s,
        fps=fps,
        frames=round(fps * duration_s),
        has_audio=False,
        nbytes=1000,
    )


def test_an_upscale_doubles_the_clip_and_costs_per_frame(tiny_catalog: Catalog) -> None:
    params = resolve(Task.UPSCALE_VIDEO, "", tiny_catalog, has_video=True, image_size=(320, 180))
    assert (params.model, params.width, params.height) == ("tiny-sr", 640, 360)
    assert params.task.is_video and not params.task.is_command
    upscaler = tiny_catalog.upscaler()
    fitted = upscale_clip_params(params, upscaler, _info(320, 180, duration_s=3.0), max_s=2.0)
    # Every frame of the first 2 s (the worker's Extend/Smooth limit) at 8 fps: 16 frames, each
    # priced at a share of an upscaled image of 640x360.
    assert (fitted.width, fitted.height, fitted.frames, fitted.fps) == (640, 360, 16, 8)
    assert whole_clip(_info(320, 180, fps=60.0), 2.0) == (30, 30.0)  # at most 30 fps
    one = UPSCALE_FRAME_SHARE * upscaler.cost_weight * 640 * 360 / (512 * 512)
    assert fitted.cost == max(0.01, round(16 * one, 2))


def test_a_clip_over_1024_ends_at_2048_and_one_already_2048_is_refused(
    tiny_catalog: Catalog,
) -> None:
    assert VIDEO_UPSCALE_MAX_SIDE == 2 * CLIP_MAX_SIDE  # the worker decodes at up to half
    # The default Wan clip (1280x704) is decoded at 1024 long and upscaled to 2048, the note says
    # by how much.
    wide = _info(1280, 704)
    params = resolve(Task.UPSCALE_VIDEO, "", tiny_catalog, has_video=True, image_size=(1280, 704))
    fitted = upscale_clip_params(params, tiny_catalog.upscaler(), wide, max_s=20.0)
    assert (fitted.width, fitted.height) == (2048, 1128) == tuple(2 * s for s in edit_size(wide))
    assert _upscaled((1280, 704), edit_size(wide, exact=True)) == (
        "Upscaled x1.6 (2048×1128): videos here stop at 2048 pixels on the long side."
    )
    with pytest.raises(InvalidOption, match=r"already 2048x1152; .* stop at 2048 pixels"):
        resolve(Task.UPSCALE_VIDEO, "", tiny_catalog, has_video=True, image_size=(2048, 1152))
    with pytest.raises(InvalidPrompt, match="no prompt"):
        resolve(Task.UPSCALE_VIDEO, "a fox", tiny_catalog, has_video=True, image_size=(64, 48))
    with pytest.raises(InvalidOption, match="--seed does not apply"):
        resolve(
            Task.UPSCALE_VIDEO,
            "",
            tiny_catalog,
            explicit=Options(seed=3),
            has_video=True,
            image_size=(64, 48),
        )


def test_the_worker_decodes_the_clip_at_its_own_size_and_upscales_every_frame(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    # An odd size stays as it is (the Smooth/Extend decode rounds to even sides): ×2 is even.
    frames = [Image.new("RGB", (33, 21), (i * 60, 90, 160)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    params = resolve(Task.UPSCALE_VIDEO, "", tiny_catalog, has_video=True, image_size=(33, 21))
    decoded, fps, note = _clip(buf.getvalue(), params, Settings(models="tiny"))
    assert [f.size for f in decoded] == [(33, 21)] * 3 and fps == 10.0
    assert note == "Upscaled x2 (66×42)."
    out = run_job(runner, params, video=decoded, fps=fps)
    assert [f.size for f in out.frames] == [(66, 42)] * 3 and out.fps == 10
