"""A clip's frames as one uint8 array, read as PIL images one at a time.

A video's Upscale of a 20 s, 30 fps clip is 600 frames of 2048x1152: 4.2 GB of pixels, and
Smooth doubles the frames of a clip. Held as PIL images that is anonymous memory in the worker,
next to the models it keeps offloaded on the host. ``FrameArray.empty`` allocates the frames in
one array instead, and one over ``SPILL_BYTES`` in an unlinked temporary file (``np.memmap``,
in ``TMPDIR``): its pages are the file's, so the kernel writes them back and drops them under
pressure instead of killing the worker, and the file is gone when the array is. The encoder
(``media.encode_video``) reads such an array in place, 8 MiB at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["SPILL_BYTES", "FrameArray", "as_array"]

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
