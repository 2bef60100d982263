"""Scheduling benchmark: model loads and waits, arrival order against model affinity.

    python bench/scheduling.py [--jobs 200] [--load 0.6] [--wait 30] [--out FILE]

A simulation on a simulated clock (it runs in well under a second): two GPU workers, each a
24 GB card that holds one model at a time, each serving both queues as ``reelbot worker`` does
by default; 70 % of the jobs are Z-Image-Turbo images (2 s), 30 % Wan 2.2 5B videos (60 s); a
model switch costs a 20 s load. Both cards start with Z-Image loaded (what the worker's
start-up preload leaves). Each worker picks its next job with the worker's own chooser
(``reelbot.worker.affinity.choose``) when it becomes free: with ``wait_s = 0`` that is arrival
order, with ``--wait`` it is model affinity, three times: without peer information (a new job
that needs a load is left for ``LOAD_GRACE_S`` to a worker that has its model); with the
peers' heartbeats as the real worker reads them (each worker's model and expected end,
published every ``HEARTBEAT_S``, so up to 2 s stale; a job that needs a load is left for a peer
that has its model and is expected free before the job's deadline) but no run times; and with
the heartbeats and each model's run time, as the worker runs it (its heartbeat carries its
last measured call of each model). Run times are exact in the simulation, where the worker's
are measured (its expected end, from an estimate per credit, also is). The real worker claims
its next job up to 2 s before the running one ends; the simulation claims at the end, for
every policy alike.

Two arrival processes: Poisson arrivals at ``--load`` of the two cards' capacity counted
without any loads (0.6: 200 jobs in about 54 minutes), and a backlog (every job queued at
t = 0). A job's wait runs from submit until its denoising starts, so a load that a job
triggers is part of its wait.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reelbot.worker.affinity import LOAD_GRACE_S, Peer, Waiting, choose

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Model:
    """A model of the simulated set: its run time and its share of the jobs."""

    name: str
    run_s: float
    share: float


MODELS = (Model("z-image-turbo", 2.0, 0.7), Model("wan2.2-5b", 60.0, 0.3))
LOAD_S = 20.0
WORKERS = 2
HEARTBEAT_S = 2.0
"""Each worker publishes its model and expected end every 2 s (``Settings.heartbeat_s``); a
peer sees the latest one, so its view is up to 2 s old."""


@dataclass(frozen=True)
class Job:
    """A simulated job: when it was submitted and for which model."""

    id: int
    at_ms: int
    model: Model


def make_jobs(n: int, *, load: float | None, seed: int) -> list[Job]:
    """``n`` jobs: Poisson arrivals at ``load`` of the load-free capacity, or all at t = 0."""
    rng = random.Random(seed)
    mean_run = sum(m.run_s * m.share for m in MODELS)
    rate = None if load is None else load * WORKERS / mean_run
    jobs, t = [], 0.0
    for i in range(n):
        if rate is not None:
            t += rng.expovariate(rate)
        model = rng.choices(MODELS, weights=[m.share for m in MODELS])[0]
        jobs.append(Job(i, round(t * 1000), model))
    return jobs


def simulate(
    jobs: list[Job],
    wait_s: float,
    *,
    peers: bool = False,
    runs: bool = True,
    fifo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Serve ``jobs`` on the simulated cards; loads and waits. With ``peers``, each worker
    sees the others' heartbeats (their model and expected end, ``HEARTBEAT_S`` stale at most)
    and the chooser's peer rule replaces the load grace; with ``runs``, the chooser also knows
    each model's run time (the worker's last measured call). Given the ``fifo`` run of the
    same jobs, also how much later than there each job started (the bound ``wait_s`` is
    about)."""
    free_at = [0] * WORKERS
    loaded = [MODELS[0].name] * WORKERS
    beat_ms = round(HEARTBEAT_S * 1000)
    # Each worker's (time, model, expected end) from each job it takes, for its heartbeats.
    states = [[(-beat_ms, loaded[w], 0)] for w in range(WORKERS)]

    def heartbeat(w: int, now: int) -> Peer:
        # Worker w beats at w/WORKERS of a period past every multiple of it.
        phase = beat_ms * w // WORKERS
        beat = (now - phase) // beat_ms * beat_ms + phase
        _, model, end = next(s for s in reversed(states[w]) if s[0] <= beat)
        return Peer(frozenset({model}), end)

    passed: dict[int, int] = {}
    waiting: list[Job] = []
    waits: dict[int, float] = {}
    loads, arrived = 0, 0
    while arrived < len(jobs) or waiting:
        worker = min(range(WORKERS), key=lambda w: free_at[w])
        now = free_at[worker]
        if not waiting and arrived < len(jobs):
            now = max(now, jobs[arrived].at_ms)  # idle until the next submit
        while arrived < len(jobs) and jobs[arrived].at_ms <= now:
            waiting.append(jobs[arrived])
            arrived += 1
        seen = [
            Waiting(str(j.id), j.model.name, passed.get(j.id), submitted_ms=j.at_ms)
            for j in waiting
        ]
        others = [heartbeat(w, now) for w in range(WORKERS) if w != worker] if peers else None
        choice = choose(
            seen,
            {loaded[worker]},
            now_ms=now,
            wait_s=wait_s,
            grace_s=0 if peers else LOAD_GRACE_S,
            peers=others,
            load_s={m.name: LOAD_S for m in MODELS},
            run_s={m.name: m.run_s for m in MODELS} if runs else None,
        )
        for job in choice.passed:
            passed[int(job.id)] = now
        if not choice.take:
            # Left for a worker that has the model: this one looks again at the time given
            # (or at the next submit), and the other worker may decide first.
            assert choice.retry_at_ms is not None
            upcoming = jobs[arrived].at_ms if arrived < len(jobs) else choice.retry_at_ms
            free_at[worker] = min(choice.retry_at_ms, max(upcoming, now + 1))
            continue
        taken = next(j for j in waiting if str(j.id) == choice.take[0].id)
        waiting.remove(taken)
        start = now
        if taken.model.name != loaded[worker]:
            loads += 1
            loaded[worker] = taken.model.name
            start += round(LOAD_S * 1000)
        waits[taken.id] = (start - taken.at_ms) / 1000
        free_at[worker] = start + round(taken.model.run_s * 1000)
        states[worker].append((now, loaded[worker], free_at[worker]))
    result = {
        "loads": loads,
        "p50_wait_s": percentile(list(waits.values()), 50),
        "p99_wait_s": percentile(list(waits.values()), 99),
        "max_wait_s": max(waits.values()),
        "makespan_s": max(free_at) / 1000,
    }
    if fifo is not None:
        later = [waits[i] - fifo["waits"][i] for i in waits]
        result["p99_later_s"] = percentile(later, 99)
        result["max_later_s"] = max(later)
        result["later_than_wait_s"] = sum(1 for d in later if d > wait_s)
    return result | {"waits": waits}


def without_waits(result: dict[str, Any]) -> dict[str, Any]:
    """A run's figures without its per-job waits (for the JSON)."""
    return {k: v for k, v in result.items() if k != "waits"}


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both policies on both arrival processes, from one seed."""
    scenarios = {
        f"poisson, load {args.load:.0%}": make_jobs(args.jobs, load=args.load, seed=args.seed),
        "backlog at t = 0": make_jobs(args.jobs, load=None, seed=args.seed),
    }
    results = {name: policies(jobs, args.wait) for name, jobs in scenarios.items()}
    main = next(iter(results.values()))
    fifo, affinity = main["fifo"], main["affinity"]
    return {
        "jobs": args.jobs,
        "load": args.load,
        "wait_s": args.wait,
        "seed": args.seed,
        "models": {m.name: {"run_s": m.run_s, "share": m.share} for m in MODELS},
        "load_s": LOAD_S,
        "workers": WORKERS,
        "loads_fifo": fifo["loads"],
        "loads_affinity": affinity["loads"],
        "p50_wait_fifo_s": fifo["p50_wait_s"],
        "p50_wait_affinity_s": affinity["p50_wait_s"],
        "p99_wait_fifo_s": fifo["p99_wait_s"],
        "p99_wait_affinity_s": affinity["p99_wait_s"],
        "max_later_affinity_s": affinity["max_later_s"],
        "scenarios": results,
    }


def render(result: dict[str, Any]) -> Table:
    """The results as a table."""
    table = Table(
        title=(
            f"scheduling simulation: {result['jobs']} jobs, {result['workers']} one-model cards, "
            f"load {result['load_s']:.0f} s, Z-Image 2 s (70 %) / Wan 60 s (30 %), "
            f"REELBOT_AFFINITY_WAIT_S={result['wait_s']:g}"
        ),
        title_justify="left",
    )
    names = ("arrivals", "order", "loads", "p50 wait", "p99 wait", "max wait", "all done")
    for name in (*names, "later than arrival order: p99 / max / jobs > wait"):
        table.add_column(name, justify="left" if name in ("arrivals", "order") else "right")
    for scenario, policies in result["scenarios"].items():
        policies_shown = (
            ("fifo", "arrival order"),
            ("affinity_grace", "affinity, 2 s grace"),
            ("affinity_blind_runs", "peers, no run times"),
            ("affinity", "peers and run times"),
        )
        for policy, label in policies_shown:
            r = policies[policy]
            table.add_row(
                scenario if policy == "fifo" else "",
                label,
                str(r["loads"]),
                f"{r['p50_wait_s']:.0f} s",
                f"{r['p99_wait_s']:.0f} s",
                f"{r['max_wait_s']:.0f} s",
                f"{r['makespan_s'] / 60:.1f} min",
                "-"
                if policy == "fifo"
                else f"{r['p99_later_s']:.0f} s / {r['max_later_s']:.0f} s / "
                f"{r['later_than_wait_s']}",
            )
        f, a = policies["fifo"], policies["affinity"]
        table.add_row(
            "",
            "shipped / arrival",
            f"{a['loads'] / max(1, f['loads']):.2f}×",
            f"{a['p50_wait_s'] / max(1e-9, f['p50_wait_s']):.2f}×",
            f"{a['p99_wait_s'] / max(1e-9, f['p99_wait_s']):.2f}×",
            f"{a['max_wait_s'] / max(1e-9, f['max_wait_s']):.2f}×",
            f"{a['makespan_s'] / max(1e-9, f['makespan_s']):.2f}×",
            "",
            end_section=True,
        )
    return table


def verdict(result: dict[str, Any]) -> str:
    """The issue's target for each scenario: at least 5x fewer loads than arrival order with
    p99 wait at most 1.5x arrival order's."""
    parts = []
    for scenario, runs in result["scenarios"].items():
        f, a = runs["fifo"], runs["affinity"]
        fewer = f["loads"] / max(1, a["loads"])
        p99 = a["p99_wait_s"] / max(1e-9, f["p99_wait_s"])
        met = "met" if fewer >= 5 and p99 <= 1.5 else "not met"
        parts.append(f"{scenario}: {fewer:.1f}x fewer loads, p99 {p99:.2f}x ({met})")
    return "target (>= 5x fewer loads, p99 wait <= 1.5x): " + "; ".join(parts)


def policies(jobs: list[Job], wait: float) -> dict[str, dict[str, Any]]:
    """Arrival order; affinity with the load grace; with peers but no run times (the chooser
    before it knew them); with peers and run times (what the worker runs): on the same jobs."""
    fifo = simulate(jobs, 0)
    runs = {
        "fifo": fifo,
        "affinity_grace": simulate(jobs, wait, fifo=fifo),
        "affinity_blind_runs": simulate(jobs, wait, peers=True, runs=False, fifo=fifo),
        "affinity": simulate(jobs, wait, peers=True, fifo=fifo),
    }
    return {name: without_waits(r) for name, r in runs.items()}


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same scenarios over loads, seeds and waits: one row each, all three policies."""
    rows = []
    for wait in (30.0, 60.0, 120.0):
        for load in (0.3, 0.45, 0.6, 0.8, None):
            for seed in (19, 1, 2, 3):
                jobs = make_jobs(args.jobs, load=load, seed=seed)
                row: dict[str, Any] = {"wait_s": wait, "load": load, "seed": seed}
                rows.append(row | policies(jobs, wait))
    return rows


def render_sweep(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table: loads, p99 wait and how much later than in arrival order
    (the worst job; how many jobs over ``wait_s``), arrival / peers without run times / with."""
    lines = [
        "| wait_s | arrivals | seed | loads: arrival / no runs / runs | fewer "
        "| p99 wait: arrival / no runs / runs | p99 ratio | max later: no runs / runs "
        "| jobs > wait: no runs / runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f, g, a = row["fifo"], row["affinity_blind_runs"], row["affinity"]
        arrivals = "backlog" if row["load"] is None else f"poisson {row['load']:.0%}"
        lines.append(
            f"| {row['wait_s']:g} | {arrivals} | {row['seed']} "
            f"| {f['loads']} / {g['loads']} / {a['loads']} "
            f"| {f['loads'] / max(1, a['loads']):.1f}× "
            f"| {f['p99_wait_s']:.0f} / {g['p99_wait_s']:.0f} / {a['p99_wait_s']:.0f} s "
            f"| {a['p99_wait_s'] / max(1e-9, f['p99_wait_s']):.2f}× "
            f"| {g['max_later_s']:.0f} / {a['max_later_s']:.0f} s "
            f"| {g['later_than_wait_s']} / {a['later_than_wait_s']} |"
        )
    return "\n".join(lines)


def cli() -> None:
    """Parse arguments, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--load", type=float, default=0.6, help="Poisson rate as a share of load-free capacity"
    )
    parser.add_argument("--wait", type=float, default=30.0, help="REELBOT_AFFINITY_WAIT_S")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scheduling.json")
    parser.add_argument(
        "--sweep", action="store_true", help="also loads 30-80 %%, backlog, seeds, waits"
    )
    args = parser.parse_args()
    result = run(args)
    if args.sweep:
        result["sweep"] = sweep(args)
        print(render_sweep(result["sweep"]))
    Console(width=150).print(render(result))
    result["target"] = verdict(result)
    print(result["target"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    cli()
