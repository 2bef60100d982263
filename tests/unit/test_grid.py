"""Grids: ``--n``, the layout, one pipeline call whose image i is seed + i, and the cost."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.errors import InvalidOption
from reelbot.generation.batching import batch_key, plan_batches
from reelbot.generation.grid import EMPTY_CELL, compose_grid, grid_shape
from reelbot.generation.runner import GenerationOutput, Runner
from reelbot.jobs import MAX_COUNT, parse_prompt, resolve


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Image.Image:
    return Image.new("RGB", size, colour)


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]

# -- the layout -------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "shape"), [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2))])
def test_grid_shapes(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape


@pytest.mark.parametrize("count", [0, 5])
def test_a_grid_holds_one_to_four(count: int) -> None:
    with pytest.raises(ValueError, match="1 to 4"):
        grid_shape(count)


def test_two_sit_side_by_side_at_full_resolution() -> None:
    grid = compose_grid([_solid(COLOURS[0]), _solid(COLOURS[1])])
    assert grid.size == (16, 6)
    assert grid.getpixel((0, 0)) == COLOURS[0]
    assert grid.getpixel((15, 5)) == COLOURS[1]


def test_four_fill_a_two_by_two_in_reading_order() -> None:
    grid = compose_grid([_solid(c) for c in COLOURS])
    assert grid.size == (16, 12)
    corners = [(0, 0), (8, 0), (0, 6), (8, 6)]
    assert [grid.getpixel(xy) for xy in corners] == COLOURS
    # Each tile is the image itself, pixel for pixel.
    assert np.array_equal(np.asarray(grid.crop((8, 6, 16, 12))), np.asarray(_solid(COLOURS[3])))


def test_three_leave_the_last_cell_plain() -> None:
    grid = compose_grid([_solid(c) for c in COLOURS[:3]])
    assert grid.size == (16, 12)
    assert grid.getpixel((8, 6)) == EMPTY_CELL
    assert grid.getpixel((15, 11)) == EMPTY_CELL
    assert grid.getpixel((0, 6)) == COLOURS[2]


# -- --n --------------------------------------------------------------------------------------


def test_n_is_parsed_and_resolved(tiny_catalog: Catalog) -> None:
    prompt, options = parse_prompt("a fox --n 4 --seed 7")
    assert (prompt, options.n, options.seed) == ("a fox", 4, 7)
    params = resolve(Task.IMAGINE, "a fox --n 3", tiny_catalog)
    assert params.count == 3
    assert "--n 3" in params.summary()
    assert resolve(Task.IMAGINE, "a fox", tiny_catalog).count == 1


@pytest.mark.parametrize("value", ["0", "5", "12"])
def test_n_out_of_range_names_the_flag(tiny_catalog: Catalog, value: str) -> None:
    with pytest.raises(InvalidOption) as caught:
        resolve(Task.IMAGINE, f"a fox --n {value}", tiny_catalog)
    assert caught.value.option == "n"
    assert f"--n {value} is out of range" in caught.value.user_message
    assert f"1 to {MAX_COUNT}" in caught.value.user_message


def test_n_must_be_a_whole_number(tiny_catalog: Catalog) -> None:
    with pytest.raises(InvalidOption, match="--n must be a whole number"):
        resolve(Task.IMAGINE, "a fox --n two", tiny_catalog)


def test_a_video_with_n_is_refused_in_words(tiny_catalog: Catalog) -> None:
    with pytest.raises(InvalidOption, match="--n only applies to images"):
        resolve(Task.VIDEO, "waves --n 2", tiny_catalog)


def test_the_default_count_applies_to_images_only(tiny_catalog: Catalog) -> None:
    assert resolve(Task.IMAGINE, "a fox", tiny_catalog, default_count=4).count == 4
    assert resolve(Task.IMAGINE, "a fox --n 1", tiny_catalog, default_count=4).count == 1
    assert resolve(Task.VIDEO, "waves", tiny_catalog, default_count=4).count == 1


def test_a_grid_costs_n_images(tiny_catalog: Catalog) -> None:
    one = resolve(Task.IMAGINE, "a fox --ar 16:9", tiny_catalog)
    for n in (2, 3, 4):
        grid = resolve(Task.IMAGINE, f"a fox --ar 16:9 --n {n}", tiny_catalog)
        assert grid.cost == pytest.approx(n * one.cost)


def test_a_grid_runs_alone_in_a_batch(tiny_catalog: Catalog) -> None:
    single = resolve(Task.IMAGINE, "a fox --seed 1", tiny_catalog)
    grid = resolve(Task.IMAGINE, "a fox --seed 2 --n 4", tiny_catalog)
    assert batch_key(grid) is None
    assert plan_batches([single, grid, single], max_size=4) == [[0, 2], [1]]


# -- one call, image i = seed + i -------------------------------------------------------------


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("model", ["tiny-zimage", "tiny-flux2"])
def test_image_i_of_a_grid_is_the_single_image_of_seed_plus_i(
    runner: Runner, tiny_catalog: Catalog, model: str
) -> None:
    seed = 40
    grid = runner.generate(
        resolve(Task.IMAGINE, f"a fox --model {model} --steps 3 --seed {seed} --n 4", tiny_catalog)
    )
    assert isinstance(grid, GenerationOutput)
    assert len(grid.frames) == 4
    for i, frame in enumerate(grid.frames):
        alone_params = resolve(
            Task.IMAGINE, f"a fox --model {model} --steps 3 --seed {seed + i} --n 1", tiny_catalog
        )
        assert frame.size == (alone_params.width, alone_params.height)
        alone = runner.generate(alone_params)
        # The tolerance of tests/unit/test_batching.py: a batched matmul sums in another order.
        diff = np.abs(_pixels(frame) - _pixels(alone.frames[0]))
        assert diff.max() <= 1
        assert (diff > 0).mean() < 1e-3
    # Four different images, not one repeated.
    assert not np.array_equal(_pixels(grid.frames[0]), _pixels(grid.frames[1]))


def test_a_remix_grid_keeps_one_input_and_makes_n(runner: Runner, tiny_catalog: Catalog) -> None:
    params = resolve(Task.REMIX, "winter --steps 2 --seed 3 --n 2", tiny_catalog, has_image=True)
    out = runner.generate(params, Image.new("RGB", (64, 64), (120, 60, 30)))
    assert len(out.frames) == 2
    assert not np.array_equal(_pixels(out.frames[0]), _pixels(out.frames[1]))
