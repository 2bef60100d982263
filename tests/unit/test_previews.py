"""Step previews: the tiny autoencoder decodes, and the packed families (FLUX.2, LTX) give one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reelbot.catalog import Catalog, Task
from reelbot.generation import tiny
from reelbot.generation.previews import PREVIEW_MAX_SIDE, Previewer, load_preview_vae, project
from reelbot.generation.runner import Progress, Runner
from reelbot.jobs import resolve


def _previews(catalog: Catalog, data_dir: Path, model: str, task: Task) -> list[Image.Image]:
    runner = Runner(catalog, data_dir=data_dir, device="cpu", preview_every=1)
    events: list[Progress] = []
    text = f"a red fox --model {model} --seed 1 --steps 3"
    runner.generate(resolve(task, text, catalog), on_progress=events.append)
    return [e.preview for e in events if e.preview is not None]


def test_tiny_autoencoder_decodes_a_preview(tmp_path: Path) -> None:
    folder = tiny.ensure_built(tiny.PREVIEW_VAE, tmp_path)
    vae = load_preview_vae(str(folder), device="cpu", dtype=torch.float32)
    assert vae is not None and vae.config.latent_channels == 16

    class Pipe:  # the main VAE's scaling, as a pipeline states it
        class vae:
            class config:
                scaling_factor, shift_factor = 0.3611, 0.1159

    latents = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(0))
    decoded = Previewer(Pipe(), vae)(latents, 96, 64)
    projected = Previewer(Pipe(), None)(latents, 96, 64)
    assert decoded is not None and projected is not None
    # TAESD upsamples 8x: a 12x8 latent is a 96x64 picture, not the projection's blocks.
    assert decoded.size == (96, 64)
    assert np.asarray(decoded).std() > 0
    assert not np.array_equal(np.asarray(decoded.resize(projected.size)), np.asarray(projected))


def test_an_unloadable_preview_vae_falls_back(tmp_path: Path) -> None:
    assert load_preview_vae(str(tmp_path / "missing"), device="cpu", dtype=torch.float32) is None


def test_tiny_zimage_previews_through_its_tiny_autoencoder(
    tiny_catalog: Catalog, tiny_data_dir: Path
) -> None:
    assert tiny_catalog.get("tiny-zimage").preview_vae == "tiny"
    previews = _previews(tiny_catalog, tiny_data_dir, "tiny-zimage", Task.IMAGINE)
    assert previews, "no preview came"
    pixels = np.asarray(previews[0]).astype(int)
    # The projection scales each latent to a flat block of pixels; the decoder draws pixels.
    blocks = np.repeat(np.repeat(pixels[::4, ::4], 4, axis=0), 4, axis=1)
    assert max(previews[0].size) == PREVIEW_MAX_SIDE
    assert not np.array_equal(pixels, blocks), "a projection, not the tiny autoencoder"


@pytest.mark.parametrize(
    ("model", "task"), [("tiny-flux2", Task.IMAGINE), ("tiny-ltx", Task.VIDEO)]
)
def test_packed_latents_give_previews(
    tiny_catalog: Catalog, tiny_data_dir: Path, model: str, task: Task
) -> None:
    previews = _previews(tiny_catalog, tiny_data_dir, model, task)
    assert previews, f"{model} gave no preview"
    preview = previews[0]
    assert preview.mode == "RGB" and max(preview.size) <= PREVIEW_MAX_SIDE
    assert np.asarray(preview).std() > 0


def test_token_grid_keeps_the_aspect() -> None:
    class Flux2Pipe:
        vae_scale_factor = 8

    tokens = torch.randn(1, (128 // 16) * (64 // 16), 4)
    grid = Previewer(Flux2Pipe()).grid(tokens, 64, 128)
    assert grid is not None and tuple(grid.shape) == (4, 8, 4)
    assert project(grid).size[0] < project(grid).size[1]
