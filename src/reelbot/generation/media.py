"""Encode results to fit a platform's upload limit: PNG or JPEG images, H.264 MP4 videos.

Videos go through the ffmpeg binary that imageio-ffmpeg bundles: raw RGB frames are piped to
libx264 (yuv420p, BT.709, ``+faststart``), first at a CRF predicted from the byte budget, then
up a CRF ladder, then at smaller sizes, until the file fits.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from pathlib import Path
from typing import Final

import imageio_ffmpeg
import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = [
    "CRF_LADDER",
    "JPEG_LADDER",
    "EncodedMedia",
    "VideoInfo",
    "decode_video_frames",
    "encode_image",
    "encode_video",
    "probe_video",
]

JPEG_LADDER: Final = (95, 90, 85, 75, 60)
CRF_LADDER: Final = (18, 23, 28, 33, 38)
X264_PRESET: Final = "medium"
DOWNSCALE_STEP: Final = 0.75
MIN_SIDE: Final = 16
"""Below this many pixels on the short side a result is useless; the budget is refused."""

# rgb24 -> yuv420p with the BT.709 matrix, and the stream tagged to match: untagged streams
# are shown with BT.601 by some players and BT.709 by others, which shifts colours.
_COLOR_ARGS: Final = (
    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
    "-color_range", "tv",
)  # fmt: skip
_SCALE_COLOR: Final = "out_color_matrix=bt709:out_range=tv"
_FFMPEG_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class EncodedMedia:
    """An encoded result ready to upload, with what it took to fit the budget."""

    data: bytes
    mime: str
    ext: str
    """File extension without the dot: ``png``, ``jpg`` or ``mp4``."""
    width: int
    height: int
    frames: int
    fps: float | None
    attempts: int
    """How many encodes it took to fit the budget (1 when the first one fitted)."""
    note: str = ""
    """Empty, or what was given up to fit, e.g. ``downscaled to 640x360 to fit 8 MB``."""
    quality: int | None = None
    """JPEG quality or x264 CRF of the final encode; None for a lossless PNG."""


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg and the MP4 box layout say about a video file."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    fps: float
    moov_before_mdat: bool
    """True when the index comes first (``+faststart``), so playback starts before download."""


def _mb(n: float) -> str:
    """Bytes as the "8 MB" that chat platforms print (binary megabytes)."""
    value = n / (1024 * 1024)
    return f"{value:.0f} MB" if value >= 10 or value == int(value) else f"{value:.1f} MB"


# Images ---------------------------------------------------------------------------------------


def encode_image(image: Image.Image, *, max_bytes: int) -> EncodedMedia:
    """Encode as PNG, or as JPEG down a quality ladder and then smaller, to fit ``max_bytes``.

    Raises:
        ValueError: no encode at least ``MIN_SIDE`` pixels on its short side fits the budget.
    """
    attempts = 1
    png = _save(image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGB"), "PNG")
    if len(png) <= max_bytes:
        return EncodedMedia(png, "image/png", "png", *image.size, 1, None, attempts)
    rgb = _flatten(image)
    size = 0
    for quality in JPEG_LADDER:
        attempts += 1
        jpeg = _save(rgb, "JPEG", quality=quality)
        size = len(jpeg)
        if size <= max_bytes:
            note = f"saved as JPEG quality {quality} to fit {_mb(max_bytes)}"
            return EncodedMedia(
                jpeg, "image/jpeg", "jpg", *rgb.size, 1, None, attempts, note, quality
            )
    quality = JPEG_LADDER[-1]
    scale = 1.0
    while True:
        # Bytes scale roughly with pixels; aim a little under and never step by less than 0.75.
        scale *= min(DOWNSCALE_STEP, math.sqrt(max_bytes / size) * 0.95)
        w, h = round(rgb.size[0] * scale), round(rgb.size[1] * scale)
        if min(w, h) < MIN_SIDE:
            raise ValueError(
                f"cannot fit a {rgb.size[0]}x{rgb.size[1]} image into {max_bytes} bytes"
            )
        attempts += 1
        small = rgb.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
        jpeg = _save(small, "JPEG", quality=quality)
        size = len(jpeg)
        if size <= max_bytes:
            note = f"downscaled to {w}x{h} to fit {_mb(max_bytes)}"
            return EncodedMedia(jpeg, "image/jpeg", "jpg", w, h, 1, None, attempts, note, quality)


def _save(image: Image.Image, fmt: str, **params: int) -> bytes:
    buf = BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG, with any transparency composited on white."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.alpha_composite(rgba)
        return out.convert("RGB")
    return image.convert("RGB")


# Videos ---------------------------------------------------------------------------------------

Frames = Sequence[Image.Image] | NDArray[np.uint8]


@dataclass(frozen=True)
class _Clip:
    """Validated frames: their count and size, and a way to stream them as raw RGB."""

    frames: Frames
    count: int
    width: int
    height: int

    def chunks(self) -> Iterator[bytes | memoryview]:
        if isinstance(self.frames, np.ndarray):
            # Whole frames straight from the array's buffer; no copy when it is contiguous.
            arr = np.ascontiguousarray(self.frames)
            per = max(1, (8 << 20) // (self.width * self.height * 3))
            for i in range(0, self.count, per):
                yield memoryview(arr[i : i + per]).cast("B")
        else:
            for im in self.frames:
                yield (im if im.mode == "RGB" else im.convert("RGB")).tobytes()

    def sample(self, n: int) -> NDArray[np.uint8]:
        """Up to ``n`` evenly spaced frames as a (n, H, W, 3) array, for the size prediction."""
        idx = sorted({round(i * (self.count - 1) / max(1, n - 1)) for i in range(n)})
        if isinstance(self.frames, np.ndarray):
            return self.frames[idx]
        return np.stack([np.asarray(self.frames[i].convert("RGB")) for i in idx])


def _clip(frames: Frames) -> _Clip:
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(
                f"frames must be a uint8 array shaped (N, H, W, 3), got {frames.dtype} "
                f"{frames.shape}; convert floats with (x * 255).round().astype(np.uint8)"
            )
        n, h, w, _ = frames.shape
    else:
        n = len(frames)
        if n == 0:
            raise ValueError("frames is empty")
        w, h = frames[0].size
        for i, im in enumerate(frames):
            if im.size != (w, h):
                raise ValueError(f"frame {i} is {im.size[0]}x{im.size[1]}, frame 0 is {w}x{h}")
    if n == 0 or w == 0 or h == 0:
        raise ValueError(f"frames has no pixels: {n} frames of {w}x{h}")
    return _Clip(frames, n, w, h)


def _even_size(w: int, h: int, scale: float) -> tuple[int, int]:
    """The output size for ``scale``; yuv420p needs even sides, so odd ones lose a pixel."""

    def side(v: int) -> int:
        s = round(v * scale) if scale < 1 else v
        return max(2, s - s % 2)

    return side(w), side(h)


def _complexity(clip: _Clip) -> float:
    """Mean spatial plus temporal luma activity of a few frames, a cheap stand-in for entropy."""
    sample = clip.sample(6).astype(np.int16)
    # Every other pixel is plenty for a mean and halves the cost on large frames.
    luma = (sample[:, ::2, ::2, 0] * 2 + sample[:, ::2, ::2, 1] * 5 + sample[:, ::2, ::2, 2]) >> 3
    spatial = 0.0
    if luma.shape[2] > 1:
        spatial += float(np.abs(np.diff(luma, axis=2)).mean())
    if luma.shape[1] > 1:
        spatial += float(np.abs(np.diff(luma, axis=1)).mean())
    temporal = float(np.abs(np.diff(luma, axis=0)).mean()) if luma.shape[0] > 1 else 0.0
    return spatial + temporal


def predict_bytes(width: int, height: int, frames: int, complexity: float, crf: int) -> float:
    """A deliberately pessimistic size estimate for an encode, from pixels and activity.

    x264's size roughly halves every 6 CRF; bits per pixel at CRF 18 grow with activity.
    Fitted on smooth gradients, moving shapes and noisy frames (see ``bench/encode.py``).
    """
    bpp18 = 0.02 + 0.06 * complexity
    bits = bpp18 * width * height * frames * 2.0 ** (-(crf - 18) / 6)
    return bits / 8 + 1500 + 40 * frames


def _first_crf(width: int, height: int, frames: int, complexity: float, max_bytes: int) -> int:
    for crf in CRF_LADDER:
        if predict_bytes(width, height, frames, complexity, crf) <= max_bytes:
            return crf
    return CRF_LADDER[-1]


def encode_video(
    frames: Sequence[Image.Image] | NDArray[np.uint8], *, fps: float, max_bytes: int
) -> EncodedMedia:
    """Encode frames as an H.264 MP4 (yuv420p, faststart) no larger than ``max_bytes``.

    Args:
        frames: PIL images of one size, or a uint8 array shaped (N, H, W, 3).
        fps: frames per second.
        max_bytes: the upload limit to fit.

    Raises:
        ValueError: bad frames or fps, or no encode at least ``MIN_SIDE`` pixels on its short
            side fits the budget.
        RuntimeError: ffmpeg failed; its error output is in the message.
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    clip = _clip(frames)
    crf = _first_crf(clip.width, clip.height, clip.count, _complexity(clip), max_bytes)
    scale = 1.0
    attempts = 0
    while True:
        w, h = _even_size(clip.width, clip.height, scale)
        if min(w, h) < min(MIN_SIDE, clip.width, clip.height) or attempts >= 20:
            raise ValueError(
                f"cannot fit {clip.count} frames of {clip.width}x{clip.height} into "
                f"{max_bytes} bytes"
            )
        attempts += 1
        data = _x264(clip, fps, w, h, crf)
        if len(data) <= max_bytes:
            note = f"downscaled to {w}x{h} to fit {_mb(max_bytes)}" if scale < 1 else ""
            return EncodedMedia(
                data, "video/mp4", "mp4", w, h, clip.count, fps, attempts, note, crf
            )
        # Jump straight to the rung that the measured overshoot calls for (size halves every
        # 6 CRF), rather than walking every rung; past the last rung, shrink the frame.
        needed = crf + 6 * math.log2(len(data) / max_bytes) + 1
        higher = [c for c in CRF_LADDER if c > crf]
        if higher:
            crf = next((c for c in higher if c >= needed), higher[-1])
        else:
            scale *= min(DOWNSCALE_STEP, math.sqrt(max_bytes / len(data)) * 0.95)


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or ``IMAGEIO_FFMPEG_EXE``)."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def x264_args(
    width: int, height: int, fps: float, out_w: int, out_h: int, crf: int, out: str
) -> list[str]:
    """The ffmpeg command line that encodes raw RGB frames from stdin into ``out``."""
    rate = Fraction(fps).limit_denominator(1001)
    if (out_w, out_h) == (width, height):
        vf = f"scale={_SCALE_COLOR}"
    elif 0 <= width - out_w <= 1 and 0 <= height - out_h <= 1:
        vf = f"crop={out_w}:{out_h}:0:0,scale={_SCALE_COLOR}"
    else:
        vf = f"scale={out_w}:{out_h}:flags=lanczos:{_SCALE_COLOR}"
    # fmt: off
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
        "-an", "-vf", vf, "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(crf),
        "-pix_fmt", "yuv420p", *_COLOR_ARGS, "-movflags", "+faststart", out,
    ]
    # fmt: on


def _x264(clip: _Clip, fps: float, out_w: int, out_h: int, crf: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="reelbot-enc-") as tmp:
        # +faststart rewrites the file to move the index to the front: it needs a seekable
        # output, so ffmpeg writes a file rather than a pipe.
        out = Path(tmp) / "out.mp4"
        errlog = Path(tmp) / "stderr.txt"
        args = x264_args(clip.width, clip.height, fps, out_w, out_h, crf, str(out))
        # stderr goes to a file so that a chatty ffmpeg can never block on a full pipe while
        # we block writing its stdin.
        with errlog.open("wb") as err:
            proc = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
            )
            assert proc.stdin is not None
            try:
                for chunk in clip.chunks():
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg exited early; its exit status and log say why
            finally:
                try:
                    rc = proc.wait(timeout=_FFMPEG_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise
        if rc != 0:
            log = errlog.read_text(errors="replace").strip()[-2000:]
            raise RuntimeError(f"ffmpeg exited with status {rc}: {log}")
        return out.read_bytes()


# Probing and decoding -------------------------------------------------------------------------

_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+)[^,]*, (\w+)")
_SIZE_RE = re.compile(r", (\d{2,5})x(\d{2,5})")
_FPS_RE = re.compile(r", ([\d.]+)(k?) (?:fps|tbr)")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")


def _top_level_boxes(data: bytes) -> list[str]:
    """Types of the top-level ISO-BMFF boxes in file order."""
    boxes: list[str] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        header = 8
        if size == 1:
            if pos + 16 > len(data):
                break
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            raise ValueError(f"broken MP4 box {kind!r} at byte {pos}")
        boxes.append(kind)
        pos += size
    return boxes


def probe_video(data: bytes) -> VideoInfo:
    """Read codec, pixel format, size, frame count and fps with ffmpeg, and the box order.

    Raises:
        ValueError: the data is not a video that ffmpeg can read.
    """
    boxes = _top_level_boxes(data)
    with tempfile.TemporaryDirectory(prefix="reelbot-probe-") as tmp:
        path = Path(tmp) / "in.mp4"
        path.write_bytes(data)
        # Stream copy to the null muxer counts packets without decoding a single frame.
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
             "-c", "copy", "-f", "null", "-"],
            capture_output=True, text=True, timeout=_FFMPEG_TIMEOUT_S, check=False,
        )  # fmt: skip
    log = proc.stderr
    stream = _STREAM_RE.search(log)
    if proc.returncode != 0 or stream is None:
        raise ValueError(f"not a readable video: {log.strip()[-500:]}")
    line = log[stream.start() : log.find("\n", stream.start())]
    size = _SIZE_RE.search(line)
    fps = _FPS_RE.search(line)
    frames = _FRAME_RE.findall(log)
    if size is None or fps is None or not frames:
        raise ValueError(f"cannot parse ffmpeg's description of the video: {line.strip()}")
    moov = boxes.index("moov") if "moov" in boxes else None
    mdat = boxes.index("mdat") if "mdat" in boxes else None
    return VideoInfo(
        codec=stream.group(1),
        pix_fmt=stream.group(2),
        width=int(size.group(1)),
        height=int(size.group(2)),
        frames=int(frames[-1]),
        fps=float(fps.group(1)) * (1000 if fps.group(2) else 1),
        moov_before_mdat=moov is not None and mdat is not None and moov < mdat,
    )


def decode_video_frames(data: bytes) -> NDArray[np.uint8]:
    """Decode every frame of a video to a uint8 RGB array shaped (N, H, W, 3)."""
    info = probe_video(data)
    with tempfile.TemporaryDirectory(prefix="reelbot-decode-") as tmp:
        path = Path(tmp) / "in.mp4"
        path.write_bytes(data)
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path),
             "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
            capture_output=True, timeout=_FFMPEG_TIMEOUT_S, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise ValueError(f"cannot decode video: {proc.stderr.decode(errors='replace')[-500:]}")
    per = info.width * info.height * 3
    if len(proc.stdout) % per:
        raise ValueError(
            f"decoded {len(proc.stdout)} bytes, not whole {info.width}x{info.height} frames"
        )
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, info.height, info.width, 3)
