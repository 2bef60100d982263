"""Input images from chat: check an attachment's header, then decode it safely for a pipeline.

This module sits at the bottom layer (Pillow only, no torch, no numpy) so that chat adapters can
refuse a bad attachment before a job is queued, and the worker can decode the same bytes with
the same rules.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from reelbot.errors import InvalidImage

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "ImageInfo",
    "check_declared",
    "load_input_image",
    "probe_image",
    "upright_size",
]

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
"""Telegram's bot download limit (getFile), and ample for a Discord attachment."""
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SIDE = 2048

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
"""Formats Pillow may try; the JPEG opener also yields MPO, the JPEG that many phones write."""

_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: its format, its size and how many frames it holds."""

    format: str
    width: int
    height: int
    frames: int


def _mb(n: int) -> str:
    """Bytes as the "20 MB" that chat platforms print (binary megabytes)."""
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    value = n / (1024 * 1024)
    return f"{value:.0f} MB" if value >= 10 or value == int(value) else f"{value:.1f} MB"


def _what_to_send(max_bytes: int) -> str:
    return f"Send a PNG, JPEG or WEBP image under {_mb(max_bytes)}."


def check_declared(
    size: int | None, mime: str | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    """Refuse an input from what the platform says of it (its size, its MIME type), before it
    is downloaded; the same words as the checks of the bytes."""
    mime = (mime or "").split(";")[0].strip().lower()
    if mime and not mime.startswith("image/"):
        raise InvalidImage(f"That file is not an image ({mime}). {_what_to_send(max_bytes)}")
    if size is not None and size > max_bytes:
        raise InvalidImage(
            f"The image is {_mb(size)}, over the {_mb(max_bytes)} limit. {_what_to_send(max_bytes)}"
        )


def _open(data: bytes, max_bytes: int, max_pixels: int) -> ImageFile.ImageFile:
    """Open ``data`` lazily (header only) and apply the size, format and pixel checks."""
    if not data:
        raise InvalidImage(f"The image is empty (0 bytes). {_what_to_send(max_bytes)}")
    if len(data) > max_bytes:
        raise InvalidImage(
            f"The image is {_mb(len(data))}, over the {_mb(max_bytes)} limit. "
            f"{_what_to_send(max_bytes)}"
        )
    try:
        # Pillow checks its own pixel limit inside open(), before we can see the size; a warning
        # there (between 1x and 2x its limit) is turned into an error so it is refused, not
        # printed. catch_warnings is process-global, but the only filter it adds is this one.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            "The image has far too many pixels to process safely. "
            f"Send one at most {DEFAULT_MAX_SIDE} pixels on its long side."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            f"That file is not an image reelbot can read. {_what_to_send(max_bytes)}"
        ) from exc
    except Exception as exc:
        # Pillow's header parsers raise many types (SyntaxError, struct.error, ValueError, …)
        # on hostile bytes; every one of them means the attachment cannot be used.
        raise InvalidImage(
            f"The image is damaged and cannot be read. {_what_to_send(max_bytes)}"
        ) from exc
    width, height = im.size
    if width < 1 or height < 1:
        raise InvalidImage(
            f"The image has no pixels ({width}x{height}). {_what_to_send(max_bytes)}"
        )
    if width * height > max_pixels:
        raise InvalidImage(
            f"The image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the "
            f"{max_pixels / 1e6:.0f} megapixel limit. Send a smaller image, at most "
            f"{DEFAULT_MAX_SIDE} pixels on its long side."
        )
    return im


def probe_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """Check an attachment from its header alone, without decoding its pixels."""
    im = _open(data, max_bytes, max_pixels)
    with im:
        try:
            frames = int(getattr(im, "n_frames", 1))
        except Exception as exc:
            # Counting GIF frames walks the file's block structure, which can be broken.
            raise InvalidImage(
                f"The image is damaged and cannot be read. {_what_to_send(max_bytes)}"
            ) from exc
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        return ImageInfo(format=fmt, width=im.size[0], height=im.size[1], frames=frames)


def upright_size(data: bytes) -> tuple[int, int]:
    """An image's (width, height) as ``load_input_image`` turns it: EXIF rotations of a quarter
    turn swap the sides. From the header; no pixels are decoded."""
    info = probe_image(data)
    try:
        with Image.open(BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112)
    except Exception:
        orientation = None  # a broken EXIF block leaves the pixels as they are
    if orientation in (5, 6, 7, 8):
        return info.height, info.width
    return info.width, info.height


def load_input_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """Decode an attachment into an upright RGB image whose long side is at most ``max_side``.

    Animated images give their first frame; transparency is composited on white.

    Raises:
        InvalidImage: the data is empty, too big, not an allowed format, a decompression bomb,
            truncated or otherwise damaged; the message says what to send instead.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    im = _open(data, max_bytes, max_pixels)
    with im:
        try:
            if im.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result is downsized
                # anyway: a 40 MP photo then costs a fraction of the memory and time.
                scale = max_side / max(im.size)
                if scale < 0.5:
                    im.draft("RGB", (int(im.size[0] * scale) + 1, int(im.size[1] * scale) + 1))
            im.load()
        except Exception as exc:
            if isinstance(exc, OSError) and "truncated" in str(exc):
                raise InvalidImage(
                    "The image file is incomplete (it ends early). Send it again, as a PNG, "
                    f"JPEG or WEBP image under {_mb(max_bytes)}."
                ) from exc
            raise InvalidImage(
                f"The image is damaged and cannot be read. {_what_to_send(max_bytes)}"
            ) from exc
        try:
            out = _to_rgb(_upright(im))
        except Exception as exc:
            # A mode or palette that Pillow cannot convert is as unusable as broken data.
            raise InvalidImage(
                f"The image is damaged and cannot be read. {_what_to_send(max_bytes)}"
            ) from exc
    if max(out.size) > max_side:
        scale = max_side / max(out.size)
        size = (max(1, round(out.size[0] * scale)), max(1, round(out.size[1] * scale)))
        out = out.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return out


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the pixels as they are."""
    try:
        rotated = ImageOps.exif_transpose(im)
    except Exception:
        # The pixels decoded fine; a corrupt EXIF block is not a reason to refuse the image.
        return im.copy()
    return rotated if rotated is not None else im.copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, with transparency composited on white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # convert("RGB") clips 16-bit and float samples at 255 and turns the image white;
        # scale to 8 bits first.
        peak = 65535.0 if im.mode.startswith("I;16") else max(1.0, float(im.getextrema()[1]))  # type: ignore[arg-type]
        im = im.convert("F").point(lambda v: v * (255.0 / peak)).convert("L")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return im.convert("RGB")
