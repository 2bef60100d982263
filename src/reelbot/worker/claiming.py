"""Image jobs that share one pipeline call: claiming the compatible ones that wait, and the call.

With ``REELBOT_BATCH_MAX`` above 1, a worker that takes a batchable job (the leader) also claims
up to ``batch_max - 1`` compatible jobs already waiting in its queue (same
``generation.batching.batch_key``), each through arq's in-progress key holding this worker's
lease, exactly as the poll claims jobs. Each claimed job then runs as an ordinary arq job with
its own record, progress and cancel; only the pipeline call is shared: every member joins the
``Batch`` (or leaves it, when it ends another way) and the last one in submits one
``generate_batch`` call to the pipeline thread. The leader never waits for more jobs to arrive;
an incompatible job queued between the members waits one batch's extra items longer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from arq.utils import timestamp_ms
from PIL import Image

from reelbot.config import Settings
from reelbot.errors import Cancelled
from reelbot.generation.batching import batch_key
from reelbot.jobs import GenerationParams, JobStatus
from reelbot.store import keys
from reelbot.store.leases import SCAN_LIMIT
from reelbot.store.records import JobRecord, RecordStore
from reelbot.worker.ports import GenerationOutput, LeaseHolder, PipelineRunner

__all__ = ["Batch", "BatchItem", "Claimer", "claim_batch"]

# Statuses of a job in the queue that will run its pipeline (a re-run after its worker died
# mid-job still says running or encoding); a delivering or finished one only re-enqueues.
_RUNNABLE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.ENCODING})

# Claim the listed jobs that are still due in the queue and that nobody holds, in one round
# trip: the poll's claim (arq's in-progress key, this worker's id, one lease) for chosen ids.
_CLAIM_IDS = """
local out = {}
for i = 5, #ARGV do
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
return out
"""


class Claimer(LeaseHolder, Protocol):
    """The worker as ``claim_batch`` uses it (``worker.GenerationWorker``)."""

    @property
    def max_jobs(self) -> int: ...
    @property
    def job_counter(self) -> int: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def records(self) -> RecordStore: ...
    @property
    def runner(self) -> PipelineRunner: ...
    @property
    def pipeline_thread(self) -> Executor: ...
    @property
    def batches(self) -> dict[str, Batch]:
        """The batch of each job claimed into one."""

    @property
    def held(self) -> set[str]:
        """The jobs whose runs here have not ended (a lapsed lease does not end them)."""

    async def start_claimed(self, job_id: str, score: int) -> None:
        """Run a job claimed outside the poll as an ordinary arq job."""


async def _compatible(worker: Claimer, leader: JobRecord, limit: int) -> list[str]:
    """Ids of jobs due in the queue, held by nobody, that can share the leader's call."""
    pool = worker.pool
    now = timestamp_ms()
    due = await pool.zrangebyscore(worker.queue_name, "-inf", now, start=0, num=SCAN_LIMIT)
    # Not a job still running here whose lease lapsed (Redis was away): it is not free.
    ids = [j for j in (raw.decode() for raw in due) if j != leader.id and j not in worker.held]
    if not ids:
        return []
    async with pool.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.exists(keys.arq_in_progress(job_id))
        held = await pipe.execute()
    free = [job_id for job_id, h in zip(ids, held, strict=True) if not h]
    key = batch_key(leader.params)
    # Queue order: the batch takes the oldest compatible jobs first.
    records = await worker.records.many(free)
    return [r.id for r in records if r.status in _RUNNABLE and batch_key(r.params) == key][:limit]


async def claim_batch(worker: Claimer, leader: JobRecord) -> Batch | None:
    """Claim and start compatible waiting jobs to share the leader's call; None: it runs alone."""
    if leader.id in worker.batches or batch_key(leader.params) is None:
        return None
    # arq's semaphore holds max_jobs tasks: claiming past it would block this job on it.
    room = min(worker.settings.batch_max - 1, worker.max_jobs - worker.job_counter)
    if room <= 0:
        return None
    ids = await _compatible(worker, leader, room)
    if not ids:
        return None
    script = worker.pool.register_script(_CLAIM_IDS)
    args: list[str | int] = [
        timestamp_ms(),
        worker.worker_id,
        worker.lease_ms,
        keys.arq_in_progress(""),
        *ids,
    ]
    claimed = await script(keys=[worker.queue_name], args=args)
    pairs = [(claimed[i].decode(), int(float(claimed[i + 1]))) for i in range(0, len(claimed), 2)]
    if not pairs:
        return None
    batch = Batch(
        [leader.id, *(job_id for job_id, _ in pairs)], worker.runner, worker.pipeline_thread
    )
    # Registered before the tasks start, so that each finds its batch when it gets going.
    for job_id in batch.job_ids:
        worker.batches[job_id] = batch
    for job_id, score in pairs:
        await worker.start_claimed(job_id, score)
    return batch


@dataclass
class BatchItem:
    """One job's part in a shared call; the hooks run in the pipeline thread."""

    params: GenerationParams
    image: Image.Image | None
    on_progress: Callable[[Any], None]
    cancel: threading.Event
    started: Callable[[int], object]
    """The call begins, with this many jobs in it."""
    loaded: Callable[[], object]
    """The model is loaded: the job's own time limit starts."""
    finished: Callable[[float | None], object]
    """The call returned; the job's share of its seconds, None when it failed."""


class Batch:
    """Jobs claimed together; once each has joined or left, one pipeline call runs those in."""

    def __init__(self, job_ids: Sequence[str], runner: PipelineRunner, thread: Executor) -> None:
        self.job_ids = list(job_ids)
        self.runner = runner
        self.thread = thread
        self._waiting = set(self.job_ids)
        self._joined: dict[str, tuple[BatchItem, asyncio.Future[GenerationOutput]]] = {}
        self._submitted = False

    @property
    def size(self) -> int:
        """How many jobs were claimed into the batch."""
        return len(self.job_ids)

    def join(self, job_id: str, item: BatchItem) -> asyncio.Future[GenerationOutput]:
        """Add a job's item; its future resolves when the shared call has returned."""
        future: asyncio.Future[GenerationOutput] = asyncio.get_running_loop().create_future()
        self._joined[job_id] = (item, future)
        self._waiting.discard(job_id)
        self._submit_when_complete()
        return future

    def leave(self, job_id: str) -> None:
        """The job will not join (it ended another way); a no-op once it has joined."""
        self._waiting.discard(job_id)
        self._submit_when_complete()

    def _submit_when_complete(self) -> None:
        if self._waiting or self._submitted or not self._joined:
            return
        self._submitted = True
        order = [job_id for job_id in self.job_ids if job_id in self._joined]
        items = [self._joined[job_id][0] for job_id in order]
        futures = [self._joined[job_id][1] for job_id in order]
        call = asyncio.get_running_loop().run_in_executor(self.thread, self._call, items)

        def settle(call: asyncio.Future[list[GenerationOutput | BaseException]]) -> None:
            error = call.exception()
            results = [error] * len(items) if error is not None else call.result()
            for future, result in zip(futures, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

        call.add_done_callback(settle)

    def _call(self, items: list[BatchItem]) -> list[GenerationOutput | BaseException]:
        """The pipeline call, in the pipeline thread; one result per item, in order."""
        results: list[GenerationOutput | BaseException] = [Cancelled() for _ in items]
        # Cancelled while it waited behind the running call: never started, as a lone job.
        live = [k for k, item in enumerate(items) if not item.cancel.is_set()]
        if not live:
            return results
        for k in live:
            items[k].started(len(live))
        share: float | None = None
        try:
            first = items[live[0]].params
            self.runner.preload(first.model, first.task)
            for k in live:
                items[k].loaded()
            begun = perf_counter()
            outputs = list(
                self.runner.generate_batch(
                    [(items[k].params, items[k].image) for k in live],
                    on_progress=[items[k].on_progress for k in live],
                    cancel_events=[items[k].cancel for k in live],
                )
            )
            # Per job: the estimates that ETAs and time limits come from are per job.
            share = (perf_counter() - begun) / len(live)
        except Exception as exc:
            outputs = [exc] * len(live)
        finally:
            for k in live:
                items[k].finished(share)
        for k, output in zip(live, outputs, strict=True):
            results[k] = output
        return results
