"""Benchmark quota admission: checks per second and the latency it adds to a submit.

Usage: python bench/quota.py [--quick] [--n 2000] [--clients 32] [--out bench/results/quota.json]

On a private Valkey (or redis-server) started here, the same requests are submitted through
``JobQueue.submit`` twice: once as shipped (the limits lookup, then one Lua script that checks
the duplicate, the global cap and every budget and reserves), and once with the quota step cut
out (no lookup; the script without the quota fragment), which is the submit before quotas.
Sequential submits give the latency per submit (p50/p99); ``--clients`` concurrent submitters
give admission checks per second. Half of the users are over budget, so refusals are measured
as well as admissions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reelbot.catalog import Task, load_catalog
from reelbot.config import Settings
from reelbot.errors import QuotaExceeded
from reelbot.governance.quotas import RESERVE_LUA, Limits
from reelbot.jobs import GenerationRequest, ReplyAddress, Requester
from reelbot.queue import submit as submit_module
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect

_NO_QUOTA = "local qscore = tonumber(ARGV[3])\n"


@dataclass
class Row:
    """One mode: latency of sequential submits and throughput of concurrent ones."""

    mode: str
    submits: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    checks_per_s: float
    refused: int


def request(i: int, users: int) -> GenerationRequest:
    """The i-th request, from one of ``users`` users in one of 8 servers."""
    user = str(i % users)
    requester = Requester(platform="discord", user_id=user, server_id=str(i % 8))
    return GenerationRequest(
        task=Task.IMAGINE,
        text=f"a fox number {i}",
        requester=requester,
        reply=ReplyAddress(platform="discord", channel_id="c"),
        source_id=f"bench-{time.monotonic_ns()}-{i}",
    )


def without_quotas(queue: JobQueue) -> None:
    """Cut the quota step out of a queue: no limits lookup, no quota fragment in the script."""
    queue._submit = queue.redis.register_script(
        submit_module._SUBMIT.replace(RESERVE_LUA, _NO_QUOTA)
    )
    unlimited = Limits(float("inf"), float("inf"), float("inf"), 0.0, float("inf"))

    async def admission(*_: Any, **__: Any) -> tuple[list[str], list[str], Limits]:
        return [""] * 7, [""] * 11, unlimited

    queue.quotas.admission = admission  # type: ignore[method-assign]


async def run_mode(queue: JobQueue, mode: str, n: int, clients: int, users: int) -> Row:
    """Sequential latency, then concurrent throughput, for one mode."""
    await queue.redis.flushall()
    latencies: list[float] = []
    refused = 0
    for i in range(n):
        start = time.perf_counter()
        try:
            await queue.submit(request(i, users), with_position=False)
        except QuotaExceeded:
            refused += 1
        latencies.append((time.perf_counter() - start) * 1000)
    await queue.redis.flushall()
    counter = iter(range(n))

    async def client() -> int:
        mine = 0
        for i in counter:
            try:
                await queue.submit(request(i, users), with_position=False)
            except QuotaExceeded:
                mine += 1
        return mine

    start = time.perf_counter()
    refusals = await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=100)
    return Row(
        mode=mode,
        submits=n,
        p50_ms=round(cuts[49], 3),
        p99_ms=round(cuts[98], 3),
        mean_ms=round(statistics.fmean(latencies), 3),
        checks_per_s=round(n / elapsed, 1),
        refused=refused + sum(refusals),
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Both modes on one private server."""
    catalog = load_catalog("tiny")
    cost = 0.02  # one tiny default image
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        # Budgets that half of the submits exceed: each user may spend what half its jobs cost.
        per_user = args.n // args.users
        settings = Settings(
            redis_url=server.url,
            models="tiny",
            data_dir=Path(tmp),
            max_queued=10 * args.n,
            quota_daily=cost * per_user / 2,
            quota_concurrent=10 * args.n,
            quota_queue=10 * args.n,
        )
        redis = connect(server.url, max_connections=args.clients + 4)
        try:
            rows = []
            for mode in ("without quotas", "with quotas"):
                queue = JobQueue(redis, settings, catalog)
                if mode == "without quotas":
                    without_quotas(queue)
                rows.append(await run_mode(queue, mode, args.n, args.clients, args.users))
        finally:
            await redis.aclose(close_connection_pool=True)
    base, quota = rows
    return {
        "bench": "quota",
        "machine": platform.platform(),
        "python": platform.python_version(),
        "n": args.n,
        "clients": args.clients,
        "users": args.users,
        "rows": [asdict(r) for r in rows],
        "added_p50_ms": round(quota.p50_ms - base.p50_ms, 3),
        "added_p99_ms": round(quota.p99_ms - base.p99_ms, 3),
    }


def main() -> None:
    """Parse arguments, run, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="submits per mode")
    parser.add_argument("--clients", type=int, default=32, help="concurrent submitters")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="300 submits per mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results/quota.json"))
    args = parser.parse_args()
    if args.quick:
        args.n = 300
    result = asyncio.run(main_async(args))
    table = Table(title=f"quota admission ({args.n} submits, {args.clients} clients)")
    for column in ("mode", "p50 ms", "p99 ms", "mean ms", "checks/s", "refused"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for row in result["rows"]:
        table.add_row(
            row["mode"],
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
            f"{row['mean_ms']:.3f}",
            f"{row['checks_per_s']:.0f}",
            str(row["refused"]),
        )
    console = Console()
    console.print(table)
    console.print(
        f"added per submit: p50 {result['added_p50_ms']:+.3f} ms, "
        f"p99 {result['added_p99_ms']:+.3f} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
