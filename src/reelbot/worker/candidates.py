"""The jobs waiting in a GPU's queues with their models, and claiming those ``affinity`` chooses.

Submit writes each job's model and submit time into a small hash (``keys.affinity``), so one
read-only script returns the due, unheld jobs of every queue the GPU serves with their models
and submit times, without reading records. ``affinity.choose`` picks; a second script claims
the chosen ones (re-checking that nobody holds them, as the poll's claim does) and marks the
jobs that the choice passed over, so every worker on the queue counts their wait from the same
moment. A job queued before models were recorded has no hash: it fits any model.

``peers_from`` reads the other GPUs serving the same queues from the heartbeats
(``store.leases.WorkerInfo``: the models each has resident, when it expects to be free, the
load and run times it has measured), for the chooser's peer rule.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from arq.connections import ArqRedis
from arq.utils import timestamp_ms

from reelbot.store import keys
from reelbot.store.estimates import seconds_per_credit
from reelbot.store.leases import SCAN_LIMIT
from reelbot.worker.affinity import LOAD_GRACE_S, Choice, Peer, Waiting, choose
from reelbot.worker.ports import LeaseHolder

__all__ = ["Chooser", "Peers", "claim_by_affinity", "peers_from", "waiting"]

MARK_TTL_MS = 24 * 3600 * 1000
"""A pass-over mark on a job with no hash of its own lives as long as arq keeps the job."""

# Due jobs nobody holds in each queue (KEYS), in queue order, each with its hash's fields; a
# queue's scan stops after ARGV[5] jobs that fit a resident model (ARGV[6..]) or any model, as
# every job behind those would wait behind them in arrival order too. ARGV[1] now (ms), [2]
# arq's in-progress prefix, [3] the affinity hash prefix, [4] scan limit.
_WAITING = """
local resident = {}
for i = 6, #ARGV do resident[ARGV[i]] = true end
local out = {}
for q = 1, #KEYS do
  local due = redis.call('ZRANGEBYSCORE', KEYS[q], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
  local fitting = 0
  for _, id in ipairs(due) do
    if redis.call('EXISTS', ARGV[2] .. id) == 0 then
      local f = redis.call('HMGET', ARGV[3] .. id, 'm', 't', 's', 'c')
      table.insert(out, {tostring(q), id, f[1] or '', f[2] or '', f[3] or '', f[4] or ''})
      if not f[1] or resident[f[1]] then
        fitting = fitting + 1
        if fitting >= tonumber(ARGV[5]) then break end
      end
    end
  end
end
return out
"""

# Claim the chosen jobs still due and unheld (the poll's claim, for chosen ids); when any was
# claimed, mark the passed-over ones. ARGV[1] now, [2] worker id, [3] lease ms, [4] in-progress
# prefix, [5] affinity prefix, [6] a new mark's TTL (ms), [7] how many ids to claim, then those
# ids, then the passed-over ids. With no ids to claim (every job left for a peer), it only marks.
_CLAIM_CHOSEN = """
local out = {}
local n = tonumber(ARGV[7])
for i = 8, 7 + n do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    local key = ARGV[4] .. ARGV[i]
    if redis.call('EXISTS', key) == 0 then
      redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
      table.insert(out, ARGV[i])
      table.insert(out, score)
    end
  end
end
if #out > 0 or n == 0 then
  for i = 8 + n, #ARGV do
    local key = ARGV[5] .. ARGV[i]
    if redis.call('HSETNX', key, 's', ARGV[1]) == 1 and redis.call('PTTL', key) < 0 then
      redis.call('PEXPIRE', key, ARGV[6])
    end
  end
end
return out
"""


class Chooser(LeaseHolder, Protocol):
    """The worker as ``claim_by_affinity`` uses it (``worker.GenerationWorker``)."""

    def wake_peer(self, queue: str) -> None:
        """The choice is a job in another queue of this GPU: let its worker claim it."""

    def wake(self) -> None:
        """Poll again now."""


@dataclass(frozen=True)
class Peers:
    """The other GPUs on this GPU's queues, as their heartbeats tell."""

    known: list[Peer] = field(default_factory=list)
    blind: bool = False
    """A worker on the queues that does not announce its models (an older version)."""
    load_s: dict[str, float] = field(default_factory=dict)
    """Load times they measured, for models this GPU has not loaded yet."""
    run_s: dict[str, float] = field(default_factory=dict)
    """Run times they measured (a call of each model), for models this GPU has not run."""


def peers_from(
    infos: Iterable[Mapping[str, Any]], gpu_id: str, queues: Collection[str], here: tuple[Any, Any]
) -> Peers:
    """The heartbeats of other GPUs' workers on ``queues`` (one entry per GPU)."""
    known: dict[str, Peer] = {}
    served: dict[str, set[str]] = {}
    blind = False
    load_s: dict[str, float] = {}
    run_s: dict[str, float] = {}
    for info in infos:
        if info.get("queue") not in queues:
            continue
        gpu = info.get("gpu")
        if gpu is None:
            blind = blind or (info.get("host"), info.get("pid")) != here
            continue
        if gpu == gpu_id:
            continue
        for measured, name in ((load_s, "load_s"), (run_s, "run_s")):
            for model, seconds in (info.get(name) or {}).items():
                measured[model] = max(float(seconds), measured.get(model, 0.0))
        served.setdefault(gpu, set()).add(str(info.get("queue")))
        if gpu not in known:  # the queues of one GPU beat alike
            free_at = info.get("free_at")
            ms = None if free_at is None else round(float(free_at) * 1000)
            known[gpu] = Peer(frozenset(info.get("resident") or ()), ms)
    peers = [replace(peer, queues=frozenset(served[gpu])) for gpu, peer in known.items()]
    return Peers(peers, blind, load_s, run_s)


def _int(raw: bytes) -> int | None:
    return int(raw) if raw else None


async def waiting(
    pool: ArqRedis, queues: Sequence[str], now_ms: int, resident: Collection[str], slots: int
) -> list[Waiting]:
    """Due jobs nobody holds in ``queues``, each queue in its order up to its first ``slots``
    jobs that fit ``resident``, merged by submit time."""
    script = pool.register_script(_WAITING)
    prefixes = [keys.arq_in_progress(""), keys.affinity("")]
    args: list[str | int] = [now_ms, *prefixes, SCAN_LIMIT, slots, *sorted(resident)]
    rows = await script(keys=list(queues), args=args)
    per_queue: list[list[tuple[int, Waiting]]] = [[] for _ in queues]
    for q, job_id, model, submitted, passed, cost in rows:
        at = _int(submitted)
        job = Waiting(
            job_id.decode(),
            model.decode() or None,
            _int(passed),
            queues[int(q) - 1],
            at,
            float(cost) if cost else None,
        )
        # Unknown submit time (a job from before the hash): after the ones whose time is known.
        per_queue[int(q) - 1].append((at or now_ms, job))
    # A merge keeps each queue's own order (its fair order across servers) and interleaves
    # the queues by submit time.
    return [job for _, job in heapq.merge(*per_queue, key=lambda pair: pair[0])]


async def claim_by_affinity(
    worker: Chooser,
    slots: int,
    resident: Collection[str],
    *,
    wait_s: float,
    queues: Sequence[str],
    grace_s: float = LOAD_GRACE_S,
    peers: Sequence[Peer] | None = None,
    load_s: Mapping[str, float] | None = None,
    run_s: Mapping[str, float] | None = None,
) -> list[tuple[str, int]]:
    """Claim up to ``slots`` jobs of the worker's queue as ``affinity.choose`` picks them.

    Returns (job id, score) pairs as the poll's claim does; none when the choice is a job in
    another of ``queues`` (its worker is woken to take it) or was taken meanwhile.
    """
    now = timestamp_ms()
    jobs = await waiting(worker.pool, queues, now, resident, slots)
    if not jobs:
        return []
    # The estimate a running job's expected end comes from, for the waiting ones' runs.
    per_credit = await seconds_per_credit(worker.pool, {j.model for j in jobs if j.model})
    choice: Choice = choose(
        jobs,
        resident,
        now_ms=now,
        wait_s=wait_s,
        slots=slots,
        grace_s=grace_s,
        peers=peers,
        load_s=load_s,
        run_s=run_s,
        per_credit_s={m: s for m, s in per_credit.items() if s is not None},
    )
    if not choice.take:
        if choice.retry_at_ms is not None:
            # Left for a worker that has its model; this one looks again then.
            delay = max(0.0, (choice.retry_at_ms - now) / 1000)
            asyncio.get_running_loop().call_later(delay, worker.wake)
        if choice.passed:
            # Left for a peer: the job's wait is counted from now, by every worker alike.
            await _claim_chosen(worker, now, [], choice.passed)
        return []
    if choice.take[0].queue != worker.queue_name:
        worker.wake_peer(choice.take[0].queue)
        return []
    mine = [job.id for job in choice.take if job.queue == worker.queue_name]
    return await _claim_chosen(worker, now, mine, choice.passed)


async def _claim_chosen(
    worker: Chooser, now: int, mine: list[str], passed: Sequence[Waiting]
) -> list[tuple[str, int]]:
    script = worker.pool.register_script(_CLAIM_CHOSEN)
    args: list[str | int] = [
        now,
        worker.worker_id,
        worker.lease_ms,
        keys.arq_in_progress(""),
        keys.affinity(""),
        MARK_TTL_MS,
        len(mine),
        *mine,
        *(job.id for job in passed),
    ]
    claimed = await script(keys=[worker.queue_name], args=args)
    return [(claimed[i].decode(), int(float(claimed[i + 1]))) for i in range(0, len(claimed), 2)]
