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
from dataclasses import dataclass, field
from fractions import Fraction
from io import BytesIO
from pathlib import Path
from typing import Final

import imageio_ffmpeg
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from reelbot.frames import as_array

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
# are shown with BT.601 by some players and BT.709 by others, which shifts colours. ffmpeg 7+
# converts by the frames' tags (set by setparams); older builds need the explicit matrix.
_SCALE_COLOR: Final = "out_color_matrix=bt709:out_range=tv"
_TAG_BT709: Final = (
    "format=yuv420p,setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709"
)
_FFMPEG_TIMEOUT_S: Final = 600.0
_X264_KEYINT: Final = 250
_PROBE_FRAMES: Final = 8
_PROBE_SHARE: Final = 8
"""A probe encode gets 1/8 of the clip's pixels x frames."""
_MP4_OVERHEAD: Final = 1500
"""Bytes of an MP4 that do not scale with pixels: boxes, SPS/PPS, x264's settings string."""
_SAFETY: Final = 1.08
"""Head-room on a measured (probed) size before it is trusted to fit."""
_SAFETY_INTERPOLATED: Final = 1.25
"""Head-room on a size interpolated between two probes."""
_PROBE_MIN_PIXELS: Final = 2_000_000
"""Clips below this many pixels x frames skip the probe encode."""


@dataclass(frozen=True)
class EncodedMedia:
    """An encoded result ready to upload, with what it took to fit the budget."""

    data: bytes = field(repr=False)
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
    color_range: str = ""
    """``tv`` (limited) or ``pc`` (full); empty when the stream does not say."""
    color_matrix: str = ""
    """e.g. ``bt709``; empty when the stream does not say."""


def _mb(n: float) -> str:
    """Bytes as the "8 MB" that chat platforms print (binary megabytes)."""
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
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
            # Whole frames straight from the array's buffer: no copy when it is contiguous, and
            # only ~8 MiB at a time when it is a view (a crop).
            per = max(1, (8 << 20) // (self.width * self.height * 3))
            for i in range(0, self.count, per):
                yield np.ascontiguousarray(self.frames[i : i + per]).data.cast("B")
        else:
            for im in self.frames:
                yield (im if im.mode == "RGB" else im.convert("RGB")).tobytes()

    def take(self, idx: list[int]) -> NDArray[np.uint8]:
        """The frames at ``idx`` as a (len(idx), H, W, 3) array."""
        if isinstance(self.frames, np.ndarray):
            return self.frames[idx]
        return np.stack([np.asarray(self.frames[i].convert("RGB")) for i in idx])

    def crop(self, start: int, count: int, x: int, y: int, w: int, h: int) -> _Clip:
        """``count`` frames from ``start``, cut to the ``w`` x ``h`` box at ``x``, ``y``."""
        if isinstance(self.frames, np.ndarray):
            part = self.frames[start : start + count, y : y + h, x : x + w]
            return _Clip(part, count, w, h)
        box = (x, y, x + w, y + h)
        return _Clip([im.crop(box) for im in self.frames[start : start + count]], count, w, h)


def _clip(frames: Frames) -> _Clip:
    array = as_array(frames)  # a FrameArray is read in place, not one image at a time
    if array is not None:
        frames = array
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


def _activity(clip: _Clip) -> tuple[float, float]:
    """Mean absolute luma difference between neighbouring pixels, and neighbouring frames."""
    last = clip.count - 1
    starts = sorted({round(i * max(0, last - 1) / 2) for i in range(3)})
    first = _luma(clip.take(starts))
    spatial = 0.0
    if clip.width > 1:
        spatial += float(np.abs(np.diff(first, axis=2)).mean())
    if clip.height > 1:
        spatial += float(np.abs(np.diff(first, axis=1)).mean())
    if last == 0:
        return spatial, 0.0
    second = _luma(clip.take([s + 1 for s in starts]))
    return spatial, float(np.abs(second - first).mean())


def _luma(rgb: NDArray[np.uint8]) -> NDArray[np.int16]:
    a = rgb.astype(np.int16)
    luma: NDArray[np.int16] = (a[..., 0] * 2 + a[..., 1] * 5 + a[..., 2]) >> 3
    return luma


def ceiling_bytes(width: int, height: int, frames: int, spatial: float, temporal: float) -> float:
    """A pessimistic size of a CRF-18 encode from pixel and frame activity (no encode needed).

    Fitted so that it stays above every clip in ``bench/encode.py``'s set, sensor-like noise
    included: noise is what makes CRF 18 expensive, and activity alone cannot tell it from
    detail, so this overshoots detailed clean video by up to 10x.
    """
    bpp = 0.1 + 0.12 * spatial + 0.15 * temporal
    return bpp * width * height * frames / 8 + _MP4_OVERHEAD + 50 * frames


def _rung_for(size18: float, max_bytes: int) -> int:
    """The best rung whose size, halving every 6 CRF from ``size18``, fits ``max_bytes``."""
    for crf in CRF_LADDER:
        if size18 * 2.0 ** (-(crf - CRF_LADDER[0]) / 6) * _SAFETY <= max_bytes:
            return crf
    return CRF_LADDER[-1]


def _probe_bytes(clip: _Clip, fps: float, crf: int) -> float:
    """Estimate a full encode's size from a centre crop of the middle frames (1/8 of the work)."""
    # Frames are kept and space is cut: a clip of a few frames misjudges x264's keyframe and
    # lookahead costs more than a crop misjudges detail (checked in bench/encode.py).
    k = min(clip.count, max(_PROBE_FRAMES, clip.count // 4))
    side = min(1.0, math.sqrt(clip.count / (_PROBE_SHARE * k)))
    pw, ph = (max(min(v, 64), round(v * side)) for v in (clip.width, clip.height))
    pw, ph = max(2, pw - pw % 2), max(2, ph - ph % 2)
    sub = clip.crop(
        (clip.count - k) // 2, k, (clip.width - pw) // 2, (clip.height - ph) // 2, pw, ph
    )
    frames = _sample_sizes(_x264(sub, fps, pw, ph, crf))
    # The first frame is a keyframe and costs several P/B frames; the full clip has one per
    # x264 GOP (250 frames), so scale keyframes and the other frames separately.
    key = frames[0]
    rest = sum(frames[1:]) / max(1, len(frames) - 1)
    keyframes = math.ceil(clip.count / _X264_KEYINT)
    area = (clip.width * clip.height) / (pw * ph)
    return (key * keyframes + rest * (clip.count - keyframes)) * area + _MP4_OVERHEAD


def _first_crf(clip: _Clip, fps: float, max_bytes: int) -> int:
    """Predict the CRF rung that fits, so that most jobs need one full encode.

    Pixel and frame activity give a cheap ceiling that settles most jobs. Otherwise a probe
    encode (1/8 of the pixels x frames) at CRF 18 and a second at the rung that the usual
    halving every 6 CRF suggests measure this clip's own curve (grain makes it far steeper,
    detail far flatter), and the best rung on that curve is chosen.
    """
    first = CRF_LADDER[0]
    spatial, temporal = _activity(clip)
    ceiling = ceiling_bytes(clip.width, clip.height, clip.count, spatial, temporal)
    if ceiling * _SAFETY <= max_bytes:
        return first
    if clip.width * clip.height * clip.count < _PROBE_MIN_PIXELS:
        # Small clips encode in milliseconds, so a miss costs less than a probe: guess a
        # typical size rather than the ceiling, which is meant to overshoot.
        return _rung_for(ceiling / 8, max_bytes)
    est18 = _probe_bytes(clip, fps, first)
    if est18 * _SAFETY <= max_bytes:
        return first
    crf = _rung_for(est18, max_bytes)
    if crf == first:  # within the safety margin of fitting at 18: one rung up
        crf = CRF_LADDER[1]
    est = _probe_bytes(clip, fps, crf)
    per_crf = (est / est18) ** (1 / (crf - first))
    for rung in CRF_LADDER[1:]:
        guess = est18 * per_crf ** (rung - first)
        safety = _SAFETY if rung == crf else _SAFETY_INTERPOLATED
        if guess * safety <= max_bytes:
            return rung
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
    crf = _first_crf(clip, fps, max_bytes)
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
        vf = f"scale={_SCALE_COLOR},{_TAG_BT709}"
    elif 0 <= width - out_w <= 1 and 0 <= height - out_h <= 1:
        vf = f"crop={out_w}:{out_h}:0:0,scale={_SCALE_COLOR},{_TAG_BT709}"
    else:
        vf = f"scale={out_w}:{out_h}:flags=lanczos:{_SCALE_COLOR},{_TAG_BT709}"
    # fmt: off
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
        "-an", "-vf", vf, "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", out,
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

_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+)[^,]*, (\w+)(?:\(([^)]*)\))?")
_SIZE_RE = re.compile(r", (\d{2,5})x(\d{2,5})")
_FPS_RE = re.compile(r", ([\d.]+)(k?) (?:fps|tbr)")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """Walk the ISO-BMFF boxes in ``data[start:end]``: (type, payload start, box end)."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            raise ValueError(f"broken MP4 box {kind!r} at byte {pos}")
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _top_level_boxes(data: bytes) -> list[str]:
    """Types of the top-level boxes in file order."""
    return [kind for kind, _, _ in _boxes(data)]


def _sample_sizes(data: bytes) -> list[int]:
    """Byte size of each sample (frame) of the first track, in decode order, from ``stsz``."""
    start, end = 0, len(data)
    for path_kind in ("moov", "trak", "mdia", "minf", "stbl", "stsz"):
        found = next(((s, e) for k, s, e in _boxes(data, start, end) if k == path_kind), None)
        if found is None:
            raise ValueError(f"no {path_kind!r} box in the MP4")
        start, end = found
    # stsz payload: version+flags, a fixed size (0 when sizes vary), the count, the sizes.
    fixed = int.from_bytes(data[start + 4 : start + 8], "big")
    count = int.from_bytes(data[start + 8 : start + 12], "big")
    if fixed:
        return [fixed] * count
    table = data[start + 12 : start + 12 + 4 * count]
    return [int.from_bytes(table[i : i + 4], "big") for i in range(0, len(table), 4)]


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
    tags = [t.strip() for t in (stream.group(3) or "").split(",")]
    color_range = tags.pop(0) if tags and tags[0] in ("tv", "pc") else ""
    matrix = (
        tags[0].split("/")[0] if tags and tags[0].startswith(("bt", "smpte", "unknown")) else ""
    )
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
        color_range=color_range,
        color_matrix=matrix,
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
