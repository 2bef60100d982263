"""Benchmark /upscale: seconds per output megapixel of the tiled super-resolution pass (×2, ×4)
and of --creative (super-resolution, then the image model's img2img over tiles).

Usage: python bench/upscale.py [--models tiny] [--device cpu] [--size 256x192]
           [--out bench/results/upscale.json]

With the tiny set this measures reelbot's tiling and blending on random weights (the network
is 8 features wide), not a real upscaler; on a GPU with ``--models default`` it times
realesr-general-x4v3 and Z-Image-Turbo's img2img.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from reelbot.catalog import Task, load_catalog
from reelbot.generation.runner import Runner
from reelbot.jobs import Options, resolve


@dataclass
class Row:
    """One kind of upscale at one input size."""

    case: str
    input: str
    output: str
    tiles: int
    seconds: float
    s_per_mp: float


def _image(width: int, height: int) -> Image.Image:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def main() -> None:
    """Run each case once to warm up, then time ``--repeat`` runs; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="256x192", help="input WIDTHxHEIGHT")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/upscale.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    catalog = load_catalog(args.models)
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "reelbot-bench-data"
    runner = Runner(catalog, data_dir=data_dir, device=args.device)
    image = _image(width, height)
    rows: list[Row] = []
    cases = [("x2", Options(scale=2)), ("x4", Options(scale=4)), ("x2 creative", None)]
    for name, options in cases:
        options = options or Options(scale=2, creative=True)
        params = resolve(
            Task.UPSCALE,
            "a detailed photo" if options.creative else "",
            catalog,
            explicit=options,
            has_image=True,
            image_size=image.size,
        )
        tiles: list[int] = []
        runner.generate(params, image, on_progress=lambda p, seen=tiles: seen.append(p.total))
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            out = runner.generate(params, image)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        mp = out.frames[0].width * out.frames[0].height / 1e6
        rows.append(
            Row(
                name,
                f"{width}x{height}",
                f"{out.frames[0].width}x{out.frames[0].height}",
                tiles[-1] if tiles else 0,
                round(seconds, 3),
                round(seconds / mp, 3),
            )
        )
    table = Table(title=f"/upscale, {args.models} on {runner.device} (best of {args.repeat})")
    for column in ("case", "input", "output", "tiles", "seconds", "s / output MP"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for r in rows:
        table.add_row(
            r.case, r.input, r.output, str(r.tiles), f"{r.seconds:.3f}", f"{r.s_per_mp:.3f}"
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "models": args.models,
        "device": runner.device,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rows": [asdict(r) for r in rows],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
