"""A grid of four in one pipeline call (``--n 4``) against four single calls, per image model.

    .venv/bin/python bench/grid.py [--models tiny] [--device cpu] [--repeats 3] [--out FILE]

Each case runs once to warm up, then ``--repeats`` times; the table shows medians. ``grid`` is
one ``Runner.generate`` of ``--n 4`` (four generators seeded seed … seed+3, what the worker
runs), ``4 singles`` the sum of four ``--n 1`` calls with those seeds, ``ratio`` grid / singles
(below 1: the grid is cheaper than four jobs in time; a grid is billed as four images either
way), ``best`` the same from the fastest run of each (steadier on a shared machine). Denoise
and decode only: the grid's composition and encode are the same for both.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/grid.py` puts bench/ first on sys.path, where a benchmark named like a standard
# module would shadow it for torch and everything else (see bench/generate.py).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import diffusers
import torch
import transformers
from rich.console import Console
from rich.table import Table

from reelbot.catalog import Task, load_catalog
from reelbot.generation.runner import Runner
from reelbot.jobs import resolve

COUNT = 4
SEED = 1


def _timed(runner: Runner, text: str) -> float:
    """Seconds of one pipeline call (denoise and decode) for the prompt with its flags."""
    params = resolve(Task.IMAGINE, text, runner.catalog)
    start = time.perf_counter()
    out = runner.generate(params)
    elapsed = time.perf_counter() - start
    assert len(out.frames) == params.count, (len(out.frames), params.count)
    return elapsed


def _bench_model(runner: Runner, model: str, repeats: int) -> dict[str, Any]:
    runner.preload(model)
    base = f"a red fox in the snow --model {model}"
    grid = f"{base} --seed {SEED} --n {COUNT}"
    singles = [f"{base} --seed {SEED + i} --n 1" for i in range(COUNT)]
    _timed(runner, grid), _timed(runner, singles[0])  # warm-up: lazy initialisation
    grid_s, singles_s = [], []
    for _ in range(repeats):
        grid_s.append(_timed(runner, grid))
        singles_s.append(sum(_timed(runner, text) for text in singles))
    params = resolve(Task.IMAGINE, grid, runner.catalog)
    grid_median, singles_median = statistics.median(grid_s), statistics.median(singles_s)
    return {
        "model": model,
        "size": f"{params.width}x{params.height}",
        "steps": params.steps,
        "count": COUNT,
        "grid_s": grid_median,
        "singles_s": singles_median,
        "ratio": grid_median / singles_median,
        "best_ratio": min(grid_s) / min(singles_s),
        "grid_runs_s": grid_s,
        "singles_runs_s": singles_s,
    }


def main() -> None:
    """Run the benchmark, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny", help="tiny, default or a TOML file")
    parser.add_argument("--only", nargs="*", help="model names to run (default: every image one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench/results/grid.json"))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    catalog = load_catalog(args.models)
    models = [
        spec.name
        for spec in catalog.models.values()
        if Task.IMAGINE in spec.tasks and (not args.only or spec.name in args.only)
    ]
    console = Console(width=None if Console().is_terminal else 132)
    with tempfile.TemporaryDirectory(prefix="reelbot-bench-") as scratch:
        runner = Runner(catalog, data_dir=args.data_dir or Path(scratch), device=args.device)
        rows = []
        for model in models:
            rows.append(_bench_model(runner, model, args.repeats))
            runner.unload(model)

    table = Table(
        title=f"grid of {COUNT} vs {COUNT} single calls — {args.models} on {runner.device}"
    )
    columns = ("model", "size", "steps", "grid (1 call)", f"{COUNT} singles", "ratio", "best")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(
            row["model"], row["size"], str(row["steps"]), f"{row['grid_s'] * 1000:.0f} ms",
            f"{row['singles_s'] * 1000:.0f} ms", f"{row['ratio']:.2f}", f"{row['best_ratio']:.2f}",
        )  # fmt: skip
    console.print(table)
    result = {
        "benchmark": "grid",
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
