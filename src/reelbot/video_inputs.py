"""Input videos from chat: probe a clip's header with ffmpeg, then sample its frames safely.

The video counterpart of ``inputs``: it sits at the bottom layer (ffmpeg through the binary that
imageio-ffmpeg bundles, Pillow; no torch) so that chat adapters can refuse a bad attachment
before a job is queued, and the worker samples the same bytes with the same rules. The header is
read before a single frame is decoded, and the decode is bounded: ffmpeg reads at most the span
the model can use and hands back only the frames asked for, already scaled to the model's size.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from reelbot.errors import InvalidVideo
from reelbot.frames import FrameArray, pipe_frames

__all__ = [
    "AUDIO_NOTE",
    "CONTAINERS",
    "VIDEO_CODECS",
    "ClipInfo",
    "InputVideo",
    "VideoLimits",
    "check_declared_video",
    "load_input_video",
    "probe_clip",
]

CONTAINERS: dict[str, str] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV",
    "matroska,webm": "MKV/WebM",
    "gif": "GIF",
}
"""ffmpeg demuxer names that are accepted, with the words a user knows them by."""

VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "gif"})
"""Video codecs that are decoded; anything else (ProRes RAW, image codecs in MKV …) is refused."""

_IMAGE_DEMUXERS = re.compile(r"_pipe$|^image2$|^apng$")
AUDIO_NOTE = "The sound was dropped: reelbot makes silent videos."
_TIMEOUT_S = 60.0
_WHAT = "Send an MP4, MOV, MKV, WebM or GIF clip"


@dataclass(frozen=True)
class VideoLimits:
    """What an input clip may be: bytes, seconds, frames, frame rate and pixels a frame."""

    max_bytes: int = 20 * 1024 * 1024
    """Telegram's bot download limit (getFile), like input images."""
    max_duration_s: float = 60.0
    max_frames: int = 3600
    """Frames the header declares (duration x frame rate)."""
    max_fps: float = 120.0
    max_side: int = 4096
    max_pixels: int = 3840 * 2160
    min_frames: int = 2

    def what_to_send(self) -> str:
        """The sentence that ends every refusal."""
        return f"{_WHAT} under {_mb(self.max_bytes)} and {self.max_duration_s:g} s."


DEFAULT_LIMITS = VideoLimits()


@dataclass(frozen=True)
class ClipInfo:
    """What a clip's header says, before any frame is decoded."""

    container: str
    """The user's word for it: ``MP4/MOV``, ``MKV/WebM`` or ``GIF``."""
    codec: str
    width: int
    height: int
    """Stored size; ``display_size`` is the upright one."""
    rotation: int
    """Quarter turns the player applies (0, 90, 180 or 270)."""
    duration_s: float
    fps: float
    frames: int
    """Declared: duration x frame rate."""
    has_audio: bool
    nbytes: int

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as the clip plays (and as ``load_input_video`` decodes it)."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


@dataclass
class InputVideo:
    """Frames sampled from a clip to a model's grid, with what the user should be told."""

    frames: FrameArray
    """One array, in a temporary file when large (``reelbot.frames``)."""
    fps: float
    info: ClipInfo
    note: str
    """Empty, or sentences for the user: the sound was dropped, only the first seconds were used."""


def _mb(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    value = n / (1024 * 1024)
    return f"{value:.0f} MB" if value >= 10 or value == int(value) else f"{value:.1f} MB"


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.3g} s"


def check_declared_video(
    size: int | None, mime: str | None, *, limits: VideoLimits = DEFAULT_LIMITS
) -> None:
    """Refuse a clip from what the platform says of it (size, MIME type) before downloading it."""
    mime = (mime or "").split(";")[0].strip().lower()
    if mime and not (mime.startswith("video/") or mime == "image/gif"):
        raise InvalidVideo(f"That file is not a video ({mime}). {limits.what_to_send()}")
    if size is not None and size > limits.max_bytes:
        raise InvalidVideo(
            f"The video is {_mb(size)}, over the {_mb(limits.max_bytes)} limit. "
            f"{limits.what_to_send()}"
        )


@contextmanager
def _on_disk(data: bytes) -> Iterator[Path]:
    """The bytes as a file: MP4 demuxing seeks (the index may sit at the end), a pipe cannot."""
    with tempfile.TemporaryDirectory(prefix="reelbot-video-") as tmp:
        path = Path(tmp) / "input"
        path.write_bytes(data)
        yield path


_INPUT_RE = re.compile(r"^Input #0, (\S+), from", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"^\s*Stream #0:\d+\S*: Video: (\w+)(.*)$", re.M)
_SIZE_RE = re.compile(r"(?:^|[ ,])(\d{1,6})x(\d{1,6})(?=[ ,\[]|$)")
_RATE_RE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_ROTATION_RE = re.compile(r"rotation of (-?[\d.]+) degrees")


def _header(path: Path) -> str:
    """ffmpeg's description of the input (``-i`` with no output reads the header only)."""
    try:
        proc = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            capture_output=True, text=True, errors="replace", timeout=_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise InvalidVideo("The video could not be read in time; it may be damaged.") from exc
    return proc.stderr


def _parse(log: str, nbytes: int, limits: VideoLimits) -> ClipInfo:
    """The checks on ffmpeg's header description, in the order a user can act on."""
    what = limits.what_to_send()
    found = _INPUT_RE.search(log)
    if found is None:
        if "moov atom not found" in log or "End of file" in log:
            raise InvalidVideo(f"The video file is incomplete (it ends early). {what}")
        raise InvalidVideo(f"That file is not a video reelbot can read. {what}")
    demuxer = found.group(1)
    if _IMAGE_DEMUXERS.search(demuxer):
        kind = demuxer.removesuffix("_pipe").upper()
        raise InvalidVideo(f"That file is a still image ({kind}), not a video. {what}")
    container = CONTAINERS.get(demuxer)
    if container is None:
        raise InvalidVideo(f"Videos in the {demuxer.split(',')[0]} format are not accepted. {what}")
    streams = [m for m in _VIDEO_RE.finditer(log) if "attached pic" not in m.group(2)]
    if not streams:
        raise InvalidVideo(f"That file holds no video picture. {what}")
    codec, rest = streams[0].group(1), streams[0].group(2)
    if codec not in VIDEO_CODECS:
        raise InvalidVideo(f"Video coded as {codec} is not accepted. {what}")
    size = _SIZE_RE.search(rest)
    if size is None:
        raise InvalidVideo(f"The video is damaged: it does not say its picture size. {what}")
    width, height = int(size.group(1)), int(size.group(2))
    if width < 1 or height < 1:
        raise InvalidVideo(f"The video has no pixels ({width}x{height}). {what}")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise InvalidVideo(
            f"The video is {width}x{height}, over the {limits.max_side}-pixel limit "
            f"({limits.max_pixels / 1e6:.1f} megapixels a frame). "
            "Send a smaller clip; 1080p is plenty."
        )
    rates = {unit: float(v) * (1000 if k else 1) for v, k, unit in _RATE_RE.findall(rest)}
    fps = rates.get("fps") or rates.get("tbr") or 0.0
    duration = _DURATION_RE.search(log)
    seconds = 0.0
    if duration is not None:
        h, m, s = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(s)
    if seconds > limits.max_duration_s:
        raise InvalidVideo(
            f"The video is {_duration(seconds)} long, over the {limits.max_duration_s:g} s limit. "
            "Trim it to the part you want and send that."
        )
    frames = round(seconds * fps)
    if fps > limits.max_fps or frames > limits.max_frames:
        raise InvalidVideo(
            f"The video declares {frames} frames at {fps:g} frames a second, over the "
            f"{limits.max_frames} frame limit. {what}"
        )
    if frames < limits.min_frames:
        raise InvalidVideo(
            "The video has a single frame, so there is no motion to work from. Send a clip, "
            "or send the picture as an image."
        )
    rotation = _ROTATION_RE.search(log)
    turns = round(float(rotation.group(1)) / 90) % 4 * 90 if rotation else 0
    audio = re.search(r"^\s*Stream #0:\d+\S*: Audio:", log, re.M) is not None
    return ClipInfo(
        container=container,
        codec=codec,
        width=width,
        height=height,
        rotation=turns,
        duration_s=seconds,
        fps=fps,
        frames=frames,
        has_audio=audio,
        nbytes=nbytes,
    )


def _check_bytes(data: bytes, limits: VideoLimits) -> None:
    if not data:
        raise InvalidVideo(f"The video is empty (0 bytes). {limits.what_to_send()}")
    if len(data) > limits.max_bytes:
        raise InvalidVideo(
            f"The video is {_mb(len(data))}, over the {_mb(limits.max_bytes)} limit. "
            f"{limits.what_to_send()}"
        )


def probe_clip(data: bytes, *, limits: VideoLimits = DEFAULT_LIMITS) -> ClipInfo:
    """Check a clip from its header alone: bytes, container, codec, size, duration and frames.

    Raises:
        InvalidVideo: empty, too big, too long, too many frames or pixels, not a video (a
            renamed image), a codec or container not on the list, or unreadable; one sentence
            says what to send instead.
    """
    _check_bytes(data, limits)
    with _on_disk(data) as path:
        return _parse(_header(path), len(data), limits)


def load_input_video(
    data: bytes,
    *,
    frames: int,
    fps: float,
    width: int,
    height: int,
    limits: VideoLimits = DEFAULT_LIMITS,
) -> InputVideo:
    """Probe a clip, then decode ``frames`` frames at ``fps`` from its start, cropped to the
    aspect of ``width`` x ``height`` and scaled to it (a model's grid and size).

    ffmpeg reads at most ``frames / fps`` seconds of input and resamples time with its ``fps``
    filter (dropping or repeating frames), so a clip shorter than that ends on its last frame,
    repeated. Memory is bounded by ``frames x width x height x 3`` bytes here, read straight
    from ffmpeg into one array (a temporary file's pages when large), and by one decoded frame
    of at most ``limits.max_pixels`` in ffmpeg.

    Raises:
        InvalidVideo: as ``probe_clip``, or when not even one frame decodes.
        ValueError: ``frames``, ``fps`` or the size are not positive.
    """
    if frames < 1 or fps <= 0 or width < 1 or height < 1:
        raise ValueError(f"bad sampling grid: {frames} frames at {fps} fps, {width}x{height}")
    _check_bytes(data, limits)
    span = frames / fps
    with _on_disk(data) as path:
        info = _parse(_header(path), len(data), limits)
        vf = (
            f"fps={fps:g},scale={width}:{height}:force_original_aspect_ratio=increase"
            f":flags=area,crop={width}:{height},setsar=1,format=rgb24"
        )
        out = FrameArray.empty(frames, width, height)
        run = pipe_frames(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
             "-threads", "2", "-t", f"{span + 1 / fps:.6f}", "-i", str(path),
             "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf, "-frames:v", str(frames),
             "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
            out, timeout_s=_TIMEOUT_S,
        )  # fmt: skip
    if run.timed_out:
        raise InvalidVideo("The video took too long to decode; it may be damaged.")
    if run.frames == 0:
        raise InvalidVideo(f"The video is damaged: no frame of it decodes. {limits.what_to_send()}")
    # A clip shorter than the span ends on its last frame, repeated (pipe_frames fills it).
    notes = []
    if info.has_audio:
        notes.append(AUDIO_NOTE)
    if info.duration_s > span + 0.5 / fps:
        notes.append(f"Only the first {span:.3g} s of the {info.duration_s:.3g} s clip were used.")
    return InputVideo(frames=out, fps=fps, info=info, note=" ".join(notes))
