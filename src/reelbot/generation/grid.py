"""A grid of up to four images as one picture: 2 side by side, 3 and 4 in a 2×2.

The tiles keep their full resolution; an empty cell (three images in a 2×2) is filled plainly.
Pure PIL: no torch, so the command line and the worker's encode thread can both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

__all__ = ["EMPTY_CELL", "compose_grid", "grid_shape"]

EMPTY_CELL = (24, 24, 24)
"""The colour of a cell no image fills: a plain dark grey, like a chat's dark background."""


def grid_shape(count: int) -> tuple[int, int]:
    """Columns and rows for ``count`` images: 1 → 1×1, 2 → 2×1 (side by side), 3–4 → 2×2."""
    if not 1 <= count <= 4:
        raise ValueError(f"a grid holds 1 to 4 images, not {count}")
    return {1: (1, 1), 2: (2, 1)}.get(count, (2, 2))


def compose_grid(images: Sequence[Image.Image]) -> Image.Image:
    """The images in reading order (left to right, top to bottom), each cell the first's size.

    Images of another size are centred in their cell (a pipeline makes one size per call, so
    this only guards against a surprise, it never resizes).
    """
    columns, rows = grid_shape(len(images))
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height), EMPTY_CELL)
    for index, image in enumerate(images):
        column, row = index % columns, index // columns
        x = column * width + (width - image.width) // 2
        y = row * height + (height - image.height) // 2
        grid.paste(image.convert("RGB"), (x, y))
    return grid
