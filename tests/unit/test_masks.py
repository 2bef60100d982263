"""Editing below the chat: mask checks, zoom and pan geometry, and how edits resolve (no torch)."""

from __future__ import annotations

from io import BytesIO

import pytest
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.errors import (
    InvalidImage,
    InvalidMask,
    InvalidOption,
    InvalidPrompt,
    MissingImage,
    UnknownModel,
)
from reelbot.jobs import BLEND_PROMPT, EXTEND_PROMPT, Options, check_image_count, resolve
from reelbot.masks import check_mask, load_mask, outpaint_size, source_box


def _png(image: Image.Image) -> bytes:
    buf = BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_a_mask_of_another_size_is_resized_and_made_hard() -> None:
    mask = Image.new("L", (32, 24), 0)
    mask.paste(200, (8, 6, 24, 18))
    hard = load_mask(_png(mask), (64, 48))
    assert hard.size == (64, 48) and hard.mode == "L"
    assert set(hard.histogram()[1:255]) == {0}  # only black and white
    assert hard.getpixel((32, 24)) == 255 and hard.getpixel((2, 2)) == 0


@pytest.mark.parametrize(("fill", "needle"), [(0, "all black"), (255, "all white")])
def test_a_mask_that_changes_nothing_or_everything_is_refused(fill: int, needle: str) -> None:
    with pytest.raises(InvalidMask, match=needle) as caught:
        check_mask(Image.new("RGB", (16, 16), (fill,) * 3), (64, 64))
    assert isinstance(caught.value, InvalidImage)  # the chat answers it as a bad image
    assert caught.value.user_message.count(".") == 1  # one sentence


def test_a_hostile_mask_gets_the_image_checks() -> None:
    with pytest.raises(InvalidImage, match="not an image"):
        load_mask(b"GIF89a not really", (64, 64))


def test_zoom_doubles_both_sides_with_the_source_in_the_centre() -> None:
    assert outpaint_size(64, 48, zoom=2.0, max_side=256, multiple=16) == (128, 96)
    box = source_box(128, 96, zoom=2.0)
    assert (box.left, box.top, box.size) == (32, 24, (64, 48))
    # Past the model's largest side the canvas is scaled down, the ratio kept.
    assert outpaint_size(256, 128, zoom=2.0, max_side=256, multiple=16) == (256, 128)


def test_a_pan_adds_half_the_side_in_its_direction() -> None:
    assert outpaint_size(64, 64, pan="left", max_side=256, multiple=16) == (96, 64)
    assert outpaint_size(64, 64, pan="up", max_side=256, multiple=16) == (64, 96)
    left = source_box(96, 64, pan="left")
    assert (left.left, left.right) == (32, 96)  # the source stays whole at the right
    down = source_box(64, 96, pan="down")
    assert (down.top, down.bottom) == (0, 64)


def test_inpaint_keeps_the_input_size_and_redraws_from_noise(tiny_catalog: Catalog) -> None:
    params = resolve(Task.INPAINT, "a red hat", tiny_catalog, has_image=True, image_size=(64, 48))
    assert (params.width, params.height, params.strength) == (64, 48, 1.0)
    assert params.model == "tiny-zimage"
    with pytest.raises(InvalidPrompt, match="/inpaint needs a prompt"):
        resolve(Task.INPAINT, "", tiny_catalog, has_image=True)
    with pytest.raises(MissingImage):
        resolve(Task.INPAINT, "a hat", tiny_catalog)


def test_zoom_and_pan_resolve_to_the_grown_canvas(tiny_catalog: Catalog) -> None:
    zoom = resolve(
        Task.INPAINT,
        "",
        tiny_catalog,
        has_image=True,
        image_size=(64, 48),
        explicit=Options(zoom=2.0),
    )
    assert (zoom.width, zoom.height, zoom.zoom, zoom.prompt) == (128, 96, 2.0, EXTEND_PROMPT)
    pan = resolve(
        Task.INPAINT,
        "a beach",
        tiny_catalog,
        has_image=True,
        image_size=(64, 64),
        explicit=Options(pan="right"),
    )
    assert (pan.width, pan.height, pan.pan, pan.prompt) == (96, 64, "right", "a beach")
    with pytest.raises(InvalidOption, match=r"zoom out 1\.5 or 2"):
        resolve(Task.INPAINT, "", tiny_catalog, has_image=True, explicit=Options(zoom=3.0))
    with pytest.raises(InvalidOption, match="only applies to /inpaint"):
        resolve(Task.REMIX, "x", tiny_catalog, has_image=True, explicit=Options(pan="left"))
    with pytest.raises(InvalidOption, match="4:1"):
        resolve(
            Task.INPAINT,
            "",
            tiny_catalog,
            has_image=True,
            image_size=(240, 64),
            explicit=Options(pan="left"),
        )


def test_blend_runs_on_a_model_that_can_and_names_one_otherwise(tiny_catalog: Catalog) -> None:
    params = resolve(Task.BLEND, "", tiny_catalog, has_image=True)
    assert (params.model, params.prompt, params.strength) == ("tiny-flux2", BLEND_PROMPT, None)
    with pytest.raises(UnknownModel) as caught:
        resolve(Task.BLEND, "--model tiny-zimage", tiny_catalog, has_image=True)
    assert "tiny-flux2" in caught.value.user_message
    check_image_count(Task.BLEND, 2)
    for count in (1, 5):
        with pytest.raises(MissingImage, match="2 to 4 images"):
            check_image_count(Task.BLEND, count)


def test_describe_takes_an_image_a_model_and_a_seed_only(tiny_catalog: Catalog) -> None:
    params = resolve(Task.DESCRIBE, "--seed 5", tiny_catalog, has_image=True)
    assert (params.model, params.seed, params.prompt) == ("tiny-florence2", 5, "")
    assert params.cost == tiny_catalog.get("tiny-florence2").cost_weight
    with pytest.raises(InvalidOption, match="does not apply to /describe"):
        resolve(Task.DESCRIBE, "--ar 16:9", tiny_catalog, has_image=True)
    with pytest.raises(InvalidPrompt):
        resolve(Task.DESCRIBE, "a fox", tiny_catalog, has_image=True)
