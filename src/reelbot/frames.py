"""A clip's frames as one uint8 array, read as PIL images one at a time.

A video's Upscale of a 20 s, 30 fps clip is 600 frames of 2048x1152: 4.2 GB of pixels, Smooth
doubles the frames of a clip, and the clip an edit starts from is decoded whole. Held as PIL
images that is anonymous memory in the worker, next to the models it keeps offloaded on the
host, and twice over while ffmpeg's raw output was turned into images. ``FrameArray.empty``
allocates the frames in one array instead, and one over ``SPILL_BYTES`` in an unlinked
temporary file (``np.memmap``, in ``TMPDIR``): its pages are the file's, so the kernel writes
them back and drops them under pressure instead of killing the worker, and the file is gone
when the array is. ``pipe_frames`` reads ffmpeg's frames straight into such an array, and the
encoder (``media.encode_video``) reads it in place, 8 MiB at a time.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast, overload

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["SPILL_BYTES", "FrameArray", "Piped", "as_array", "pipe_frames"]

SPILL_BYTES = 512 << 20
"""Frames larger than this in all (512 MiB: ~70 frames of 2048x1152) live in a temporary file."""


class FrameArray(Sequence[Image.Image]):
    """Frames of one size as a (N, H, W, 3) uint8 array; item i is an RGB image of frame i."""

    def __init__(self, array: NDArray[np.uint8]) -> None:
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {array.dtype} {array.shape}")
        self.array = array

    @classmethod
    def empty(
        cls, count: int, width: int, height: int, *, spill_bytes: int | None = None
    ) -> FrameArray:
        """Room for ``count`` frames of ``width`` x ``height``: in memory, or in an unlinked
        temporary file when they would take more than ``spill_bytes`` (``SPILL_BYTES``)."""
        shape = (count, height, width, 3)
        limit = SPILL_BYTES if spill_bytes is None else spill_bytes
        if count * height * width * 3 <= limit:
            return cls(np.empty(shape, dtype=np.uint8))
        # The file is unlinked at once (TemporaryFile); the mapping keeps it until released.
        with tempfile.TemporaryFile(prefix="reelbot-frames-") as backing:
            return cls(np.memmap(backing, dtype=np.uint8, mode="w+", shape=shape))

    @property
    def spilled(self) -> bool:
        """Whether the frames live in a temporary file."""
        return isinstance(self.array, np.memmap)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame."""
        return int(self.array.shape[2]), int(self.array.shape[1])

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> FrameArray: ...

    def __getitem__(self, index: int | slice) -> Image.Image | FrameArray:
        if isinstance(index, slice):
            return FrameArray(self.array[index])
        return Image.fromarray(np.asarray(self.array[index]), "RGB")

    def __iter__(self) -> Iterator[Image.Image]:
        for i in range(len(self)):
            yield self[i]

    def put(self, index: int, image: Image.Image) -> None:
        """Store ``image`` (any mode, this array's size) as frame ``index``."""
        if image.size != self.size:
            raise ValueError(f"frame is {image.size}, the array holds {self.size}")
        self.array[index] = np.asarray(image.convert("RGB"))


def as_array(frames: Sequence[Image.Image] | NDArray[np.uint8]) -> NDArray[np.uint8] | None:
    """The array behind ``frames`` when it is one (a ``FrameArray`` or an array), else None."""
    if isinstance(frames, FrameArray):
        return frames.array
    if isinstance(frames, np.ndarray):
        return frames
    return None


@dataclass(frozen=True)
class Piped:
    """How a ``pipe_frames`` run ended."""

    returncode: int
    frames: int
    """Whole frames read into the array (the rest of it repeats the last one, if any came)."""
    stderr: str
    timed_out: bool


def pipe_frames(
    command: Sequence[str],
    out: FrameArray,
    *,
    feed: Iterable[bytes] | None = None,
    timeout_s: float,
) -> Piped:
    """Run ``command`` (an ffmpeg writing raw RGB24 frames of ``out``'s size to stdout) and
    read its frames straight into ``out``, never holding its whole output; ``feed`` goes to
    its stdin from a thread meanwhile. Past ``timeout_s`` it is killed (``timed_out``)."""
    errors: list[bytes] = []
    count = 0
    flat = out.array.reshape(len(out), -1)
    stdin_pipe = subprocess.DEVNULL if feed is None else subprocess.PIPE
    killed = threading.Event()
    with subprocess.Popen(
        list(command), stdin=stdin_pipe, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        stdin, stderr = proc.stdin, proc.stderr
        stdout = cast(io.BufferedReader, proc.stdout)  # Popen's default: buffered pipes
        assert stderr is not None

        def give() -> None:
            # ffmpeg reads ahead while it writes: feed it from a thread, read it here.
            assert stdin is not None and feed is not None
            try:
                for chunk in feed:
                    stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                pass  # it stopped early; its exit code and stderr say why
            finally:
                with contextlib.suppress(OSError, ValueError):
                    stdin.close()

        helpers = [threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)]
        if stdin is not None:
            helpers.append(threading.Thread(target=give, daemon=True))
        for helper in helpers:
            helper.start()

        def kill() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            while count < len(out) and _read_frame(stdout, memoryview(flat[count])):
                count += 1
            stdout.close()  # more than asked for: it stops on the closed pipe, not blocked
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
            for helper in helpers:
                helper.join()
    if count:
        out.array[count:] = out.array[count - 1]
    message = b"".join(errors).decode(errors="replace")
    return Piped(proc.returncode, count, message, timed_out=killed.is_set())


def _read_frame(stream: io.BufferedReader, frame: memoryview) -> bool:
    """Fill ``frame`` from ``stream``; False at the end of the stream (or within a frame)."""
    while frame.nbytes:
        got = stream.readinto(frame)
        if not got:
            return False
        frame = frame[got:]
    return True
