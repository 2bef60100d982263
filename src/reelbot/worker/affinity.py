"""Which waiting jobs a worker takes next: those for a model it has loaded, with bounded unfairness.

A worker whose card holds one model at a time (Z-Image-Turbo and Wan 2.2 5B on 24 GB) that takes
jobs in arrival order reloads ~20 GB between every image and video job of mixed traffic. The
chooser here prefers the jobs whose model is resident, and bounds what that costs the others: a
job is *passed over* when a younger job is taken while it waits, and once ``wait_s`` has gone
by since it was first passed over, it is taken before any job that is not overdue. A job that
would make this worker load its model is left for a *peer* (another process's worker, as its
heartbeat tells) that has that model resident and expects to be free before the job would
start here plus its remaining wait budget: before ``load_s`` (what the load here would cost)
plus ``wait_s`` after the job was first passed over or left (its *deadline*). Leaving a job
counts as passing it over. An overdue job is still left for such a peer until its deadline,
as the peer starts it sooner than a load here would; from its deadline on (the peer is late:
its estimate was wrong or it took another job), whoever is free takes it, unless that peer
still starts it before a load here would end. Without peer information, a job that needs a
load is left for ``grace_s`` after its submit instead. So no job waits much more than
``wait_s`` + ``grace_s`` (plus one job's run) longer than it would in arrival order, or, left
for a peer, ``wait_s`` plus a load more when the peer is late; ``wait_s = 0`` is plain arrival
order. "Plus one job's run" is what the measured run times (``run_s``) take away: a job whose
model nobody has loaded is not passed over for a run that ends after its wait while every
peer is busy past it too (nothing would serve it sooner); in arrival order it would be loaded
now. Pure: no Redis, no clock; ``worker.candidates`` feeds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["LOAD_GRACE_S", "RECHECK_S", "Choice", "Peer", "Waiting", "choose"]

LOAD_GRACE_S = 2.0
"""How long a new job that needs a load here is left for a worker that has its model: the
worker's prefetch window (``slot.PREFETCH_WINDOW_S``), in which a busy peer claims its next job;
a load costs ten times that (~20 s for 20 GB)."""
RECHECK_S = 0.5
"""With every job left for a peer, how soon to look again (the worker's poll delay): the
peer's heartbeat may be stale, and it may take another job first."""


@dataclass(frozen=True)
class Peer:
    """Another GPU worker process, as its latest heartbeat tells (``store.leases.WorkerInfo``)."""

    resident: frozenset[str]
    """The models it has loaded (or is loading for its running job)."""
    free_at_ms: int | None
    """When its running job is expected to end (at or before now: it is free; None: unknown,
    never waited for)."""
    queues: frozenset[str] = frozenset()
    """The queues it serves (empty: any); a job is left for it only if it serves the job's."""


@dataclass(frozen=True)
class Waiting:
    """A due job nobody holds, as the chooser sees it."""

    id: str
    model: str | None
    """The model it runs; None (a job queued before models were recorded) matches any."""
    passed_at_ms: int | None = None
    """When a younger job was first taken ahead of it (None: never)."""
    queue: str = ""
    """The queue it waits in (several queues may share one GPU)."""
    submitted_ms: int | None = None
    """When it was submitted (None: unknown, never left for another worker)."""
    cost: float | None = None
    """Its credits (None: unknown); with a model's seconds per credit, how long it runs."""


@dataclass(frozen=True)
class Choice:
    """The jobs to take, in order, and the jobs that taking them (or leaving them for a peer)
    passes over for the first time; with nothing to take, when to look again (a job left for a
    worker that has its model)."""

    take: list[Waiting]
    passed: list[Waiting]
    retry_at_ms: int | None = None


def choose(
    waiting: Sequence[Waiting],
    resident: Collection[str],
    *,
    now_ms: int,
    wait_s: float,
    slots: int = 1,
    grace_s: float = LOAD_GRACE_S,
    peers: Sequence[Peer] | None = None,
    load_s: Mapping[str, float] | None = None,
    run_s: Mapping[str, float] | None = None,
    per_credit_s: Mapping[str, float] | None = None,
) -> Choice:
    """Pick up to ``slots`` of ``waiting`` (in arrival order): overdue, then resident, then oldest.

    Overdue jobs (passed over at least ``wait_s`` ago) go first, oldest first; then jobs for a
    ``resident`` model (or for any model), in arrival order; then the rest in arrival order,
    each unless a peer with its model resident is expected free before its deadline (marked
    or now, plus ``wait_s``, plus ``load_s`` of its model, 0 when unknown): such a job is left
    and marked passed; and each only once ``grace_s`` has passed since its submit.

    With run times and the peers known, two more rules. A job's run time is its ``cost`` times
    its model's ``per_credit_s`` (the estimate a running job's expected end comes from), else
    ``run_s`` (the model's last measured call). A job is *stranded* when no peer has its model
    and every peer is busy past the end of its wait: taking a resident job whose run ends
    later would make it wait longer than in arrival order, so it counts as overdue. And past
    its deadline, a job is still left for a peer with its model that, after the older jobs for
    that model, starts it before a load here would end.
    """
    if slots <= 0 or not waiting:
        return Choice([], [])
    if wait_s <= 0 or not resident:
        return Choice(list(waiting[:slots]), [])
    limit_ms = wait_s * 1000

    def overdue(job: Waiting) -> bool:
        return job.passed_at_ms is not None and now_ms - job.passed_at_ms >= limit_ms

    def fits(job: Waiting) -> bool:
        return job.model is None or job.model in resident

    def serves(peer: Peer, job: Waiting) -> bool:
        return not peer.queues or job.queue in peer.queues

    def load_ms(job: Waiting) -> int:
        return round((load_s or {}).get(job.model or "", 0.0) * 1000)

    timed = run_s is not None or per_credit_s is not None

    def run_ms(job: Waiting) -> int | None:
        """How long it is expected to run, when that is known."""
        model = job.model or ""
        if job.cost is not None and per_credit_s is not None and model in per_credit_s:
            return round(per_credit_s[model] * job.cost * 1000)
        return None if run_s is None or model not in run_s else round(run_s[model] * 1000)

    next_fit = next((job for job in waiting if fits(job)), None)
    next_run_ms = None if next_fit is None else run_ms(next_fit)

    def stranded(job: Waiting) -> bool:
        """Nobody has its model, and this worker's next run and every peer's current one
        end after its wait: in arrival order it would be loaded now, so it does not wait."""
        if peers is None or next_run_ms is None or job.model is None or fits(job):
            return False
        mine = [p for p in peers if serves(p, job)]
        if any(job.model in p.resident for p in mine):
            return False
        ends = (now_ms if job.passed_at_ms is None else job.passed_at_ms) + limit_ms
        return now_ms + next_run_ms > ends and all(
            p.free_at_ms is None or p.free_at_ms > ends for p in mine
        )

    def rank(i: int) -> tuple[int, int]:
        job = waiting[i]
        return (0 if overdue(job) or stranded(job) else 1 if fits(job) else 2), i

    def deadline(job: Waiting) -> int:
        """When taking it here would have started it had it been taken when it fell due."""
        since = now_ms if job.passed_at_ms is None else job.passed_at_ms
        return since + round(limit_ms) + load_ms(job)

    def ahead_ms(job: Waiting) -> int | None:
        """The runs of the older jobs for its model, which a peer with it takes first."""
        runs = [run_ms(j) for j in waiting[: waiting.index(job)] if j.model == job.model]
        if not timed or None in runs:
            return None
        return sum(r for r in runs if r is not None)

    def peer_free_at(job: Waiting) -> int | None:
        """When a peer with the job's model resident is expected free, if that is before the
        job's deadline: leave it for that peer."""
        if not peers or job.model is None:
            return None
        due = deadline(job)
        if now_ms >= due:
            # The peer is late: whoever is free takes it, unless the peer, once through the
            # older jobs for the model, still starts it before a load here would end.
            ahead = ahead_ms(job)
            if ahead is None:
                return None
            due = now_ms + load_ms(job) - ahead
        times = [
            p.free_at_ms
            for p in peers
            if job.model in p.resident
            and serves(p, job)
            and p.free_at_ms is not None
            and p.free_at_ms < due
        ]
        return min(times) if times else None

    picked: list[int] = []
    left: list[Waiting] = []
    retry_at: int | None = None
    for i in sorted(range(len(waiting)), key=rank):
        if len(picked) >= slots:
            break
        job = waiting[i]
        if not fits(job):
            peer_at = peer_free_at(job)
            if peer_at is not None:
                left.append(job)
                again = max(min(deadline(job), peer_at), now_ms + round(RECHECK_S * 1000))
                retry_at = again if retry_at is None else min(retry_at, again)
                continue
        if not overdue(job) and not fits(job) and job.submitted_ms is not None:
            ready_at = job.submitted_ms + round(grace_s * 1000)
            if ready_at > now_ms:
                retry_at = ready_at if retry_at is None else min(retry_at, ready_at)
                break
        picked.append(i)
    fresh = [job for job in left if job.passed_at_ms is None]
    if not picked:
        return Choice([], fresh, retry_at)
    last, chosen = max(picked), set(picked)
    passed = [
        job for i, job in enumerate(waiting[:last]) if i not in chosen and job.passed_at_ms is None
    ]
    passed += [job for job in fresh if job not in passed]
    return Choice([waiting[i] for i in picked], passed)
