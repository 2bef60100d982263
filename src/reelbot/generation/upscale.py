"""Super-resolution for ``/upscale``: the Real-ESRGAN compact network, read from its published
weights, run in overlapping tiles whose seams are blended.

Why this module loads the weights itself: ``spandrel`` (the library ComfyUI uses) is the
well-kept way to load such files, and ``load_sr`` uses its ``ModelLoader`` wherever it imports.
But ``import spandrel`` imports its whole architecture registry, and two of those architectures
(LaMa, RestoreFormer) import torchvision at module level; no torchvision build pairs with the
torch this project pins (2.13.0, CPU), so on such a worker spandrel cannot be imported at all.
The network below is SRVGGNetCompact (Real-ESRGAN's ``realesr-general-x4v3``,
``realesr-animevideov3``) with the published state-dict key names (``body.N.weight``), detected
from the keys as spandrel detects it; ``tests/unit/test_upscale.py`` loads one file through both
and checks they agree on the architecture, the scale and the output.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reelbot.errors import Cancelled, ConfigError

__all__ = [
    "SRNet",
    "SRVGGNetCompact",
    "Tile",
    "blend_tiles",
    "detect_architecture",
    "load_sr",
    "read_state_dict",
    "refine_tiles",
    "run_sr",
    "spandrel_module",
    "tiles_for",
    "weights_path",
]

log = logging.getLogger(__name__)

TileCallback = Callable[[int, int], None]
"""Called after each tile: (tiles done, tiles in all)."""


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network: convolutions at the input size, one pixel shuffle.

    The layout (``body`` = conv, PReLU, ``num_conv`` × (conv, PReLU), conv) and the residual of
    the nearest-upsampled input follow ``realesrgan/archs/srvgg_arch.py``, so the published
    state dicts load with their own key names.
    """

    def __init__(
        self,
        *,
        in_ch: int = 3,
        out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        scale: int = 4,
    ) -> None:
        """Build the layers; weights come from ``load_state_dict``."""
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, out_ch * scale * scale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in 0..1 → (B, C, H·scale, W·scale)."""
        out: torch.Tensor = x
        for layer in self.body:
            out = layer(out)
        shuffled: torch.Tensor = self.upsampler(out)
        return shuffled + F.interpolate(x, scale_factor=self.scale, mode="nearest")


@dataclass
class SRNet:
    """A loaded super-resolution network, its factor and how it was read."""

    module: nn.Module
    scale: int
    architecture: str
    loader: str
    """``spandrel`` or ``reelbot``."""

    def to(self, device: str) -> SRNet:
        """Move the network to ``device`` (in place) and return it."""
        self.module.to(device)
        return self


# -- reading weights --------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``.pth`` file (no pickled code: weights only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # Real-ESRGAN's training code saves {"params_ema": …} or {"params": …}.
    for wrapper in ("params_ema", "params"):
        if isinstance(state, Mapping) and wrapper in state:
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise ConfigError(f"upscaler weights {path.name}: not a state dict")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def detect_architecture(state: Mapping[str, torch.Tensor]) -> str:
    """The architecture a state dict belongs to, from its key names (as spandrel detects it)."""
    if "body.0.weight" in state and "body.1.weight" in state:
        return "Compact"
    known = "RealESRGAN Compact (body.N.weight)"
    raise ConfigError(f"upscaler weights: unknown architecture (supported here: {known})")


def _body_length(state: Mapping[str, torch.Tensor]) -> int:
    indices = [int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))]
    return max(indices) + 1


def _load_compact(state: Mapping[str, torch.Tensor]) -> SRNet:
    last = _body_length(state) - 1
    in_ch = int(state["body.0.weight"].shape[1])
    num_feat = int(state["body.0.weight"].shape[0])
    num_conv = (last - 2) // 2
    shuffle = int(state[f"body.{last}.bias"].shape[0])
    # The last conv makes out_ch · scale² channels; out_ch is in_ch for every published file.
    scale = round((shuffle / in_ch) ** 0.5)
    if in_ch * scale * scale != shuffle:
        raise ConfigError("upscaler weights: the last layer's size fits no scale")
    net = SRVGGNetCompact(
        in_ch=in_ch, out_ch=in_ch, num_feat=num_feat, num_conv=num_conv, scale=scale
    )
    net.load_state_dict(dict(state), strict=True)
    return SRNet(net.eval(), scale, "Compact", "reelbot")


@cache
def spandrel_module() -> Any | None:
    """spandrel's module where it imports (it needs torchvision), else None; asked once."""
    try:
        import spandrel  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return None
    return spandrel


def load_sr(path: Path, *, use_spandrel: bool = True) -> SRNet:
    """Load a super-resolution network: through spandrel where it imports, else our loader."""
    lib = spandrel_module() if use_spandrel else None
    if lib is not None:
        descriptor = lib.ModelLoader().load_from_file(str(path))
        module = descriptor.model.eval()
        return SRNet(module, int(descriptor.scale), str(descriptor.architecture.id), "spandrel")
    state = read_state_dict(path)
    detect_architecture(state)
    return _load_compact(state)


def weights_path(weights: str, data_dir: Path) -> Path:
    """Where an upscaler's weights are: ``hf:OWNER/REPO/FILE`` or an ``https://`` URL (each
    downloaded into the data folder on first use) or a local file (``tiny``: ``Runner`` builds
    it with ``tiny.ensure_sr_built``)."""
    if weights.startswith("hf:"):
        owner, repo, *rest = weights[3:].split("/")
        if not rest:
            raise ConfigError(f"upscaler weights {weights!r}: use hf:OWNER/REPO/FILE")
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(f"{owner}/{repo}", "/".join(rest), cache_dir=str(data_dir / "hub"))
        )
    if weights.startswith("https://"):
        # A release asset (Real-ESRGAN publishes its weights on GitHub): fetched once.
        target = data_dir / "upscalers" / weights.rsplit("/", 1)[-1]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.part")
            torch.hub.download_url_to_file(weights, str(staged), progress=False)
            staged.replace(target)
        return target
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"upscaler weights {weights!r}: file not found")
    return path


# -- tiles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One tile of an image: its box (left, top, right, bottom) in the image's pixels."""

    left: int
    top: int
    right: int
    bottom: int


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]  # the last tile ends at the edge


def tiles_for(
    width: int, height: int, tile: int, overlap: int, tile_height: int | None = None
) -> list[Tile]:
    """Tiles of at most ``tile`` × ``tile_height`` (default: square) covering the image,
    neighbours sharing ``overlap`` pixels or more (the last row and column are moved in to end
    at the edge)."""
    tall = tile_height or tile
    return [
        Tile(x, y, min(width, x + tile), min(height, y + tall))
        for y in _starts(height, tall, overlap)
        for x in _starts(width, tile, overlap)
    ]


def _ramp(length: int, fade_start: bool, fade_end: bool, overlap: int) -> torch.Tensor:
    """Weights along one side of a tile: 0 over the outer half of a shared edge, rising to 1.

    The outer half is where a network's view is cut off by the tile's edge; the neighbour
    covers it with full weight, so only pixels both tiles see whole are blended.
    """
    index = torch.arange(length, dtype=torch.float32) + 0.5
    weight = torch.ones(length)
    half = overlap / 2
    if half <= 0:
        return weight
    if fade_start:
        weight = torch.minimum(weight, ((index - half) / half).clamp(0, 1))
    if fade_end:
        weight = torch.minimum(weight, ((length - index - half) / half).clamp(0, 1))
    return weight.clamp_min(1e-4)


def blend_tiles(
    size: tuple[int, int],
    tiles: list[Tile],
    outputs: list[torch.Tensor],
    *,
    scale: int,
    overlap: int,
) -> torch.Tensor:
    """Put tile outputs (C, h·scale, w·scale) together into one (C, H·scale, W·scale) tensor."""
    width, height = size
    channels = outputs[0].shape[0]
    acc = torch.zeros(channels, height * scale, width * scale)
    total = torch.zeros(1, height * scale, width * scale)
    for tile, out in zip(tiles, outputs, strict=True):
        rows = _ramp(out.shape[1], tile.top > 0, tile.bottom < height, overlap * scale)
        cols = _ramp(out.shape[2], tile.left > 0, tile.right < width, overlap * scale)
        mask = rows[:, None] * cols[None, :]
        ys, xs = (
            slice(tile.top * scale, tile.bottom * scale),
            slice(tile.left * scale, tile.right * scale),
        )
        acc[:, ys, xs] += out.float().cpu() * mask
        total[:, ys, xs] += mask
    return acc / total


def _to_tensor(image: Image.Image) -> torch.Tensor:
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float().div(255)


def _to_image(tensor: torch.Tensor) -> Image.Image:
    array = tensor.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(array.numpy(), "RGB")


def run_sr(
    net: SRNet,
    image: Image.Image,
    *,
    device: str,
    tile: int = 256,
    overlap: int = 32,
    on_tile: TileCallback | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """The image at the network's scale, run tile by tile on ``device``, seams blended.

    A cancel is checked before each tile; ``on_tile`` is called after each.
    """
    source = _to_tensor(image)
    tiles = tiles_for(image.width, image.height, tile, overlap)
    outputs = []
    with torch.inference_mode():
        for done, box in enumerate(tiles, start=1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            part = source[:, box.top : box.bottom, box.left : box.right].unsqueeze(0)
            outputs.append(net.module(part.to(device))[0].float().cpu())
            if on_tile is not None:
                on_tile(done, len(tiles))
    return _to_image(blend_tiles(image.size, tiles, outputs, scale=net.scale, overlap=overlap))


def refine_tiles(
    image: Image.Image,
    tiles: list[Tile],
    refine: Callable[[Image.Image, int], Image.Image],
    *,
    overlap: int,
    on_tile: TileCallback | None = None,
    cancel: threading.Event | None = None,
) -> Image.Image:
    """A hires fix: ``refine`` (an img2img pass, given the tile and its index) over each tile
    of ``image``, the tiles blended back together like the super-resolution tiles."""
    parts = []
    for done, box in enumerate(tiles, start=1):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        crop = image.crop((box.left, box.top, box.right, box.bottom))
        out = refine(crop, done - 1)
        if out.size != crop.size:
            out = out.resize(crop.size, Image.Resampling.LANCZOS)
        parts.append(_to_tensor(out))
        if on_tile is not None:
            on_tile(done, len(tiles))
    return _to_image(blend_tiles(image.size, tiles, parts, scale=1, overlap=overlap))
