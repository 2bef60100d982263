"""Encoding results to fit an upload limit: real encodes with the bundled ffmpeg, real decodes."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from reelbot.generation.media import (
    decode_video_frames,
    encode_image,
    encode_video,
    ffmpeg_exe,
    probe_video,
)


def gradient_frames(
    n: int, h: int, w: int, *, noise: float = 0.0, seed: int = 0
) -> NDArray[np.uint8]:
    """A gradient sliding right, with optional grain: smooth, moving, cheap to make."""
    rng = np.random.default_rng(seed)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        base = np.stack(
            np.broadcast_arrays(
                (x * 255 / max(1, w - 1) + 4 * t) % 256,
                y * 255 / max(1, h - 1) + 0 * x,
                128 + 0 * x + 0 * y,
            ),
            axis=-1,
        )
        if noise:
            base = base + rng.normal(0, noise, (h, w, 1))
        out[t] = np.clip(base, 0, 255)
    return out


def decode_image(data: bytes) -> Image.Image:
    im = Image.open(BytesIO(data))
    im.load()
    return im


# Images ---------------------------------------------------------------------------------------


def test_image_within_budget_stays_png() -> None:
    im = Image.fromarray(gradient_frames(1, 64, 96)[0])
    out = encode_image(im, max_bytes=10 << 20)
    assert (out.mime, out.ext, out.attempts, out.note) == ("image/png", "png", 1, "")
    decoded = decode_image(out.data)
    assert decoded.format == "PNG"
    assert decoded.size == (96, 64) == (out.width, out.height)
    assert np.array_equal(np.asarray(decoded.convert("RGB")), np.asarray(im))


def test_image_over_budget_becomes_jpeg_that_fits() -> None:
    im = Image.fromarray(gradient_frames(1, 256, 256, noise=20)[0])
    png_size = len(encode_image(im, max_bytes=10 << 20).data)
    budget = png_size // 3
    out = encode_image(im, max_bytes=budget)
    assert len(out.data) <= budget
    assert out.mime == "image/jpeg" and out.ext == "jpg"
    assert out.attempts >= 2 and out.quality is not None
    decoded = decode_image(out.data)
    assert decoded.format == "JPEG" and decoded.size == (256, 256)


def test_tight_image_budget_downscales_and_fits() -> None:
    im = Image.fromarray(gradient_frames(1, 256, 256, noise=40)[0])
    out = encode_image(im, max_bytes=6_000)
    assert len(out.data) <= 6_000
    assert out.width < 256 and out.height < 256
    assert "downscaled" in out.note
    assert decode_image(out.data).size == (out.width, out.height)


def test_transparent_image_jpeg_is_on_white() -> None:
    rgba = np.zeros((128, 128, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(1).integers(0, 255, (128, 128, 3))
    rgba[:64, :, 3] = 255  # top half opaque noise, bottom half fully transparent
    out = encode_image(Image.fromarray(rgba, "RGBA"), max_bytes=20_000)
    assert out.mime == "image/jpeg"
    bottom = np.asarray(decode_image(out.data).convert("RGB"))[-8:]
    assert bottom.min() > 230


def test_impossible_image_budget_is_an_error() -> None:
    im = Image.fromarray(gradient_frames(1, 64, 64, noise=30)[0])
    with pytest.raises(ValueError, match="cannot fit"):
        encode_image(im, max_bytes=200)


# Videos ---------------------------------------------------------------------------------------


def test_video_is_h264_yuv420p_faststart_and_decodes() -> None:
    frames = gradient_frames(9, 64, 64)
    out = encode_video(frames, fps=8, max_bytes=10 << 20)
    assert (out.mime, out.ext) == ("video/mp4", "mp4")
    assert (out.width, out.height, out.frames, out.fps) == (64, 64, 9, 8)
    assert out.attempts == 1 and out.quality == 18 and out.note == ""
    info = probe_video(out.data)
    assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")
    assert (info.width, info.height, info.frames, info.fps) == (64, 64, 9, 8.0)
    assert info.moov_before_mdat
    decoded = decode_video_frames(out.data)
    assert decoded.shape == (9, 64, 64, 3)
    # CRF 18 is near-transparent on a smooth gradient: a colour-matrix mix-up would not be.
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 4


def test_colours_are_bt709_and_tagged_so(tmp_path: Path) -> None:
    # Players pick the matrix from the tags; a stream converted with one matrix and tagged (or
    # left untagged and guessed) as the other shows this orange visibly shifted.
    frames = np.full((4, 32, 32, 3), (230, 120, 40), np.uint8)
    out = encode_video(frames, fps=4, max_bytes=1 << 20)
    info = probe_video(out.data)
    assert (info.color_range, info.color_matrix) == ("tv", "bt709")
    path = tmp_path / "orange.mp4"
    path.write_bytes(out.data)
    raw = subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
         "-pix_fmt", "yuv420p", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    y, cb, cr = raw[0], raw[32 * 32], raw[32 * 32 + 16 * 16]
    # BT.709 limited range gives Y 134, Cb 82, Cr 180 (BT.601 would give 139, 77, 182).
    assert abs(y - 134) <= 1 and abs(cb - 82) <= 1 and abs(cr - 180) <= 1
    decoded = decode_video_frames(out.data)
    assert np.abs(decoded.reshape(-1, 3).mean(0) - (230, 120, 40)).max() < 4


def test_pil_frames_of_odd_size_lose_one_pixel() -> None:
    frames = [Image.fromarray(f) for f in gradient_frames(5, 33, 65)]
    out = encode_video(frames, fps=23.976, max_bytes=1 << 20)
    info = probe_video(out.data)
    assert (info.width, info.height, info.frames) == (64, 32, 5) == (out.width, out.height, 5)
    assert info.fps == pytest.approx(23.976, abs=0.01)
    assert decode_video_frames(out.data).shape == (5, 32, 64, 3)


def test_tight_video_budget_downscales_and_fits() -> None:
    frames = gradient_frames(16, 128, 128, noise=25)
    budget = 3_000  # CRF 38 alone gets this clip to ~3.5 KB
    out = encode_video(frames, fps=8, max_bytes=budget)
    assert len(out.data) <= budget
    assert out.width < 128 and out.height < 128
    assert "downscaled" in out.note and out.attempts >= 2
    info = probe_video(out.data)
    assert (info.width, info.height, info.frames) == (out.width, out.height, 16)
    assert info.moov_before_mdat
    assert decode_video_frames(out.data).shape == (16, out.height, out.width, 3)


def test_predicted_crf_fits_a_larger_clip_first_time() -> None:
    # Above the probe threshold (256x256x33 pixels x frames) and with a budget that CRF 18
    # overshoots, so the first CRF comes from a probe encode rather than the ladder.
    frames = gradient_frames(33, 256, 256, noise=6)
    full = encode_video(frames, fps=16, max_bytes=1 << 30)
    assert full.quality == 18
    budget = len(full.data) // 4
    out = encode_video(frames, fps=16, max_bytes=budget)
    assert len(out.data) <= budget
    assert out.quality is not None and out.quality > 18
    assert out.attempts == 1
    assert decode_video_frames(out.data).shape == (33, 256, 256, 3)


def test_impossible_video_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        encode_video(gradient_frames(4, 64, 64, noise=30), fps=8, max_bytes=300)


@pytest.mark.parametrize(
    ("frames", "fps", "match"),
    [
        ([], 8.0, "empty"),
        (np.zeros((2, 8, 8, 3), np.float32), 8.0, "uint8"),
        (np.zeros((2, 8, 8, 4), np.uint8), 8.0, r"\(N, H, W, 3\)"),
        ([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 6))], 8.0, "frame 1 is 8x6"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0.0, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), float("nan"), "fps"),
    ],
    ids=["empty", "float", "rgba", "mixed-sizes", "zero-fps", "nan-fps"],
)
def test_bad_frames_are_refused(frames: object, fps: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_video(frames, fps=fps, max_bytes=1 << 20)  # type: ignore[arg-type]


def test_probe_tells_a_file_without_faststart(tmp_path: Path) -> None:
    out = tmp_path / "plain.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=10:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv444p",
         str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    info = probe_video(out.read_bytes())
    assert not info.moov_before_mdat
    assert (info.pix_fmt, info.width, info.height, info.frames) == ("yuv444p", 64, 48, 5)


def test_probe_refuses_non_video() -> None:
    with pytest.raises(ValueError):
        probe_video(b"definitely not an mp4 file")
