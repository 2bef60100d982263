"""Hostile input videos: each is refused with one sentence, or sampled within a memory bound.

The corpus is made here with the bundled ffmpeg (lavfi sources, a second or less of encoding
each) and by cutting or patching bytes; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image

from reelbot.errors import InvalidVideo
from reelbot.video_inputs import (
    AUDIO_NOTE,
    check_declared_video,
    load_input_video,
    probe_clip,
)


def _ffmpeg(out: Path, *args: str) -> bytes:
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args, str(out)],
        check=True,
        timeout=60,
    )
    return out.read_bytes()


def _lavfi(spec: str) -> list[str]:
    return ["-f", "lavfi", "-i", spec]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("videos")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    clips: dict[str, bytes] = {}
    clips["mp4"] = _ffmpeg(
        d / "a.mp4",
        *_lavfi("testsrc=size=96x64:rate=12:duration=2"),
        *_lavfi("sine=duration=2"),
        *x264,
        "-shortest",
    )
    clips["mkv"] = _ffmpeg(d / "a.mkv", *_lavfi("testsrc=size=64x48:rate=8:duration=1"), *x264)
    clips["webm"] = _ffmpeg(
        d / "a.webm", *_lavfi("testsrc=size=48x64:rate=8:duration=1"), "-c:v", "libvpx"
    )
    clips["mov"] = _ffmpeg(d / "a.mov", *_lavfi("testsrc=size=64x64:rate=8:duration=1"), *x264)
    # Ten minutes of 32x24 at 2 fps: a few hundred KB, made in a tenth of a second.
    clips["ten_minutes"] = _ffmpeg(
        d / "long.mp4", *_lavfi("testsrc=size=32x24:rate=2:duration=600"), *x264
    )
    # 5 000 frames declared in half a second (a frame-count bomb of 16x16 frames).
    clips["many_frames"] = _ffmpeg(
        d / "many.mp4", *_lavfi("color=c=red:size=16x16:rate=10000:duration=0.5"), *x264
    )
    clips["huge"] = _ffmpeg(
        d / "huge.mp4", *_lavfi("color=c=red:size=8192x32:rate=1:duration=1"), *x264
    )
    clips["one_frame"] = _ffmpeg(
        d / "one.mp4", *_lavfi("color=c=red:size=64x64:rate=1:duration=1"), *x264
    )
    # The index (moov) is written last without +faststart: cutting the file loses it.
    clips["truncated"] = clips["mp4"][: len(clips["mp4"]) // 2]
    png = BytesIO()
    Image.new("RGB", (40, 30), (200, 0, 0)).save(png, "PNG")
    clips["png_as_mp4"] = png.getvalue()
    clips["empty"] = b""
    frames = [Image.new("RGB", (32, 24), (i * 60, 90, 0)) for i in range(4)]
    gif = BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=125, loop=0)
    clips["gif"] = gif.getvalue()
    # A GIF whose screen descriptor claims 65535x65535 (a decompression bomb's header).
    bomb = bytearray(clips["gif"])
    bomb[6:10] = (65535).to_bytes(2, "little") * 2
    clips["gif_bomb"] = bytes(bomb)
    clips["garbage"] = bytes(range(256)) * 64
    return clips


REFUSED = {
    "empty": "empty",
    "truncated": "incomplete",
    "png_as_mp4": "still image",
    "ten_minutes": "10 minutes long",
    "many_frames": "5000 frames",
    "huge": "8192x32",
    "one_frame": "single frame",
    "gif_bomb": "damaged",
    "garbage": "not a video",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hostile_clips_are_refused_with_one_sentence(corpus: dict[str, bytes], name: str) -> None:
    with pytest.raises(InvalidVideo) as caught:
        probe_clip(corpus[name])
    message = caught.value.user_message
    assert REFUSED[name] in message
    assert "Traceback" not in message and "ffmpeg" not in message
    assert message.endswith(".") and len(message) < 240


@pytest.mark.parametrize(
    ("name", "container", "size"),
    [
        ("mp4", "MP4/MOV", (96, 64)),
        ("mkv", "MKV/WebM", (64, 48)),
        ("webm", "MKV/WebM", (48, 64)),
        ("mov", "MP4/MOV", (64, 64)),
        ("gif", "GIF", (32, 24)),
    ],
)
def test_accepted_containers_sample_to_the_grid(
    corpus: dict[str, bytes], name: str, container: str, size: tuple[int, int]
) -> None:
    info = probe_clip(corpus[name])
    assert (info.container, info.display_size) == (container, size)
    # Wan's grid: 4k+1 frames; at the model's frame rate, cropped to the model's size.
    video = load_input_video(corpus[name], frames=9, fps=8, width=64, height=32)
    assert len(video.frames) == 9
    assert {f.size for f in video.frames} == {(64, 32)}
    assert video.fps == 8


def test_audio_is_dropped_and_said(corpus: dict[str, bytes]) -> None:
    video = load_input_video(corpus["mp4"], frames=5, fps=8, width=32, height=32)
    assert video.info.has_audio
    assert AUDIO_NOTE in video.note
    assert "first" in video.note  # 5 frames at 8 fps use 0.6 s of the 2 s clip


_MEASURE = """
import resource, sys, tracemalloc
from reelbot.video_inputs import VideoLimits, load_input_video
data = open(sys.argv[1], "rb").read()
limits = VideoLimits(max_duration_s=900)
load_input_video(data, frames=2, fps=8, width=64, height=48, limits=limits)  # imports, warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
video = load_input_video(data, frames=17, fps=8, width=640, height=480, limits=limits)
peak = tracemalloc.get_traced_memory()[1]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(len(video.frames), peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, grown)
"""


def test_a_long_clip_decodes_only_the_span_within_a_memory_bound(
    corpus: dict[str, bytes], tmp_path: Path
) -> None:
    """Measured in a process of its own, so the ffmpeg peak is this decode's alone."""
    path = tmp_path / "long.mp4"
    path.write_bytes(corpus["ten_minutes"])
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    frames, peak, child_kb, grown_kb = (int(v) for v in result.stdout.split())
    assert frames == 17
    pixels = 17 * 640 * 480 * 3  # 15.7 MB
    # The frames once, read from ffmpeg's pipe straight into their array, plus the file.
    assert peak < pixels + len(corpus["ten_minutes"]) + 2**20, peak
    # And so the process: ffmpeg's raw output and then a copy as images were twice that.
    assert grown_kb * 1024 < 1.4 * pixels, (grown_kb, pixels)
    # ffmpeg reads 2 s of the 10 minutes and holds a few frames at a time.
    assert child_kb < 256 * 1024, child_kb


def test_declared_size_and_type_are_checked_before_download() -> None:
    with pytest.raises(InvalidVideo, match="not a video"):
        check_declared_video(1000, "application/pdf")
    with pytest.raises(InvalidVideo, match="over the 20 MB limit"):
        check_declared_video(30 * 1024 * 1024, "video/mp4")
    check_declared_video(1000, "video/mp4")
    check_declared_video(None, "image/gif")
