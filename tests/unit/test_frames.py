"""Frames held as one array, spilled to a temporary file when large (``generation.frames``):
the same pixels either way, read in place by the encoder, and not the worker's own memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reelbot import frames as frames_module
from reelbot.frames import FrameArray, pipe_frames
from reelbot.generation.media import decode_video_frames, encode_video
from reelbot.generation.video_frames import interpolate_x2


def _clip(count: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    w, h = size
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [Image.fromarray(np.roll(base, 2 * i, axis=1)) for i in range(count)]


def test_frames_read_back_as_they_were_put_in_memory_and_spilled() -> None:
    clip = _clip(5, (24, 16))
    small = FrameArray.empty(5, 24, 16)
    spilled = FrameArray.empty(5, 24, 16, spill_bytes=0)
    assert not small.spilled and spilled.spilled
    for frames in (small, spilled):
        for i, image in enumerate(clip):
            frames.put(i, image.convert("L").convert("RGB") if i == 0 else image)
        assert len(frames) == 5 and frames.size == (24, 16)
        for got, put in zip(frames[1:], clip[1:], strict=True):
            assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(put))
        # A grey image is stored as RGB.
        assert np.array_equal(
            np.asarray(frames[0]), np.asarray(clip[0].convert("L").convert("RGB"))
        )
        assert len(frames[1:3]) == 2 and isinstance(frames[1:3], FrameArray)
    with pytest.raises(ValueError, match="holds"):
        small.put(0, Image.new("RGB", (8, 8)))


def test_a_spilled_clip_encodes_to_the_same_video_as_its_images() -> None:
    clip = _clip(8, (64, 48))
    spilled = FrameArray.empty(8, 64, 48, spill_bytes=0)
    for i, image in enumerate(clip):
        spilled.put(i, image)
    ours = encode_video(spilled, fps=8, max_bytes=2_000_000)
    theirs = encode_video(clip, fps=8, max_bytes=2_000_000)
    assert (ours.width, ours.height, ours.frames) == (64, 48, 8)
    assert ours.data == theirs.data


def test_smooth_streams_ffmpeg_into_the_array_the_same_in_memory_or_spilled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = _clip(6, (48, 32))
    kept, rate = interpolate_x2(clip, 8.0)
    monkeypatch.setattr(frames_module, "SPILL_BYTES", 0)
    spilled, _ = interpolate_x2(clip, 8.0)
    assert rate == 16 and len(kept) == len(spilled) == 12
    assert not kept.spilled and spilled.spilled
    assert np.array_equal(kept.array, spilled.array)
    # The interpolated clip plays back at twice the rate with every frame.
    video = decode_video_frames(encode_video(spilled, fps=rate, max_bytes=2_000_000).data)
    assert video.shape[0] == 12


_MEASURE = """
import sys
import numpy as np
from reelbot.frames import FrameArray, pipe_frames

def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

frame = np.full((1152, 2048, 3), 7, dtype=np.uint8)
before = anon_kib()
frames = FrameArray.empty(48, 2048, 1152, spill_bytes=int(sys.argv[1]))  # 340 MB
for i in range(len(frames)):
    frames.array[i] = frame
print(frames.spilled, (anon_kib() - before) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("spill", [True, False], ids=["spilled", "in-memory"])
def test_spilled_frames_are_not_the_processes_anonymous_memory(spill: bool, tmp_path: Path) -> None:
    """Measured in a process of its own, with TMPDIR on the disk: 340 MB of frames."""
    limit = 0 if spill else 1 << 40
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(limit)],
        capture_output=True, text=True, timeout=120, check=True, env=env,
    )  # fmt: skip
    spilled, grown_mib = result.stdout.split()
    assert spilled == str(spill)
    if spill:
        assert int(grown_mib) < 40, result.stdout  # the file's pages, not the process's
    else:
        assert int(grown_mib) > 300, result.stdout  # the control: the measure can fail


def test_ffmpeg_stopping_while_frames_are_fed_ends_in_its_own_words() -> None:
    # A rate ffmpeg refuses: it exits at once while 90 MB of frames are still to go in.
    clip = [Image.new("RGB", (640, 480), (i, 0, 0)) for i in range(100)]
    with pytest.raises(RuntimeError, match=r"minterpolate failed: .*framerate"):
        interpolate_x2(clip, -5)


def test_a_command_that_hangs_is_killed_at_its_limit() -> None:
    out = FrameArray.empty(2, 4, 4)
    run = pipe_frames([sys.executable, "-c", "import time; time.sleep(30)"], out, timeout_s=0.3)
    assert run.timed_out and run.frames == 0 and run.returncode != 0


def test_a_command_that_writes_more_frames_than_asked_for_is_stopped() -> None:
    out = FrameArray.empty(2, 4, 4)
    endless = "import sys\nwhile True: sys.stdout.buffer.write(bytes(48))"
    run = pipe_frames([sys.executable, "-c", endless], out, timeout_s=20)
    assert run.frames == 2 and not run.timed_out
