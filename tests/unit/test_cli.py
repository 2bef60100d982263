"""``reelbot generate`` and the CLI's usage errors: one clear line and exit status 2."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from reelbot.cli import main


@pytest.fixture(autouse=True)
def _tiny_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)
    data_dir = os.environ.get("REELBOT_TEST_DATA_DIR") or str(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("REELBOT_MODELS", "tiny")
    monkeypatch.setenv("REELBOT_DATA_DIR", data_dir)
    monkeypatch.setenv("REELBOT_DEVICE", "cpu")


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with one tiny compressed row (a bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width * 3 + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("", "needs a prompt"),
        ("a" * 1501, "keep it under 1500"),
        ("a fox --sed 3", "Did you mean --seed?"),
        ("a fox --steps 500", "--steps 500 is out of range for tiny-zimage: use 1 to 8"),
        ("a fox --ar 1:9", "1:4 to 4:1"),
    ],
)
def test_bad_prompts_are_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, prompt: str, needle: str
) -> None:
    _fails_with(capsys, ["generate", "imagine", prompt, "--out", str(tmp_path / "x.png")], needle)


def test_bad_images_are_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    _fails_with(capsys, ["generate", "remix", "a fox", "--image", str(text), "--out", out], "")

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    argv = ["generate", "remix", "a fox", "--image", str(truncated), "--out", out]
    _fails_with(capsys, argv, "")

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_huge_png_header(20_000, 20_000))
    _fails_with(capsys, ["generate", "remix", "a", "--image", str(bomb), "--out", out], "")

    missing = ["generate", "remix", "a fox", "--out", out]
    _fails_with(capsys, missing, "needs an image")
    absent = ["generate", "remix", "a", "--image", str(tmp_path / "nope.png"), "--out", out]
    _fails_with(capsys, absent, "No such file")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "paint", "a fox", "--out", "x.png"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    _fails_with(
        capsys,
        ["generate", "video", "waves", "--out", str(tmp_path / "x.png")],
        "name the file .mp4",
    )


def test_unknown_setting_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REELBOT_MODLES", "tiny")
    _fails_with(
        capsys,
        ["generate", "imagine", "a fox", "--out", str(tmp_path / "x.png")],
        "REELBOT_MODLES: unknown setting",
    )


def test_generate_image_and_video(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from reelbot.generation.media import probe_video

    png = tmp_path / "fox.png"
    assert main(["generate", "imagine", "a red fox --ar 3:2 --seed 7", "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "seed 7" in printed and "--seed 7" in printed
    with Image.open(png) as image:
        assert image.size == (80, 48)

    remixed = tmp_path / "fox-wc.png"
    argv = ["generate", "remix", "--style watercolor", "--image", str(png), "--out", str(remixed)]
    assert main(argv) == 0
    with Image.open(remixed) as image:
        # The input's 3:2 shape at the model's nearest size (a square centre-crop before).
        assert image.size == (80, 48)

    mp4 = tmp_path / "fox.mp4"
    assert main(["generate", "animate", "--seed 3", "--image", str(png), "--out", str(mp4)]) == 0
    info = probe_video(mp4.read_bytes())
    assert (info.width, info.height, info.frames) == (96, 64, 9)  # 3:2 kept, as for remix
