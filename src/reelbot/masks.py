"""Masks for editing: a user's inpainting mask checked, and the border a zoom or pan adds.

Bottom layer (Pillow only, no torch) so that chat can refuse a bad mask before a job is queued
and ``resolve`` can size a zoom or pan; ``reelbot.generation.editing`` builds the canvas and
composites the result with the same geometry. White in a mask means "change this".
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from reelbot.errors import InvalidMask
from reelbot.inputs import load_input_image

__all__ = [
    "PAN_DIRECTIONS",
    "PAN_EXTEND",
    "ZOOM_SCALES",
    "Box",
    "check_mask",
    "load_mask",
    "outpaint_size",
    "source_box",
]

ZOOM_SCALES = (1.5, 2.0)
"""Midjourney's Zoom Out buttons: the canvas grows by this factor, the source in its centre."""

PAN_DIRECTIONS = ("left", "right", "up", "down")

PAN_EXTEND = 0.5
"""A pan adds half the image's side in its direction (Midjourney's Pan: a 1:1 image panned
left becomes 3:2, the source kept whole at the right)."""

THRESHOLD = 128
"""Mask pixels at or above this grey are "change"."""


@dataclass(frozen=True)
class Box:
    """Where the source sits on a canvas: left, top, right, bottom in pixels."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        """The box's (width, height)."""
        return self.right - self.left, self.bottom - self.top


def check_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A mask as a hard black-and-white ``L`` image of ``size`` (resized when it differs).

    Raises:
        InvalidMask: the mask has nothing to change (all black) or changes everything (all
            white), either of which is better asked another way.
    """
    grey = mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    hard = grey.point(lambda v: 255 if v >= THRESHOLD else 0)
    low, high = hard.getextrema()
    if high == 0:
        raise InvalidMask(
            "The mask is all black, so nothing would change: paint the area to redo in white."
        )
    if low == 255:
        raise InvalidMask(
            "The mask is all white, so everything would change: use /remix for the whole "
            "image, or paint only the area to redo."
        )
    return hard


def load_mask(data: bytes, size: tuple[int, int]) -> Image.Image:
    """Decode a mask attachment with the input images' checks, then ``check_mask`` it."""
    return check_mask(load_input_image(data), size)


def _round(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def outpaint_size(
    width: int,
    height: int,
    *,
    zoom: float | None = None,
    pan: str | None = None,
    max_side: int,
    multiple: int,
) -> tuple[int, int]:
    """The canvas of a zoom out or a pan of a ``width`` x ``height`` image, in the model's
    multiple; scaled down (the ratio kept) when its long side would pass ``max_side``."""
    if (zoom is None) == (pan is None):
        raise ValueError("give one of zoom or pan")
    if zoom is not None:
        w, h = width * zoom, height * zoom
    elif pan in ("left", "right"):
        w, h = width * (1 + PAN_EXTEND), float(height)
    elif pan in ("up", "down"):
        w, h = float(width), height * (1 + PAN_EXTEND)
    else:
        raise ValueError(f"unknown pan direction {pan!r}")
    fit = min(1.0, max_side / max(w, h))
    return min(max_side, _round(w * fit, multiple)), min(max_side, _round(h * fit, multiple))


def source_box(
    width: int, height: int, *, zoom: float | None = None, pan: str | None = None
) -> Box:
    """Where the source goes on a ``width`` x ``height`` canvas made by ``outpaint_size``."""
    if zoom is not None:
        w, h = round(width / zoom), round(height / zoom)
        left, top = (width - w) // 2, (height - h) // 2
        return Box(left, top, left + w, top + h)
    if pan in ("left", "right"):
        w = round(width / (1 + PAN_EXTEND))
        left = width - w if pan == "left" else 0
        return Box(left, 0, left + w, height)
    if pan in ("up", "down"):
        h = round(height / (1 + PAN_EXTEND))
        top = height - h if pan == "up" else 0
        return Box(0, top, width, top + h)
    raise ValueError("give one of zoom or pan")
