"""Benchmark the NSFW classifier on the CPU: time per image, and per second of video.

Usage: python bench/safety.py [--quick] [--threads N] [--out bench/results/safety.json]

On synthetic pictures (noise, gradients, shapes; nothing explicit): the one-off load, one
image at each output size (the classifier resizes to 224², so the size costs only the resize),
and a video's sampled frames (first, last, one a second) at the video models' sizes. A video
second costs one frame's score, whatever its fps, because of that sampling. The worker runs
this in a thread after the pipeline call, beside the encode, while the GPU runs the next job.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from reelbot.generation.safety import NsfwClassifier, sample_indices, score_frames


@dataclass
class Row:
    """One case: what was scored and how long it took (median of runs)."""

    case: str
    size: str
    frames: int
    scored: int
    median_ms: float
    per_unit_ms: float
    unit: str
    runs: int


def synthetic(width: int, height: int, seed: int) -> Image.Image:
    """A textured picture: smooth colour fields with grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(x / (17 + seed % 7) + seed),
            127 + 100 * np.cos(y / 23 + seed / 3),
            127 + 100 * np.sin((x + y) / 31),
        ],
        axis=-1,
    )
    grain = rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def timed(fn: object, runs: int) -> list[float]:
    """Wall seconds of each call."""
    assert callable(fn)
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    """Run the cases, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and sizes")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("bench/results/safety.json"))
    args = parser.parse_args()
    runs = 3 if args.quick else 10

    started = time.perf_counter()
    classifier = NsfwClassifier(threads=args.threads)
    load_s = time.perf_counter() - started

    rows: list[Row] = []
    image_sizes = (
        [(512, 512), (1024, 1024)] if args.quick else [(512, 512), (1024, 1024), (1536, 1024)]
    )
    for w, h in image_sizes:
        image = synthetic(w, h, 1)
        times = timed(lambda im=image: classifier([im]), runs)
        ms = statistics.median(times) * 1000
        rows.append(Row("image", f"{w}x{h}", 1, 1, ms, ms, "image", runs))

    videos = (
        [(832, 480, 16, 5)]
        if args.quick
        else [(832, 480, 16, 5), (1280, 720, 24, 5), (832, 480, 16, 10)]
    )
    for w, h, fps, seconds in videos:
        count = fps * seconds + 1
        frames = [synthetic(w, h, i % 4) for i in range(count)]
        scored = len(sample_indices(count, fps))
        times = timed(lambda fr=frames, f=fps: score_frames(classifier, fr, f), runs)
        ms = statistics.median(times) * 1000
        rows.append(
            Row("video", f"{w}x{h}@{fps}", count, scored, ms, ms / seconds, "s of video", runs)
        )

    table = Table(title=f"NSFW classifier on the CPU (load {load_s * 1000:.0f} ms)")
    for column in ("case", "size", "frames", "scored", "median ms", "ms per unit", "unit"):
        table.add_column(column, justify="right" if column not in ("case", "unit") else "left")
    for r in rows:
        table.add_row(
            r.case,
            r.size,
            str(r.frames),
            str(r.scored),
            f"{r.median_ms:.1f}",
            f"{r.per_unit_ms:.1f}",
            r.unit,
        )
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "threads": args.threads,
                },
                "load_ms": round(load_s * 1000, 1),
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n",
        "utf-8",
    )


if __name__ == "__main__":
    main()
