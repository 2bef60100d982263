"""Inpainting, zoom out, pan and blend around one pipeline call: inputs in, composite out.

``prepare`` turns a job's inputs into the extra call arguments of its pipeline (the canvas,
the mask, the reference images) and an ``Edit`` that ``finish`` applies to each output frame:
outside the mask the source's own pixels are put back, with a feathered seam inside the mask,
so only the masked area (or the new border of a zoom or pan) changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops, ImageFilter, ImageOps

from reelbot import masks
from reelbot.catalog import Task
from reelbot.errors import MissingImage
from reelbot.jobs import BLEND_IMAGES, GenerationParams

__all__ = ["FEATHER", "Edit", "composite", "feather", "outpaint_canvas", "prepare"]

FEATHER = 0.02
"""The seam's blur radius, as a fraction of the canvas's long side (at least 2 px)."""


@dataclass
class Edit:
    """One edit's call arguments and what puts the source back afterwards."""

    kwargs: dict[str, Any]
    source: Image.Image | None = None
    """The canvas the pipeline starts from (the source, padded for a zoom or pan)."""
    alpha: Image.Image | None = None
    """Where the output shows (255) over the source (0): the feathered mask."""

    def finish(self, frames: Sequence[Image.Image]) -> list[Image.Image]:
        """The output frames with the source's pixels back outside the mask."""
        if self.source is None or self.alpha is None:
            return list(frames)
        return [composite(frame, self.source, self.alpha) for frame in frames]


def feather(mask: Image.Image) -> Image.Image:
    """A hard mask's soft version that never reaches outside it: the blur, only inside."""
    radius = max(2.0, FEATHER * max(mask.size))
    blurred = mask.filter(ImageFilter.GaussianBlur(radius))
    # multiply keeps 0 wherever the hard mask is 0: pixels outside stay the source's.
    return ImageChops.multiply(mask, blurred)


def composite(output: Image.Image, source: Image.Image, alpha: Image.Image) -> Image.Image:
    """``output`` where ``alpha`` is white, ``source`` where it is black, blended between."""
    if output.size != source.size:
        output = output.resize(source.size, Image.Resampling.LANCZOS)
    return Image.composite(output.convert("RGB"), source.convert("RGB"), alpha)


def outpaint_canvas(
    image: Image.Image, size: tuple[int, int], *, zoom: float | None, pan: str | None
) -> tuple[Image.Image, Image.Image]:
    """The canvas of a zoom or a pan (the source in its box, a blurred stretch of it around)
    and its mask (white = the new border)."""
    box = masks.source_box(*size, zoom=zoom, pan=pan)
    placed = ImageOps.fit(image.convert("RGB"), box.size, method=Image.Resampling.LANCZOS)
    # The border starts as a blurred stretch of the source: colours to continue, no edges.
    canvas = placed.resize(size, Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(max(size) / 16)
    )
    canvas.paste(placed, (box.left, box.top))
    mask = Image.new("L", size, 255)
    mask.paste(0, (box.left, box.top, box.right, box.bottom))
    return canvas, mask


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` centre-cropped to the aspect of ``size`` and resized to it (as ``fit_image``)."""
    upright = image if image.mode == "L" else image.convert("RGB")
    if upright.size == size:
        return upright
    return ImageOps.fit(upright, size, method=Image.Resampling.LANCZOS)


def _references(images: Sequence[Image.Image], min_side: int) -> list[Image.Image]:
    """Blend inputs as the pipeline takes them: RGB, scaled up to the family's smallest side."""
    out = []
    for image in images:
        rgb = image.convert("RGB")
        short = min(rgb.size)
        if short < min_side:
            scale = min_side / short
            size = (round(rgb.width * scale), round(rgb.height * scale))
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        out.append(rgb)
    return out


def prepare(
    params: GenerationParams,
    image: Image.Image | None,
    *,
    mask: Image.Image | None = None,
    references: Sequence[Image.Image] = (),
    image_min_side: int = 0,
) -> Edit:
    """The pipeline arguments of an /inpaint (a mask, or a zoom or pan) or a /blend.

    Raises:
        MissingImage: no image, an inpaint with neither a mask nor a zoom or pan, or a blend
            of fewer than 2 or more than 4 images.
        InvalidMask: the mask is all black or all white (``masks.check_mask``).
    """
    if image is None:
        raise MissingImage(f"/{params.task.value} needs an input image.")
    size = (params.width, params.height)
    if params.task == Task.BLEND:
        low, high = BLEND_IMAGES
        images = [image, *references]
        if not low <= len(images) <= high:
            raise MissingImage(
                f"/blend combines {low} to {high} images; this came with {len(images)}."
            )
        return Edit(kwargs={"image": _references(images, image_min_side)})
    if params.task != Task.INPAINT:
        raise ValueError(f"not an edit task: {params.task}")
    if params.zoom is not None or params.pan is not None:
        canvas, hard = outpaint_canvas(image, size, zoom=params.zoom, pan=params.pan)
    elif mask is not None:
        canvas = _fit(image, size)
        # Sized to the image first, then cropped like it, so the mask stays over its area.
        hard = masks.check_mask(_fit(masks.check_mask(mask, image.size), size), size)
    else:
        raise MissingImage("/inpaint needs a mask (white = the area to change), or a zoom or pan.")
    return Edit(kwargs={"image": canvas, "mask_image": hard}, source=canvas, alpha=feather(hard))
