"""When an image decode is tiled: above the default megapixel on a 24 GB card, not on 80 GB."""

from __future__ import annotations

from typing import Any

import pytest

from reelbot.catalog import Catalog, Task
from reelbot.generation.gpu import GpuOptions
from reelbot.generation.runner import Runner
from reelbot.jobs import resolve

CARD_24 = 24 * 2**30
CARD_80 = 80 * 2**30


def test_image_decodes_tile_above_the_default_size_on_a_small_card() -> None:
    auto = GpuOptions()
    assert not auto.tiles("cuda", CARD_24, 1024 * 1024, video=False)  # the default 1024²
    assert auto.tiles("cuda", CARD_24, 1536 * 1536, video=False)
    assert auto.tiles("cuda", CARD_24, 2 * 1024 * 1024, video=False)  # --n 2 at 1024²
    assert not auto.tiles("cuda", CARD_80, 2048 * 2048, video=False)
    assert not auto.tiles("cuda", CARD_80, 4 * 2048 * 2048, video=False)  # the largest call
    assert not auto.tiles("cpu", None, 4096 * 4096, video=False)
    assert not GpuOptions(vae_tiling=False).tiles("cuda", CARD_24, 2048**2, video=False)
    assert GpuOptions(vae_tiling=True).tiles("cuda", CARD_80, 64 * 64, video=False)
    # The image threshold is its own: 1536² as video voxels is far under a video's limit.
    assert not auto.tiles("cuda", CARD_24, 1536 * 1536)


def test_the_runner_asks_for_every_image_decoded_in_the_call(
    runner: Runner, tiny_catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[int, bool]] = []

    def tiles(
        self: GpuOptions, device: str, total: Any, voxels: int, *, video: bool = True
    ) -> bool:
        asked.append((voxels, video))
        return True

    monkeypatch.setattr(GpuOptions, "tiles", tiles)
    params = resolve(Task.IMAGINE, "a fox --model tiny-zimage --n 2 --steps 1", tiny_catalog)
    out = runner.generate(params)
    assert asked == [(params.width * params.height * 2, False)]
    loaded = runner.loaded("tiny-zimage")
    assert loaded is not None and loaded.pipeline(Task.IMAGINE).vae.use_tiling is True
    assert len(out.frames) == 2
