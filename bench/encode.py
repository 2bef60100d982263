"""Benchmark video encoding: reelbot's encode_video against one plain ffmpeg call, and budget fits.

Usage: python bench/encode.py [--quick | --large] [--out bench/results/encode.json]

Two questions, on synthetic frames (a moving gradient with grain, and a panning 1/f texture
that has the statistics of natural images):

1. Overhead: the wall time of ``encode_video`` with a budget that the first rung fits, against
   the bundled ffmpeg run directly on the same raw frames with the same settings (libx264,
   yuv420p, BT.709, the same CRF, ``+faststart``): one subprocess, frames on stdin.
2. Fitting: over budgets from 1.5x to 0.1x of each clip's CRF-18 size, plus the Discord and
   Telegram limits, how often the first full encode fits, and how much of the budget is used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from reelbot.generation.media import CRF_LADDER, encode_video, x264_args

DISCORD = 10 * 1024 * 1024
TELEGRAM = 50 * 1024 * 1024
FPS = 16.0


@dataclass
class TimingRow:
    """One clip and budget: encode_video against one ffmpeg call at the CRF it ended on."""

    clip: str
    case: str
    frames: int
    crf: int
    attempts: int
    reelbot_s: float
    ffmpeg_s: float
    ratio: float
    cpu_ratio: float
    bytes: int
    runs: int


@dataclass
class FitRow:
    """One clip and one budget: what encode_video did to fit it."""

    clip: str
    content: str
    budget: int
    budget_label: str
    bytes: int
    attempts: int
    crf: int | None
    width: int
    height: int
    seconds: float


def gradient(n: int, h: int, w: int, noise: float, seed: int = 0) -> NDArray[np.uint8]:
    """A colour gradient drifting 3 px a frame, with Gaussian grain of ``noise`` levels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        ph = 3.0 * t
        f = np.stack(
            [
                128 + 100 * np.sin((x + ph) / w * 2 * np.pi),
                128 + 100 * np.sin((y - ph) / h * 2 * np.pi),
                128 + 100 * np.cos((x + y + 2 * ph) / (w + h) * 2 * np.pi),
            ],
            axis=-1,
        )
        if noise:
            f += rng.normal(0, noise, (h, w, 1)).astype(np.float32)
        out[t] = np.clip(f, 0, 255)
    return out


def texture(n: int, h: int, w: int, seed: int = 0) -> NDArray[np.uint8]:
    """A 1/f random colour field panned 2 px right and 1 px down a frame."""
    rng = np.random.default_rng(seed)
    pad = 2 * n + 8
    hh, ww = h + pad, w + pad
    fy = np.fft.fftfreq(hh)[:, None]
    fx = np.fft.rfftfreq(ww)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    planes = []
    for _ in range(3):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f
        spec[0, 0] = 0
        p = np.fft.irfft2(spec, s=(hh, ww))
        planes.append((p - p.min()) / (np.ptp(p) + 1e-9) * 255)
    big = np.stack(planes, axis=-1).astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        out[t] = big[t : t + h, 2 * t : 2 * t + w]
    return out


CONTENT = {
    "gradient": lambda n, h, w: gradient(n, h, w, 0.0),
    "gradient+grain4": lambda n, h, w: gradient(n, h, w, 4.0),
    "texture pan": texture,
}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg): immune to busy neighbours."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def direct_ffmpeg(frames: NDArray[np.uint8], crf: int) -> tuple[float, float, int]:
    """The baseline: one ffmpeg call with encode_video's settings, raw frames on stdin.

    Returns wall seconds, CPU seconds and bytes.
    """
    _, h, w, _ = frames.shape
    raw = frames.tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.mp4")
        args = x264_args(w, h, FPS, w - w % 2, h - h % 2, crf, out)
        cpu, start = cpu_seconds(), time.perf_counter()
        subprocess.run(args, input=raw, check=True, capture_output=True)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        return elapsed, cpu, Path(out).stat().st_size


def timing(label: str, frames: NDArray[np.uint8], runs: int, budget: int, case: str) -> TimingRow:
    """Interleave the two, and keep each one's best run: neighbours on the machine only add."""
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    res = None
    for _ in range(runs):
        cpu, start = cpu_seconds(), time.perf_counter()
        res = encode_video(frames, fps=FPS, max_bytes=budget)
        ours.append((time.perf_counter() - start, cpu_seconds() - cpu))
        assert res.quality is not None
        theirs.append(direct_ffmpeg(frames, res.quality)[:2])
    assert res is not None and res.quality is not None
    a, b = min(w for w, _ in ours), min(w for w, _ in theirs)
    return TimingRow(
        label, case, len(frames), res.quality, res.attempts, a, b, a / b,
        min(c for _, c in ours) / min(c for _, c in theirs), len(res.data), runs,
    )  # fmt: skip


def fits(label: str, content: str, frames: NDArray[np.uint8], factors: list[float]) -> list[FitRow]:
    """encode_video at budgets relative to the clip's own CRF-18 size, and the platform limits."""
    size18 = direct_ffmpeg(frames, CRF_LADDER[0])[2]
    budgets = [(int(size18 * f), f"{f:g}x CRF18") for f in factors]
    budgets += [(DISCORD, "Discord 10 MiB"), (TELEGRAM, "Telegram 50 MiB")]
    rows = []
    for budget, name in budgets:
        start = time.perf_counter()
        try:
            res = encode_video(frames, fps=FPS, max_bytes=budget)
        except ValueError:
            # Below the container's own size (~1.5 KB): refused after the downscale steps.
            rows.append(FitRow(label, content, budget, name, 0, 0, None, 0, 0, 0.0))
            continue
        elapsed = time.perf_counter() - start
        assert len(res.data) <= budget
        rows.append(
            FitRow(
                label,
                content,
                budget,
                name,
                len(res.data),
                res.attempts,
                res.quality,
                res.width,
                res.height,
                elapsed,
            )
        )
    return rows


def main() -> None:
    """Run the benchmark, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small clips, fewer budgets")
    parser.add_argument("--out", type=Path, default=Path("bench/results/encode.json"))
    parser.add_argument("--runs", type=int, default=None, help="timing repeats per clip")
    parser.add_argument(
        "--large", action="store_true", help="add 1280x704x121 (minutes on a small CPU)"
    )
    args = parser.parse_args()

    sizes = [(9, 64, 64), (33, 512, 512)]
    if not args.quick:
        sizes.append((81, 480, 832))
    if args.large:
        sizes.append((121, 704, 1280))
    factors = [1.5, 0.7, 0.3, 0.1] if args.quick else [1.5, 1.0, 0.7, 0.5, 0.3, 0.15, 0.1]
    runs = args.runs or (2 if args.quick else 3)
    console = Console(width=120)

    timings: list[TimingRow] = []
    fit_rows: list[FitRow] = []
    for n, h, w in sizes:
        label = f"{w}x{h}x{n}"
        console.log(f"{label}: timing")
        grain = gradient(n, h, w, 4.0)
        timings.append(timing(label, grain, runs, TELEGRAM * 4, "fits CRF 18"))
        size18 = direct_ffmpeg(grain, CRF_LADDER[0])[2]
        timings.append(timing(label, grain, runs, size18 // 2, "0.5x CRF-18 size"))
        for content, make in CONTENT.items():
            # The largest clip takes minutes per content on a small CPU: two budgets only.
            use = factors if w * h * n < 50_000_000 else [1.0, 0.3]
            console.log(f"{label}: fitting {content}")
            fit_rows += fits(label, content, make(n, h, w), use)

    t = Table(
        title="encode_video vs one ffmpeg call at the same CRF (gradient+grain4, best of runs)"
    )
    for col in (
        "clip",
        "budget",
        "CRF",
        "tries",
        "reelbot s",
        "ffmpeg s",
        "ratio",
        "CPU ratio",
        "MiB",
    ):
        t.add_column(col, justify="right")
    for r in timings:
        t.add_row(
            r.clip, r.case, str(r.crf), str(r.attempts), f"{r.reelbot_s:.2f}",
            f"{r.ffmpeg_s:.2f}", f"{r.ratio:.3f}", f"{r.cpu_ratio:.3f}", f"{r.bytes / 2**20:.2f}",
        )  # fmt: skip
    console.print(t)

    f = Table(title="Budget fits")
    for col in ("clip", "content", "budget", "KiB", "used", "tries", "CRF", "size", "s"):
        f.add_column(col, justify="right")
    for r in fit_rows:
        if not r.attempts:
            f.add_row(r.clip, r.content, r.budget_label, f"{r.budget / 1024:.0f}", "no fit")
            continue
        f.add_row(
            r.clip, r.content, r.budget_label, f"{r.budget / 1024:.0f}",
            f"{r.bytes / r.budget:.0%}", str(r.attempts), str(r.crf),
            f"{r.width}x{r.height}", f"{r.seconds:.2f}",
        )  # fmt: skip
    console.print(f)

    fitted = [r for r in fit_rows if r.attempts]
    first = sum(r.attempts == 1 for r in fitted)
    tight = [r for r in fitted if r.budget_label.endswith("CRF18") and r.budget_label[0] != "1"]
    tight_first = sum(r.attempts == 1 for r in tight)
    summary = {
        "first_try_share": first / len(fitted),
        "first_try": f"{first}/{len(fitted)}",
        "impossible_budgets": len(fit_rows) - len(fitted),
        "first_try_share_below_crf18": tight_first / len(tight) if tight else None,
        "median_budget_used": statistics.median(r.bytes / r.budget for r in fitted),
        "max_ratio_vs_ffmpeg_crf18": max(r.ratio for r in timings if r.case.startswith("fits")),
        "max_ratio_vs_ffmpeg_probed": max(r.ratio for r in timings if r.case.startswith("0.5")),
        "max_cpu_ratio_crf18": max(r.cpu_ratio for r in timings if r.case.startswith("fits")),
        "max_cpu_ratio_probed": max(r.cpu_ratio for r in timings if r.case.startswith("0.5")),
    }
    console.print(
        f"first try fits: {summary['first_try']} ({summary['first_try_share']:.0%}); "
        f"budgets below the CRF-18 size: {tight_first}/{len(tight)}; "
        f"time vs ffmpeg, worst: {summary['max_ratio_vs_ffmpeg_crf18']:.3f} when CRF 18 fits, "
        f"{summary['max_ratio_vs_ffmpeg_probed']:.3f} when the CRF is probed (CPU time: "
        f"{summary['max_cpu_ratio_crf18']:.3f} and {summary['max_cpu_ratio_probed']:.3f})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "fps": FPS,
                "timings": [asdict(r) for r in timings],
                "fits": [asdict(r) for r in fit_rows],
                "summary": summary,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
