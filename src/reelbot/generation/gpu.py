"""How a pipeline runs on an accelerator: attention backend, compiled blocks, VAE tiling.

Everything here is chosen by ``GpuOptions``, built once from the settings (or by a test), so
the CPU path in CI stays the plain eager one and each GPU knob can be switched on its own.
Numbers quoted in comments come from ``bench/RESULTS.md`` (H200, 2026-11-26).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reelbot.errors import ConfigError

if TYPE_CHECKING:
    from reelbot.config import Settings

__all__ = [
    "GpuOptions",
    "check_attention_backend",
    "compile_denoiser",
    "set_attention_backend",
    "set_vae_tiling",
]

log = logging.getLogger(__name__)

# Compiled graphs per block type before dynamo gives up and runs eagerly: each new image size
# and each new batch size is one more graph (torch's default of 8 is too few for a server).
RECOMPILE_LIMIT = 64

# Wan 2.2 5B at 1280×704×41 frames peaked at 22.3 GB with the VAE decode, 16.9 GB for the
# denoiser alone at 121 frames: on a card under this size the decode must be tiled.
SMALL_CARD_BYTES = 48 * 2**30
# Video voxels (width × height × frames) above which the decode is tiled on a small card
# (LTX's default 704×480×121 peaked at 8.8 GB in all: it can stay untiled) ...
SMALL_CARD_TILE_ABOVE = 704 * 480 * 121
# ... and on a large one: beyond the largest size measured (Wan's 1280×704×121).
LARGE_CARD_TILE_ABOVE = 1280 * 704 * 121

# Image decodes (pixels decoded in one call: width × height × images). Z-Image-Turbo's weights
# take ~20.5 GB of a 24 GiB (25.8 GB) card. Its 1024² call peaked at 15 GB, ~3 GB over its
# denoiser's weights (6B in bf16), and each more 1024² image in a call added 2.15 GB
# (bench/RESULTS.md: 21.1 GB at batch 4, 29.7 GB at batch 8), in line with an SD VAE's untiled
# decode (~2.2 GB per megapixel in fp16, github.com/Kahsolt/stable-diffusion-webui-vae-tile-
# infer). Two megapixels would take the ~5 GB left: on a small card a decode over the default
# 1024² is tiled. diffusers' AutoencoderKL only splits a decode larger than its tile
# (``sample_size``: 1024 for the FLUX VAE), so smaller images run untiled whatever this says.
SMALL_CARD_IMAGE_TILE_ABOVE = 1024 * 1024
# On a large card: beyond the largest call the catalogs allow (--n 4 at 2048², ~35 GB by the
# same 2.15 GB per megapixel, which fits beside the weights on 80 GB).
LARGE_CARD_IMAGE_TILE_ABOVE = 4 * 2048 * 2048

# Offloaded models live in host memory between calls. Up to this share of the host's RAM they
# stay loaded side by side (no reload between jobs); beyond it the least recently used one is
# dropped before the next loads: a 32 GB desktop holds one ~20 GB model, not two (43 GB).
HOST_BUDGET_FRACTION = 0.8


@dataclass(frozen=True)
class GpuOptions:
    """The accelerator knobs of a runner; the defaults are the measured best (auto)."""

    compile: bool | None = None
    """Compile the denoiser's repeated blocks; None: on for CUDA, off elsewhere."""
    attention_backend: str | None = None
    """A diffusers attention backend name (e.g. ``_native_cudnn``); None: torch's SDPA."""
    vae_tiling: bool | None = None
    """Tile VAE decodes; None: by image or video size and the card's memory."""
    offload: bool = True
    """Allow model CPU offload on an accelerator when a model is over the memory budget."""
    offload_host_bytes: int | None = None
    """Host memory offloaded models may hold together; None: 80 % of physical memory."""
    warmup: bool = True
    """When compiling, run one short generation per task at the model's default size at
    preload, so the first user does not wait for the compiler."""

    @classmethod
    def from_settings(cls, settings: Settings) -> GpuOptions:
        """The options a deployment's settings ask for."""
        return cls(
            compile=settings.compile,
            attention_backend=settings.attention_backend,
            vae_tiling=settings.vae_tiling,
            offload=settings.offload,
        )

    def compiles_on(self, device: str) -> bool:
        """Whether to compile on ``device``: never on the CPU unless asked (a tiny model took
        29 s to compile there, longer than any test run of it)."""
        if self.compile is None:
            return device.startswith("cuda")
        return self.compile

    def offload_host_budget(self) -> int | None:
        """Bytes of host memory offloaded models may hold together, None if unknown."""
        if self.offload_host_bytes is not None:
            return self.offload_host_bytes
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, OSError, ValueError):  # no sysconf (Windows)
            return None
        # In a container the cgroup's limit (v2) is what the OOM killer enforces, not the RAM.
        try:
            limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        except OSError:
            limit = "max"
        if limit.isdigit():
            total = min(total, int(limit))
        return int(total * HOST_BUDGET_FRACTION)

    def tiles(
        self, device: str, memory_total: int | None, voxels: int, *, video: bool = True
    ) -> bool:
        """Whether a decode of ``voxels`` is tiled: width × height × frames for a video,
        width × height × images in the call for images (``video=False``)."""
        if self.vae_tiling is not None:
            return self.vae_tiling
        if device == "cpu" or memory_total is None:
            return False  # host memory is not the limit there, and tiling is slower
        small = memory_total < SMALL_CARD_BYTES
        if video:
            limit = SMALL_CARD_TILE_ABOVE if small else LARGE_CARD_TILE_ABOVE
        else:
            limit = SMALL_CARD_IMAGE_TILE_ABOVE if small else LARGE_CARD_IMAGE_TILE_ABOVE
        return voxels > limit


def check_attention_backend(name: str | None) -> None:
    """Refuse an unknown backend, or one that downloads kernels from the hub, at start-up."""
    if name is None:
        return
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = {b.value for b in AttentionBackendName}
    if name not in known:
        raise ConfigError(
            f"REELBOT_ATTENTION_BACKEND: {name!r} is not a diffusers attention backend "
            f"(e.g. native, _native_cudnn, flash, _flash_3)"
        )
    if name.endswith("_hub"):
        raise ConfigError(
            f"REELBOT_ATTENTION_BACKEND: {name!r} downloads its kernel from the hub at run "
            "time; install the kernel package and use the local backend instead"
        )


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "transformer", None)


def set_attention_backend(pipe: Any, name: str) -> bool:
    """Switch the denoiser's attention to ``name``; on failure keep SDPA and say why."""
    transformer = _denoiser(pipe)
    if transformer is None or not hasattr(transformer, "set_attention_backend"):
        log.warning("%s has no attention backends to choose from", type(pipe).__name__)
        return False
    try:
        transformer.set_attention_backend(name)
    except (RuntimeError, ValueError, ImportError) as exc:
        # A backend whose package is missing or too old for this GPU: SDPA still works.
        log.warning("attention backend %s unavailable (%s); keeping SDPA", name, exc)
        transformer.set_attention_backend("native")
        return False
    return True


def compile_denoiser(pipe: Any) -> bool:
    """Compile the denoiser's repeated blocks in place (1.3–1.5× faster on an H200)."""
    transformer = _denoiser(pipe)
    if transformer is None or not getattr(transformer, "_repeated_blocks", None):
        log.warning("%s has no repeated blocks to compile; running eager", type(pipe).__name__)
        return False
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), RECOMPILE_LIMIT))
    # Blocks, not the whole model: one graph serves every block (3–13 s per model on the
    # H200 instead of minutes), and fullgraph makes a graph break an error, not a slow path.
    transformer.compile_repeated_blocks(fullgraph=True)
    return True


def set_vae_tiling(pipe: Any, on: bool) -> None:
    """Turn tiled VAE decoding on or off where the VAE supports it (the VAE is shared)."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return
    method = getattr(vae, "enable_tiling" if on else "disable_tiling", None)
    if method is not None:
        method()
