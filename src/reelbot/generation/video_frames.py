"""Operations on a clip's frames that need no diffusion model: ×2 frame interpolation through
ffmpeg's ``minterpolate``, and super-resolution over every frame in batched tiles.

No maintained frame-interpolation network installs offline here (the RIFE packages on the
registry fetch their weights at run time), so Smooth uses the bundled ffmpeg's motion-compensated
interpolation, which needs no weights.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import imageio_ffmpeg
import torch
from PIL import Image

from reelbot.errors import Cancelled
from reelbot.frames import FrameArray, pipe_frames
from reelbot.generation import upscale

__all__ = ["interpolate_x2", "sr_frames"]

_TIMEOUT_S = 900.0
SR_BATCH = 8
"""Frames whose same tile goes through the network in one forward pass."""


def interpolate_x2(frames: Sequence[Image.Image], fps: float) -> tuple[FrameArray, float]:
    """Twice the frames at twice the rate, the new ones motion-interpolated (same duration).

    The frames go to ffmpeg one at a time and come back straight into one array (in a
    temporary file when large, ``frames.FrameArray``), so no second copy of the clip is held.

    Raises:
        ValueError: no frames, or frames of different sizes.
        RuntimeError: ffmpeg failed; its error output is in the message.
    """
    if not frames:
        raise ValueError("no frames to interpolate")
    width, height = frames[0].size
    if any(f.size != (width, height) for f in frames):
        raise ValueError("frames of different sizes")
    want = 2 * len(frames)
    # mci: motion-compensated, bidirectional estimation, overlapped blocks (ffmpeg's best mode).
    vf = f"minterpolate=fps={2 * fps:g}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1"
    out = FrameArray.empty(want, width, height)
    run = pipe_frames(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}",
         "-i", "pipe:0", "-vf", vf, "-frames:v", str(want),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        out, feed=(f.convert("RGB").tobytes() for f in frames), timeout_s=_TIMEOUT_S,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg minterpolate failed: {run.stderr}")
    # The last input frame has no successor to blend towards: ffmpeg may end one frame early
    # (pipe_frames repeats the last frame read).
    if run.frames == 0:
        raise RuntimeError("ffmpeg minterpolate returned no frames")
    return out, 2 * fps


def _tensor(image: Image.Image) -> torch.Tensor:
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float().div(255)


def _image(tensor: torch.Tensor) -> Image.Image:
    array = tensor.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(array.numpy(), "RGB")


def sr_frames(
    net: upscale.SRNet,
    frames: Sequence[Image.Image],
    *,
    device: str,
    scale: int,
    tile: int = 256,
    overlap: int = 32,
    batch: int = SR_BATCH,
    on_batch: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> FrameArray:
    """Every frame ``scale`` times larger: the network tile by tile, the same tile of up to
    ``batch`` frames in one forward pass, seams blended, then resized down where the network's
    own factor is larger (a ×4 network for Upscale ×2). The result is one array, in a temporary
    file when large (``frames.FrameArray``).

    ``on_batch(done, total)`` is called after each batch of frames; a cancel is checked before
    each forward pass.
    """
    if not frames:
        raise ValueError("no frames to upscale")
    width, height = frames[0].size
    tiles = upscale.tiles_for(width, height, tile, overlap)
    target = (width * scale, height * scale)
    out = FrameArray.empty(len(frames), *target)
    total = -(-len(frames) // batch)
    with torch.inference_mode():
        for done, start in enumerate(range(0, len(frames), batch), start=1):
            chunk = torch.stack([_tensor(f) for f in frames[start : start + batch]])
            per_frame: list[list[torch.Tensor]] = [[] for _ in range(chunk.shape[0])]
            for box in tiles:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                part = chunk[:, :, box.top : box.bottom, box.left : box.right].to(device)
                result = net.module(part).float().cpu()
                for k in range(chunk.shape[0]):
                    per_frame[k].append(result[k])
            for k, outputs in enumerate(per_frame):
                image = _image(
                    upscale.blend_tiles(
                        (width, height), tiles, outputs, scale=net.scale, overlap=overlap
                    )
                )
                if image.size != target:
                    image = image.resize(target, Image.Resampling.LANCZOS)
                out.put(start + k, image)
            if on_batch is not None:
                on_batch(done, total)
    return out
