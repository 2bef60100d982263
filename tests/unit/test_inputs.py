"""Input images: what a chat attachment must be, and what the pipeline gets from it."""

from __future__ import annotations

import struct
import time
import zlib
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from reelbot.errors import InvalidImage
from reelbot.inputs import ImageInfo, load_input_image, probe_image

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def two_tone(w: int, h: int) -> Image.Image:
    """Left half red, right half blue: orientation is visible in any corner."""
    im = Image.new("RGB", (w, h), BLUE)
    im.paste(RED, (0, 0, w // 2, h))
    return im


def png_with_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims another size, with a valid CRC: a bomb's header."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = 8  # after the PNG signature: length(4) type(4) data(13) crc(4)
    assert data[ihdr + 4 : ihdr + 8] == b"IHDR"
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def close_to(a: tuple[int, ...], b: tuple[int, ...], tol: int = 25) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"quality": 95}), ("BMP", {}), ("GIF", {})],
)
def test_allowed_formats_decode_to_rgb(fmt: str, params: dict[str, object]) -> None:
    data = encode(two_tone(64, 32), fmt, **params)
    im = load_input_image(data)
    assert im.mode == "RGB"
    assert im.size == (64, 32)
    assert close_to(im.getpixel((2, 16)), RED)  # type: ignore[arg-type]
    assert close_to(im.getpixel((61, 16)), BLUE)  # type: ignore[arg-type]
    expected = "JPEG" if fmt == "JPEG" else fmt
    assert probe_image(data) == ImageInfo(expected, 64, 32, 1)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", what phones write when held upright
    data = encode(two_tone(40, 20), "JPEG", quality=95, exif=exif.tobytes())
    im = load_input_image(data)
    assert im.size == (20, 40)
    assert close_to(im.getpixel((10, 3)), RED)  # type: ignore[arg-type]
    assert close_to(im.getpixel((10, 36)), BLUE)  # type: ignore[arg-type]


def test_alpha_is_composited_on_white() -> None:
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.putpixel((0, 0), (*RED, 255))
    out = load_input_image(encode(im, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == RED


def test_palette_transparency_is_composited_on_white() -> None:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([*RED, *BLUE] + [0] * 762)
    im.putpixel((0, 0), 0)
    out = load_input_image(encode(im, "GIF", transparency=1))
    assert out.getpixel((4, 4)) == (255, 255, 255)
    assert out.getpixel((0, 0)) == RED


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (20, 200, 20), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert probe_image(data).frames == 3
    out = load_input_image(data)
    assert close_to(out.getpixel((8, 8)), RED)  # type: ignore[arg-type]


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    im = Image.new("I;16", (8, 8), 32768)
    out = load_input_image(encode(im, "PNG"))
    assert close_to(out.getpixel((4, 4)), (128, 128, 128), tol=2)  # type: ignore[arg-type]


def test_long_side_is_downsized() -> None:
    out = load_input_image(encode(two_tone(600, 200), "PNG"), max_side=256)
    assert out.size == (256, 85)
    default = load_input_image(encode(Image.new("RGB", (2100, 10)), "PNG"))
    assert default.size == (2048, 10)


def test_large_jpeg_is_downsized_exactly() -> None:
    # Goes through libjpeg's reduced-scale decoding; the final size must still be exact.
    out = load_input_image(encode(two_tone(2000, 1000), "JPEG"), max_side=300)
    assert out.size == (300, 150)
    assert close_to(out.getpixel((10, 75)), RED)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"hello, this is not an image at all\n" * 10, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
    ],
    ids=["empty", "text", "png-signature-only"],
)
def test_non_images_are_refused_with_advice(data: bytes, words: str) -> None:
    for check in (load_input_image, probe_image):
        with pytest.raises(InvalidImage) as err:
            check(data)
        assert words in err.value.user_message
        assert "Send a PNG, JPEG or WEBP image under 20 MB" in err.value.user_message
        assert err.value.code == "invalid_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images_are_refused(fmt: str) -> None:
    noisy = Image.effect_noise((128, 128), 64).convert("RGB")
    data = encode(noisy, fmt)
    truncated = data[: len(data) // 2]
    assert probe_image(truncated).width == 128  # the header alone is intact
    with pytest.raises(InvalidImage) as err:
        load_input_image(truncated)
    assert "Send" in err.value.user_message


def test_disallowed_format_is_refused() -> None:
    data = encode(Image.new("RGB", (8, 8)), "TIFF")
    with pytest.raises(InvalidImage, match="not an image reelbot can read"):
        load_input_image(data)


def test_too_many_bytes_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(InvalidImage, match="over the 1 KB limit"):
        load_input_image(data + b"\x00" * 2048, max_bytes=1024)


@pytest.mark.parametrize(
    ("side", "words"),
    [
        (8000, "8000x8000"),  # over our 40 MP, under Pillow's warning
        (10000, "too many pixels"),  # Pillow's DecompressionBombWarning
        (20000, "too many pixels"),  # Pillow's DecompressionBombError
    ],
)
def test_decompression_bombs_are_refused_fast(side: int, words: str) -> None:
    data = png_with_size(side, side)
    start = time.perf_counter()
    for check in (load_input_image, probe_image):
        with pytest.raises(InvalidImage) as err:
            check(data)
        assert words in err.value.user_message
        assert "2048 pixels" in err.value.user_message
    assert time.perf_counter() - start < 1.0


def test_bomb_made_of_real_pixels_is_refused() -> None:
    # A genuinely compressed 9000x9000 all-zero PNG: ~80 KB on the wire, 243 MB decoded.
    raw = zlib.compress(b"\x00" * (1 + 9000) * 9000, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    assert len(data) < 200_000
    with pytest.raises(InvalidImage, match="9000x9000"):
        load_input_image(data)


VALID = encode(two_tone(24, 16), "PNG")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=512),
        st.builds(
            lambda cut, flips: bytes(
                b ^ flips.get(i, 0) for i, b in enumerate(VALID[: max(cut, 1)])
            ),
            st.integers(0, len(VALID)),
            st.dictionaries(st.integers(0, len(VALID) - 1), st.integers(1, 255), max_size=4),
        ),
    )
)
def test_any_bytes_give_an_image_or_invalid_image(data: bytes) -> None:
    try:
        im = load_input_image(data)
    except InvalidImage as err:
        assert err.user_message
    else:
        assert im.mode == "RGB"
        assert max(im.size) <= 2048
