"""Per-stage timings of every model and task in a model set: build, load, denoise, decode, encode.

    .venv/bin/python bench/generate.py [--models tiny] [--repeats 3] [--out FILE]

``build`` is the one-off offline build of a tiny model (0 when it was already on disk), ``load``
is ``from_pretrained`` plus the move to the device, and ``denoise``/``decode``/``encode`` are
medians over ``--repeats`` runs after one warm-up run (the first call pays lazy initialisation).
Encoding uses ``reelbot.generation.media`` when it is importable and is skipped otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/generate.py` puts bench/ first on sys.path, where a benchmark named like a
# standard module (bench/queue.py) would shadow it for torch and everything else.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import diffusers
import torch
import transformers
from PIL import Image
from rich.console import Console
from rich.table import Table

from reelbot.catalog import ModelSpec, load_catalog
from reelbot.generation import tiny
from reelbot.generation.runner import GenerationOutput, Runner
from reelbot.jobs import resolve

# Discord's default attachment limit: a budget every result must fit.
MAX_BYTES = 10 * 1024 * 1024

Encoder = Callable[[GenerationOutput], int]


def _encoder() -> Encoder | None:
    """A function returning encoded bytes, or None while media.py is not there yet."""
    try:
        from reelbot.generation.media import encode_image, encode_video
    except ImportError:
        return None

    def encode(out: GenerationOutput) -> int:
        if out.fps is None:
            return len(encode_image(out.frames[0], max_bytes=MAX_BYTES).data)
        return len(encode_video(out.frames, fps=out.fps, max_bytes=MAX_BYTES).data)

    return encode


def _input_image(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width * 2, height * 2), (180, 60, 40))
    image.paste((30, 90, 200), (0, 0, width, height))
    return image


def _bench_model(
    runner: Runner, spec: ModelSpec, repeats: int, encode: Encoder | None
) -> list[dict[str, Any]]:
    build_s = 0.0
    if spec.source == "tiny" and not tiny.is_built(
        runner.data_dir / "tiny" / spec.family, spec.family
    ):
        start = time.perf_counter()
        tiny.ensure_built(spec.family, runner.data_dir)
        build_s = time.perf_counter() - start
    start = time.perf_counter()
    runner.preload(spec.name)
    load_s = time.perf_counter() - start
    rows = []
    catalog = runner.catalog
    for task in spec.tasks:
        params = resolve(
            task, f"a red fox in the snow --model {spec.name} --seed 1", catalog,
            has_image=task.needs_image,
        )  # fmt: skip
        image = _input_image(params.width, params.height) if task.needs_image else None
        runner.generate(params, image)  # warm-up
        stages: dict[str, list[float]] = {"denoise": [], "decode": [], "encode": []}
        size = 0
        for _ in range(repeats):
            out = runner.generate(params, image)
            stages["denoise"].append(out.timings["denoise"])
            stages["decode"].append(out.timings["decode"])
            if encode is not None:
                start = time.perf_counter()
                size = encode(out)
                stages["encode"].append(time.perf_counter() - start)
        rows.append(
            {
                "model": spec.name,
                "family": spec.family,
                "task": task.value,
                "pipeline": spec.pipelines[task],
                "size": f"{params.width}x{params.height}",
                "frames": params.frames,
                "steps": params.steps,
                "build_s": build_s,
                "load_s": load_s,
                **{f"{k}_s": statistics.median(v) if v else None for k, v in stages.items()},
                "encoded_bytes": size if encode is not None else None,
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} ms"


def main() -> None:
    """Run the benchmark, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny", help="tiny, default or a TOML file")
    parser.add_argument("--only", nargs="*", help="model names to run (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench/results/generate.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    # Keep the table readable: per-component load bars and dtype notes are not results.
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    catalog = load_catalog(args.models)
    encode = _encoder()
    # Wide enough for every column when the output is a pipe or a CI log.
    console = Console(width=None if Console().is_terminal else 132)
    with tempfile.TemporaryDirectory(prefix="reelbot-bench-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        runner = Runner(catalog, data_dir=data_dir, device=args.device)
        rows: list[dict[str, Any]] = []
        for spec in catalog.models.values():
            if args.only and spec.name not in args.only:
                continue
            rows.extend(_bench_model(runner, spec, args.repeats, encode))
            runner.unload(spec.name)

    table = Table(title=f"reelbot generate — {args.models} on {runner.device}")
    for column in ("model", "task", "size", "frames", "steps", "build", "load", "denoise",
                   "decode", "encode", "bytes"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "task") else "right")
    for row in rows:
        table.add_row(
            row["model"], row["task"], row["size"], str(row["frames"]), str(row["steps"]),
            _fmt(row["build_s"]), _fmt(row["load_s"]), _fmt(row["denoise_s"]),
            _fmt(row["decode_s"]), _fmt(row["encode_s"]),
            "—" if row["encoded_bytes"] is None else f"{row['encoded_bytes']:,}",
        )  # fmt: skip
    console.print(table)
    if encode is None:
        console.print("encode skipped: reelbot.generation.media is not importable yet")

    result = {
        "benchmark": "generate",
        "models": args.models,
        "device": runner.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
