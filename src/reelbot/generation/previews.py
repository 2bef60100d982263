"""Step previews: a step's latents as a small RGB image, for the status message while it runs.

Where the model's VAE has a tiny autoencoder (diffusers ``AutoencoderTiny``, the TAESD family:
``madebyollin/taesd``, ``taef1``…), named as ``preview_vae`` in the model TOML, it decodes the
latents into a real-looking picture for a few milliseconds. Elsewhere a fixed random projection
of the latent channels shows the layout emerging. Packed token latents (FLUX.2 klein's
``(B, h·w, C)``, LTX's ``(B, f·h·w, C)``) are unpacked to their grid first, from the sizes the
pipeline states.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image

__all__ = ["PREVIEW_MAX_SIDE", "Previewer", "latent_preview", "load_preview_vae", "project"]

log = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 128
"""Previews are small: a thumbnail on the status message, a few KB as JPEG."""


@cache
def _projection(channels: int) -> torch.Tensor:
    """A fixed channels→RGB map, the same on every call, so previews look alike step to step."""
    weights = torch.randn(3, channels, generator=torch.Generator().manual_seed(0))
    return weights.div_(channels**0.5)


def _image(rgb: torch.Tensor) -> Image.Image:
    """(H, W, 3) in [0, 1] → a PIL image, scaled up by whole steps towards the preview side."""
    array = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(array, "RGB")
    if max(image.size) > PREVIEW_MAX_SIDE:
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.BILINEAR)
        return image
    scale = max(1, PREVIEW_MAX_SIDE // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def project(grid: torch.Tensor) -> Image.Image:
    """A (C, H, W) latent grid as RGB through the fixed projection, stretched to full range."""
    x = grid.detach().to("cpu", torch.float32)
    rgb = torch.einsum("kc,chw->hwk", _projection(x.shape[0]), x)
    low, high = rgb.amin(), rgb.amax()
    return _image((rgb - low) / (high - low + 1e-6))


def latent_preview(latents: torch.Tensor) -> Image.Image | None:
    """Spatial latents (B, C, H, W) or (B, C, F, H, W) by projection; None for other shapes."""
    if latents.ndim == 5:
        return project(latents[0, :, 0])  # the first frame
    if latents.ndim == 4:
        return project(latents[0])
    return None


def _token_scale(pipe: Any) -> int | None:
    """Pixels per latent token side of a pipeline that packs its latents into a sequence."""
    if hasattr(pipe, "vae_spatial_compression_ratio"):  # LTX: the VAE's ratio × the patch
        return int(pipe.vae_spatial_compression_ratio) * int(
            getattr(pipe, "transformer_spatial_patch_size", 1)
        )
    if type(pipe).__name__.startswith("Flux2"):  # the VAE's 8 × the 2×2 patchify
        return int(pipe.vae_scale_factor) * 2
    return None


def load_preview_vae(source: str, *, device: str, dtype: torch.dtype) -> Any | None:
    """An ``AutoencoderTiny`` from a hub id or a folder; None (logged) when it cannot load."""
    import diffusers

    tiny: Any = diffusers.AutoencoderTiny  # from_pretrained is untyped
    try:
        vae = tiny.from_pretrained(source, torch_dtype=dtype)
    except Exception as exc:  # offline, a wrong name: previews fall back to the projection
        log.warning(
            "preview VAE %s not loaded (%s); previews use the latent projection", source, exc
        )
        return None
    return vae.to(device).eval()


class Previewer:
    """One loaded model's previews: its tiny autoencoder, or the projection."""

    def __init__(self, pipe: Any, tiny_vae: Any | None = None) -> None:
        self.tiny_vae = tiny_vae
        self.token_scale = _token_scale(pipe)
        config = getattr(getattr(pipe, "vae", None), "config", None)
        self.scaling = float(getattr(config, "scaling_factor", None) or 1.0)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)

    def grid(self, latents: torch.Tensor, width: int, height: int) -> torch.Tensor | None:
        """The first image's (C, h, w) latent grid (the first frame of a video)."""
        if latents.ndim == 5:
            return latents[0, :, 0]
        if latents.ndim == 4:
            return latents[0]
        if latents.ndim != 3 or self.token_scale is None:
            return None
        h, w = height // self.token_scale, width // self.token_scale
        tokens, channels = latents.shape[1], latents.shape[2]
        if h * w == 0 or tokens % (h * w):
            return None
        # Tokens run frame by frame, row by row (FLUX.2 ``_pack_latents``, LTX's likewise).
        return latents[0, : h * w].reshape(h, w, channels).permute(2, 0, 1)

    def __call__(self, latents: torch.Tensor, width: int, height: int) -> Image.Image | None:
        """A preview of a step's latents for an image of ``width`` × ``height``, or None."""
        grid = self.grid(latents, width, height)
        if grid is None:
            return None
        vae = self.tiny_vae
        if vae is not None and grid.shape[0] == vae.config.latent_channels:
            # The tiny decoder takes the VAE's raw latents: undo the pipeline's scaling first.
            raw = grid / self.scaling + self.shift
            # A thumbnail needs no more latents than its pixels / 8: a 1024² image's 128² would
            # cost the decoder seconds per preview on a CPU (measured: 7 s; 16²: 0.1 s).
            most, (h, w) = PREVIEW_MAX_SIDE // 8, raw.shape[-2:]
            if max(h, w) > most:
                size = (max(1, round(h * most / max(h, w))), max(1, round(w * most / max(h, w))))
                raw = torch.nn.functional.interpolate(raw[None].float(), size=size, mode="area")[0]
            with torch.no_grad():
                out = vae.decode(raw[None].to(vae.device, vae.dtype)).sample[0]
            rgb = (out.float().cpu().permute(1, 2, 0) + 1) / 2
            return _image(rgb)
        return project(grid)


def source_of(preview_vae: str, *, tiny_folder: Path | None) -> str:
    """Where to load a model's ``preview_vae`` from: ``"tiny"`` is the offline build's folder."""
    if preview_vae == "tiny":
        if tiny_folder is None:
            raise ValueError('preview_vae = "tiny" needs the tiny build folder')
        return str(tiny_folder)
    return preview_vae
