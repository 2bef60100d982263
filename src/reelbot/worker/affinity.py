"""Which waiting jobs a worker takes next: those for a model it has loaded, with bounded unfairness.

A worker whose card holds one model at a time (Z-Image-Turbo and Wan 2.2 5B on 24 GB) that takes
jobs in arrival order reloads ~20 GB between every image and video job of mixed traffic. The
chooser here prefers the jobs whose model is resident, and bounds what that costs the others: a
job is *passed over* when a younger job is taken while it waits, and once ``wait_s`` has gone
by since it was first passed over, it is taken before any job that is not overdue. A job that
would make this worker load its model is left for ``grace_s`` after its submit, so that a
worker which has the model loaded (and is free, or nearly) takes it instead. So no job waits
much more than ``wait_s`` + ``grace_s`` (plus one job's run) longer than it would in arrival
order; ``wait_s = 0`` is plain arrival order. Pure: no Redis, no clock; ``worker.candidates``
feeds it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["LOAD_GRACE_S", "Choice", "Waiting", "choose"]

LOAD_GRACE_S = 2.0
"""How long a new job that needs a load here is left for a worker that has its model: the
worker's prefetch window (``slot.PREFETCH_WINDOW_S``), in which a busy peer claims its next job;
a load costs ten times that (~20 s for 20 GB)."""


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


@dataclass(frozen=True)
class Choice:
    """The jobs to take, in order, and the jobs that taking them passes over for the first time;
    with nothing to take, when to look again (a job left for a worker that has its model)."""

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
) -> Choice:
    """Pick up to ``slots`` of ``waiting`` (in arrival order): overdue, then resident, then oldest.

    Overdue jobs (passed over at least ``wait_s`` ago) go first, oldest first; then jobs for a
    ``resident`` model (or for any model), in arrival order; then the rest in arrival order,
    each only once ``grace_s`` has passed since its submit.
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

    def rank(i: int) -> tuple[int, int]:
        job = waiting[i]
        return (0 if overdue(job) else 1 if fits(job) else 2), i

    picked: list[int] = []
    retry_at: int | None = None
    for i in sorted(range(len(waiting)), key=rank)[:slots]:
        job = waiting[i]
        if not overdue(job) and not fits(job) and job.submitted_ms is not None:
            ready_at = job.submitted_ms + round(grace_s * 1000)
            if ready_at > now_ms:
                retry_at = ready_at
                break
        picked.append(i)
    if not picked:
        return Choice([], [], retry_at)
    last, chosen = max(picked), set(picked)
    passed = [
        job for i, job in enumerate(waiting[:last]) if i not in chosen and job.passed_at_ms is None
    ]
    return Choice([waiting[i] for i in picked], passed)
