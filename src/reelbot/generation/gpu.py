"""How a pipeline runs on an accelerator: attention backend, compiled blocks, VAE tiling.

Everything here is chosen by ``GpuOptions``, built once from the settings (or by a test), so
the CPU path in CI stays the plain eager one and each GPU knob can be switched on its own.
Numbers quoted in comments come from ``bench/RESULTS.md`` (H200, 2026-11-26).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GpuOptions:
    """The accelerator knobs of a runner; the defaults are the measured best (auto)."""

    compile: bool | None = None
    """Compile the denoiser's repeated blocks; None: on for CUDA, off elsewhere."""
    attention_backend: str | None = None
    """A diffusers attention backend name (e.g. ``_native_cudnn``); None: torch's SDPA."""
    vae_tiling: bool | None = None
    """Tile video VAE decodes; None: by video size and the card's memory."""
    offload: bool = True
    """Allow model CPU offload on an accelerator when a model is over the memory budget."""
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

    def tiles(self, device: str, memory_total: int | None, voxels: int) -> bool:
        """Whether a video decode of ``voxels`` (width × height × frames) is tiled."""
        if self.vae_tiling is not None:
            return self.vae_tiling
        if device == "cpu" or memory_total is None:
            return False  # host memory is not the limit there, and tiling is slower
        limit = SMALL_CARD_TILE_ABOVE if memory_total < SMALL_CARD_BYTES else LARGE_CARD_TILE_ABOVE
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
