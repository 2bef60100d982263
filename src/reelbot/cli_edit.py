"""``reelbot generate`` for the image edits: inpaint, zoom, pan, blend and describe, locally and
without Redis, through the same ``Runner.generate`` as the worker."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reelbot.catalog import Task, load_catalog
from reelbot.cli_io import fail, read_file
from reelbot.config import Settings
from reelbot.inputs import load_input_image
from reelbot.jobs import Options, check_image_count, resolve
from reelbot.masks import load_mask

__all__ = ["EDITS", "check", "is_edit", "run"]

EDITS = {
    "inpaint": Task.INPAINT,
    "zoom": Task.INPAINT,
    "pan": Task.INPAINT,
    "blend": Task.BLEND,
    "describe": Task.DESCRIBE,
}
"""``reelbot generate`` tasks that this module runs, and the task each one is."""


def is_edit(args: argparse.Namespace) -> bool:
    """Whether ``reelbot generate`` was asked for an image edit (this module's work)."""
    return args.task in EDITS


def check(args: argparse.Namespace) -> str | None:
    """What is wrong with the edit flags for ``args.task`` (None: nothing); it also makes
    ``args.image`` the one image the other tasks take (``--image`` may be given up to 4 times)."""
    images: list[Path] = list(args.image or [])
    args.images = images
    args.image = images[-1] if images else None
    task = args.task
    if len(images) > 1 and task != "blend":
        return "--image is given once, except for blend (2 to 4 images)"
    if args.mask is not None and task != "inpaint":
        return "--mask only applies to inpaint"
    if args.direction is not None and task != "pan":
        return "--direction only applies to pan"
    if args.out is None and task != "describe":
        return "the following arguments are required: --out"
    if task == "zoom" and args.scale is not None and args.scale not in (1.5, 2):
        return "zoom: --scale 1.5 or 2"
    if task != "zoom" and args.scale is not None and args.scale not in (2, 4):
        return "--scale 1.5 only applies to zoom; upscale takes 2 or 4"
    if task == "pan" and args.direction is None:
        return "pan needs --direction left, right, up or down"
    return None


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run one edit and write its image to ``--out`` (describe prints its suggestions)."""
    task = EDITS[args.task]
    out: Path | None = args.out
    if out is not None and out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return fail(f"--out {out}: {args.task} makes an image; name the file .png or .jpg")
    if not args.images:
        return fail(f"{args.task} needs --image")
    check_image_count(task, len(args.images))
    images = [load_input_image(read_file(path, "--image")) for path in args.images]
    mask = None
    if args.mask is not None:
        mask = load_mask(read_file(args.mask, "--mask"), images[0].size)
    elif args.task == "inpaint":
        return fail("inpaint needs --mask (white = the area to change)")
    explicit = Options(
        zoom=float(args.scale or 2) if args.task == "zoom" else None,
        pan=args.direction if args.task == "pan" else None,
    )
    catalog = load_catalog(settings.models, settings.styles_file)
    params = resolve(
        task,
        args.prompt,
        catalog,
        explicit=explicit,
        has_image=True,
        default_seed=int(time.time_ns() % (2**32)),
        default_count=1 if task == Task.DESCRIBE else settings.default_count,
        image_size=images[0].size,
    )

    from rich.console import Console

    from reelbot.generation.gpu import GpuOptions
    from reelbot.generation.grid import compose_grid
    from reelbot.generation.media import encode_image
    from reelbot.generation.runner import Runner

    console = Console(stderr=True)
    runner = Runner(
        catalog,
        data_dir=settings.data_dir,
        device=settings.device,
        gpu=GpuOptions.from_settings(settings),
    )
    with console.status(f"{params.model}: {args.task}"):
        output = runner.generate(params, images[0], mask=mask, references=images[1:])
    if task == Task.DESCRIBE:
        for line in output.texts:
            print(line)
        return 0
    assert out is not None
    shown = compose_grid(output.frames) if params.count > 1 else output.frames[0]
    media = encode_image(shown, max_bytes=args.max_bytes)
    if media.ext != out.suffix.lower().lstrip(".").replace("jpeg", "jpg"):
        out = out.with_suffix(f".{media.ext}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(media.data)
    console.print(f"[bold]{out}[/bold]  {media.width}x{media.height}", highlight=False)
    print(f"seed {params.seed}")
    print(f"{params.prompt} {params.summary()}")
    return 0
