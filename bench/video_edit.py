"""Benchmark the video edits: restyle seconds per frame, and Smooth (×2 interpolation) and
Upscale (×2 super-resolution over frames) seconds per second of video; plus what sampling an
input clip costs in memory.

Usage: python bench/video_edit.py [--models tiny] [--device cpu] [--size 256x144] [--seconds 2]
           [--out bench/results/video_edit.json]

With the tiny set, restyle times reelbot's path through WanVideoToVideoPipeline on random
weights, not a real model; Smooth is ffmpeg's minterpolate (the same on any machine); Upscale
is the tiny ×4 compact network (8 features) on the CPU, realesr-general-x4v3 on a GPU with
``--models default``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio_ffmpeg
from rich.console import Console
from rich.table import Table

from reelbot.catalog import Task, load_catalog
from reelbot.clips import restyle_params
from reelbot.generation.runner import Runner
from reelbot.generation.video_edit import restyle, smooth, upscale_video
from reelbot.jobs import resolve
from reelbot.video_inputs import load_input_video, probe_clip


@dataclass
class Row:
    """One edit on one clip."""

    case: str
    input: str
    output: str
    frames_in: int
    frames_out: int
    seconds: float
    per: str
    """What ``cost`` is per: a frame, or a second of video."""
    cost: float


def _clip(width: int, height: int, seconds: float, fps: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)],
            check=True,
        )  # fmt: skip
        return out.read_bytes()


_MEMORY = """
import resource, sys, tracemalloc
from reelbot import frames
from reelbot.video_inputs import VideoLimits, load_input_video

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0

data = open(sys.argv[1], "rb").read()
frames.SPILL_BYTES = int(sys.argv[3])
before = anon_kb()
tracemalloc.start()
video = load_input_video(data, frames=int(sys.argv[2]), fps=24, width=1280, height=704,
                         limits=VideoLimits(max_duration_s=900))
print(tracemalloc.get_traced_memory()[1], anon_kb() - before,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _sampling_memory(frames: int, *, spill: bool) -> dict[str, float]:
    """Peak memory of sampling ``frames`` frames at 1280x704 from a 1080p clip (own process),
    into memory or (``spill``) into a temporary file however few."""
    data = _clip(1920, 1080, frames / 24 + 1, 24)
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY, f.name, str(frames), "0" if spill else str(1 << 40)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    peak, anon_kb, child_kb = (int(v) for v in out.stdout.split())
    return {
        "frames": frames,
        "spilled": spill,
        "frames_mb": frames * 1280 * 704 * 3 / 2**20,
        "python_peak_mb": peak / 2**20,
        "anon_growth_mb": anon_kb / 1024,
        "ffmpeg_max_rss_mb": child_kb / 1024,
        "seconds": seconds,
    }


def main() -> None:
    """Run each edit once to warm up, then time ``--repeat`` runs; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="256x144", help="clip WIDTHxHEIGHT")
    parser.add_argument("--seconds", type=float, default=2.0, help="clip length")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/video_edit.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    catalog = load_catalog(args.models)
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "reelbot-bench-data"
    runner = Runner(catalog, data_dir=data_dir, device=args.device)
    data = _clip(width, height, args.seconds, args.fps)
    info = probe_clip(data)
    video = load_input_video(
        data, frames=info.frames, fps=args.fps, width=width, height=height
    ).frames
    duration = len(video) / args.fps

    params = resolve(
        Task.RESTYLE, "watercolor", catalog, has_video=True, image_size=(width, height)
    )
    params = restyle_params(params, catalog.get(params.model), info)

    def run_restyle() -> int:
        return len(restyle(runner, params, data).output.frames)

    def run_smooth() -> int:
        return len(smooth(video, args.fps).frames)

    def run_upscale() -> int:
        return len(upscale_video(runner, video, args.fps).frames)

    size = f"{width}x{height}"
    cases = [
        ("restyle", run_restyle, f"{params.width}x{params.height}", params.frames, "frame"),
        ("smooth x2", run_smooth, size, len(video), "video s"),
        ("upscale x2", run_upscale, f"{2 * width}x{2 * height}", len(video), "video s"),
    ]
    rows: list[Row] = []
    for name, fn, output, frames_in, per in cases:
        made = fn()  # warm-up: loads the model, builds the pipeline
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best = min(times)
        unit = frames_in if per == "frame" else (duration if name != "restyle" else 1)
        rows.append(Row(name, size, output, frames_in, made, best, per, best / unit))
    memory = [_sampling_memory(n, spill=s) for n in (49, 121) for s in (False, True)]

    table = Table(title=f"video edits, {args.models} on {runner.device}")
    for column in ("edit", "input", "output", "frames in", "frames out", "s", "cost"):
        table.add_column(column, justify="right" if column not in ("edit",) else "left")
    for r in rows:
        table.add_row(
            r.case, r.input, r.output, str(r.frames_in), str(r.frames_out),
            f"{r.seconds:.2f}", f"{r.cost:.3f} s/{r.per}",
        )  # fmt: skip
    mem = Table(title="sampling a 1080p clip to 1280x704 (own process)")
    columns = ("frames", "spilled", "frames MB", "python peak MB", "anon growth MB")
    for column in (*columns, "ffmpeg max RSS MB", "s"):
        mem.add_column(column, justify="right")
    for m in memory:
        mem.add_row(
            *(
                str(v) if isinstance(v, bool) else f"{v:.2f}" if k == "seconds" else f"{v:.0f}"
                for k, v in m.items()
            )
        )
    console = Console()
    console.print(table)
    console.print(mem)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "models": args.models,
                "device": runner.device,
                "machine": platform.processor() or platform.machine(),
                "clip": {"size": size, "seconds": duration, "fps": args.fps},
                "rows": [asdict(r) for r in rows],
                "sampling_memory": memory,
                "self_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
