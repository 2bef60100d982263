"""Inpaint, zoom out, pan, blend and describe on the tiny models, and their CLI commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.errors import InvalidMask, MissingImage
from reelbot.jobs import Options, resolve

if TYPE_CHECKING:
    from reelbot.generation.runner import Runner


def _source(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Stripes and a gradient: any pixel moved or redrawn shows."""
    x = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :].repeat(size[1], 0)
    y = np.linspace(0, 255, size[1], dtype=np.uint8)[:, None].repeat(size[0], 1)
    stripes = ((np.arange(size[1])[:, None] // 4) % 2 * 255).astype(np.uint8).repeat(size[0], 1)
    return Image.fromarray(np.stack([x, y, stripes], axis=-1), "RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def test_inpainting_changes_only_the_masked_area(runner: Runner, tiny_catalog: Catalog) -> None:
    source = _source()
    mask = Image.new("L", (32, 24), 0)  # half the size: resized to the image
    mask.paste(255, (8, 6, 24, 18))
    params = resolve(
        Task.INPAINT, "a red hat --seed 3", tiny_catalog, has_image=True, image_size=source.size
    )
    out = runner.generate(params, source, mask=mask).frames[0]
    assert out.size == source.size
    got, want = _pixels(out), _pixels(source)
    inside = np.zeros(got.shape[:2], bool)
    inside[12:36, 16:48] = True
    assert (got[~inside] == want[~inside]).all()
    assert np.abs(got[inside] - want[inside]).mean() > 5  # the masked area was redrawn
    with pytest.raises(InvalidMask):
        runner.generate(params, source, mask=Image.new("L", (8, 8), 255))
    with pytest.raises(MissingImage, match="needs a mask"):
        runner.generate(params, source)


@pytest.mark.parametrize("model", ["tiny-zimage", "tiny-flux2"])
def test_zoom_out_twice_keeps_the_source_in_the_centre(
    runner: Runner, tiny_catalog: Catalog, model: str
) -> None:
    source = _source()
    params = resolve(
        Task.INPAINT,
        f"a fox --model {model}",
        tiny_catalog,
        has_image=True,
        image_size=source.size,
        explicit=Options(zoom=2.0),
    )
    out = runner.generate(params, source).frames[0]
    assert out.size == (128, 96)
    assert (_pixels(out.crop((32, 24, 96, 72))) == _pixels(source)).all()


def test_pan_left_grows_the_canvas_to_the_left(runner: Runner, tiny_catalog: Catalog) -> None:
    source = _source((64, 64))
    params = resolve(
        Task.INPAINT,
        "",
        tiny_catalog,
        has_image=True,
        image_size=(64, 64),
        explicit=Options(pan="left"),
    )
    out = runner.generate(params, source).frames[0]
    assert out.size == (96, 64)
    assert (_pixels(out.crop((32, 0, 96, 64))) == _pixels(source)).all()


def test_blend_of_two_images_gives_one_result(runner: Runner, tiny_catalog: Catalog) -> None:
    params = resolve(Task.BLEND, "--seed 1", tiny_catalog, has_image=True)
    second = Image.new("RGB", (40, 50), (0, 0, 200))  # smaller than FLUX.2 takes: scaled up
    output = runner.generate(params, _source(), references=[second])
    assert [f.size for f in output.frames] == [(64, 64)]
    with pytest.raises(MissingImage, match="2 to 4"):
        runner.generate(params, _source())


def test_describe_gives_four_distinct_suggestions_per_seed(
    runner: Runner, tiny_catalog: Catalog
) -> None:
    params = resolve(Task.DESCRIBE, "--seed 4", tiny_catalog, has_image=True)
    source = _source()
    output = runner.generate(params, source)
    # Random weights write gibberish: the shape is what can be checked.
    assert len(output.texts) == 4
    assert all(t.strip() == t and t for t in output.texts)
    assert len({t.casefold() for t in output.texts}) == 4
    assert output.frames[0].size == source.size  # stored and posted like any result
    assert runner.generate(params, source).texts == output.texts


@pytest.fixture
def _tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_data_dir: Path) -> None:
    for key in list(os.environ):
        if key.startswith("REELBOT_"):
            monkeypatch.delenv(key)  # the CLI refuses settings it does not know
    monkeypatch.setenv("REELBOT_MODELS", "tiny")
    monkeypatch.setenv("REELBOT_DATA_DIR", str(tiny_data_dir))
    monkeypatch.setenv("REELBOT_DEVICE", "cpu")


@pytest.mark.usefixtures("_tiny_env")
def test_cli_zoom_and_describe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reelbot.cli import main

    src = tmp_path / "in.png"
    _source().save(src)
    out = tmp_path / "zoomed.png"
    assert main(["generate", "zoom", "--image", str(src), "--scale", "2", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (128, 96)
    capsys.readouterr()
    assert main(["generate", "describe", "--seed 1", "--image", str(src)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(lines)
    black = tmp_path / "black.png"
    Image.new("L", (64, 48), 0).save(black)
    argv = ["generate", "inpaint", "a hat", "--image", str(src), "--mask", str(black)]
    assert main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    assert "all black" in capsys.readouterr().err


def test_a_suggestion_carries_no_flags() -> None:
    # Each suggestion is queued as an /imagine prompt: a caption's "--ar" or "—seed" must not
    # turn into a flag (an unknown one would refuse the press).
    from reelbot.generation.describe import clean
    from reelbot.jobs import parse_prompt

    said = clean("a fox --ar 16:9 —seed x–y on a—hill")
    assert parse_prompt(said)[0] == said and "--" not in said


def test_only_a_prompt_that_runs_as_it_reads_is_suggested() -> None:
    # Random weights once captioned an image "&&": pressing it was refused as a prompt with no
    # words, so a suggestion must pass the same checks /imagine makes.
    from reelbot.generation.describe import usable

    assert usable("a fox on a hill, 35mm")
    assert not any(usable(t) for t in ("}", ", [", "&&", ":? @", "", "a fox --ar 16:9"))
