"""The generation worker: one pipeline call at a time, in a thread, with cooperative cancel.

Each queue a process serves gets a ``GenerationWorker`` (an arq worker, see ``liveness``); all
of them share one ``GpuSlot`` and one pipeline thread. A job: read the record and decode the
input image (overlapping the running job), queue the pipeline call on the thread behind the
running one (it starts the moment that one returns), then encode, store and enqueue the
delivery while the next job denoises. With ``REELBOT_BATCH_MAX`` above 1, compatible image jobs
waiting together share one pipeline call (``queue.batching``), each still its own job.

Stopping a pipeline is cooperative: arq can cancel the awaiting task but not the thread, so a
cancel, a timeout or a shutdown sets the runner's cancel event and the job waits for the
thread to return.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from arq.connections import ArqRedis
from arq.worker import Retry, func
from PIL import Image
from redis.exceptions import RedisError

from reelbot import logs, metrics
from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.content import Verdict, decide
from reelbot.errors import (
    Cancelled,
    ContentRefused,
    InvalidImage,
    JobStalled,
    JobTimeout,
    ModelUnavailable,
    OutOfMemory,
    OutputTooLarge,
    ReelbotError,
    TransientError,
    UserError,
    WorkerLost,
)
from reelbot.governance.policy import PolicyStore
from reelbot.governance.quotas import settle_moved
from reelbot.jobs import GenerationParams, JobStatus
from reelbot.queue.budgets import budget_for
from reelbot.queue.delivery import enqueue_delivery
from reelbot.queue.submit import GENERATE
from reelbot.store import keys
from reelbot.store.estimates import job_timeout_s, record_duration, seconds_per_credit
from reelbot.store.leases import QueueWorker, live_workers
from reelbot.store.progress import ProgressPublisher, StepProgress
from reelbot.store.records import JobRecord, RecordStore, ResultInfo
from reelbot.store.results import RedisResultStore, ResultStore
from reelbot.worker.affinity import LOAD_GRACE_S
from reelbot.worker.candidates import Peers, claim_by_affinity, peers_from
from reelbot.worker.claiming import Batch, BatchItem, claim_batch
from reelbot.worker.inputs import JobInputs, load_inputs, needs_inputs
from reelbot.worker.ports import GenerationOutput, PipelineRunner, Scorer
from reelbot.worker.slot import GpuSlot, preload_defaults

if TYPE_CHECKING:
    from reelbot.generation.media import EncodedMedia

log = logging.getLogger(__name__)

__all__ = ["GenerationWorker", "PipelineRunner", "serve_generation"]

MAX_JOBS = 4
"""Arq tasks per worker: one running, one fetched next, two finishing (encode, store); times
``batch_max`` when batching, as each of those may be a batch."""
TRANSIENT_RETRIES = 2
OOM_RETRIES = 1
LOAD_TIMEOUT_S = 1800.0
SETTLE_LOG_S = 30.0
REDIS_RETRY_S = 2.0

STALL_GRACE_S = 2.0
"""How long a stalled pipeline call gets to honour its cancel event before it is abandoned."""
CLASSIFIER_THREADS = 2
"""onnxruntime's threads for the NSFW classifier: it scores a few frames beside the encode,
and left to itself it would take every core from ffmpeg and the event loop."""

StopReason = Literal["cancel", "timeout", "shutdown", "lease", "stall"]


@dataclass
class _Run:
    """A job this worker holds: its cancel event and why it was stopped."""

    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: StopReason | None = None

    def stop(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.cancel.set()


class _Shutdown(Exception):
    """Internal: the job was stopped because the worker is shutting down."""


class _Stalled(Exception):
    """Internal: the pipeline call made no step for ``stall_s`` (the watchdog)."""


class _PipelineCall:
    """One job's pipeline call: its hooks, the watchdog's clock, its deadline, its RUNNING mark.

    The pipeline thread runs ``_call`` (or a batch runs the item's hooks) and reaches the event
    loop only through ``call_soon_threadsafe``; everything else here runs on the loop.
    """

    def __init__(
        self,
        worker: GenerationWorker,
        run: _Run,
        record: JobRecord,
        inputs: JobInputs,
        *,
        limit_s: float,
        estimate: float | None,
        publisher: ProgressPublisher,
    ) -> None:
        self.worker = worker
        self.run = run
        self.record = record
        self.inputs = inputs
        self.image = inputs.image
        self.limit_s = limit_s
        self.estimate = estimate
        self.publisher = publisher
        self.labels = (record.params.model, record.params.task.value)
        self.loop = asyncio.get_running_loop()
        self.last_step = 0.0
        """When the call last stepped (0: its model is still loading); the watchdog's clock."""
        self.run_s = 0.0
        """The pipeline's seconds for this job (its share of a batch's call), once it returned."""
        self.mark: asyncio.Task[JobRecord | None] | None = None
        """The RUNNING transition, written beside the call once it starts."""
        self.deadline = asyncio.timeout(None)
        """No limit while it waits behind the running call, which has a limit of its own."""

    def submit(self) -> asyncio.Future[GenerationOutput]:
        """Queue the call behind the running one, or join the job's batch."""
        batch = self.worker.batches.get(self.record.id)
        if batch is None:
            return self.loop.run_in_executor(self.worker.pipeline_thread, self._call)
        item = BatchItem(
            self.record.params,
            self.image,
            self.on_progress,
            self.run.cancel,
            started=lambda size: self.loop.call_soon_threadsafe(self._started, size),
            loaded=lambda: self.loop.call_soon_threadsafe(self._loaded),
            finished=self._batch_finished,
        )
        return batch.join(self.record.id, item)

    def stalled(self, stall_s: float) -> bool:
        """Whether the call has gone ``stall_s`` without a step (never while its model loads)."""
        return bool(self.last_step) and time.monotonic() - self.last_step > stall_s

    # -- in the pipeline thread ------------------------------------------------------------------

    def on_progress(self, progress: StepProgress) -> None:
        """A denoising step: feed the watchdog, the publisher and the GPU slot."""
        self.last_step = time.monotonic()
        self.publisher.on_progress(progress)
        self.loop.call_soon_threadsafe(self.worker.gpu.stepped, progress.step, progress.total)

    def _call(self) -> GenerationOutput:
        # In the one pipeline thread. The next job's call waits in the executor's queue
        # and starts the moment this one returns, with no trip through the event loop.
        if self.run.cancel.is_set():
            raise Cancelled()
        self.loop.call_soon_threadsafe(self._started)
        params = self.record.params
        try:
            resident = getattr(self.worker.runner, "resident", None)
            loading = resident is not None and params.model not in resident
            begun = time.perf_counter()
            if params.task != Task.SMOOTH:  # ffmpeg's work: no model to load
                self.worker.runner.preload(params.model, params.task)
                if loading:  # the peers' chooser weighs a load here by what it took
                    self.worker.gpu.load_s[params.model] = time.perf_counter() - begun
            # The job's own limit starts once its model is loaded: a cold load is not
            # the job's fault.
            self.loop.call_soon_threadsafe(self._loaded)
            begun = time.perf_counter()
            out = self._generate(params)
            self.run_s = time.perf_counter() - begun
            self.worker.gpu.run_s[params.model] = self.run_s
            return out
        finally:
            self.loop.call_soon_threadsafe(self.worker.gpu.finished, self.record.id)

    def _generate(self, params: GenerationParams) -> GenerationOutput:
        inputs, runner = self.inputs, self.worker.runner
        if not inputs.more_than_an_image and params.task not in (Task.SMOOTH, Task.KEYFRAMES):
            return runner.generate(
                params, self.image, on_progress=self.on_progress, cancel=self.run.cancel
            )
        from reelbot.generation.runner import Runner
        from reelbot.generation.video_edit import run_job

        # Clips, masks and further images: the engine itself, not a stand-in.
        return run_job(
            cast(Runner, runner),
            params,
            self.image,
            video=inputs.video,
            fps=inputs.fps,
            mask=inputs.mask,
            references=inputs.references,
            video_max_s=self.worker.settings.video_max_s,
            on_progress=self.on_progress,
            cancel=self.run.cancel,
        )

    def _batch_finished(self, seconds: float | None) -> None:
        if seconds is not None:
            self.run_s = seconds
        self.loop.call_soon_threadsafe(self.worker.gpu.finished, self.record.id)

    # -- on the event loop -----------------------------------------------------------------------

    def _extend(self, seconds: float) -> None:
        if not self.deadline.expired():
            with contextlib.suppress(RuntimeError):  # the wait already ended
                self.deadline.reschedule(self.loop.time() + seconds)

    def _loaded(self) -> None:
        self.last_step = time.monotonic()
        self._extend(self.limit_s)

    def _started(self, size: int = 1) -> None:
        # As the thread takes the job; Redis is written beside the call.
        self._extend(LOAD_TIMEOUT_S)
        worker, record = self.worker, self.record
        worker.gpu.started(record.id, self.estimate, record.params.model)
        metrics.observe_since(metrics.WAIT_SECONDS, record.created_at, *self.labels)
        transition = worker.records.transition(
            record.id,
            JobStatus.RUNNING,
            only_from=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.ENCODING],
            attempts=record.attempts + 1,
            batch_size=size,
            worker_id=worker.worker_id,
            timeout_s=self.limit_s,
            note="",
        )
        self.mark = asyncio.create_task(transition)
        self.publisher.status(JobStatus.RUNNING)


async def _generate(ctx: dict[str, object], job_id: str) -> None:
    worker = ctx["worker"]
    assert isinstance(worker, GenerationWorker)
    try_ = ctx.get("job_try", 1)
    with logs.job_context(job_id):
        await worker.process(job_id, try_ if isinstance(try_, int) else 1)


class GenerationWorker(QueueWorker):
    """An arq worker on one generation queue, sharing the process's GPU slot and runner."""

    kind = "generation"

    def __init__(
        self,
        *,
        redis: ArqRedis,
        queue: str,
        settings: Settings,
        runner: PipelineRunner,
        gpu: GpuSlot,
        pipeline_thread: ThreadPoolExecutor,
        results: ResultStore | None = None,
        classifier: Scorer | None = None,
        worker_id: str | None = None,
        poll_delay_s: float = 0.5,
    ) -> None:
        super().__init__(
            [func(_generate, name=GENERATE)],
            redis=redis,
            queue=queue,
            worker_id=worker_id,
            lease_s=settings.dead_worker_s,
            heartbeat_s=settings.heartbeat_s,
            poll_delay_s=poll_delay_s,
            max_jobs=MAX_JOBS * settings.batch_max,
        )
        self.settings = settings
        self.runner = runner
        self.gpu = gpu
        self.pipeline_thread = pipeline_thread
        self.records = RecordStore(
            redis, finished_ttl_s=settings.history_ttl_s, on_status=[settle_moved]
        )
        self.results = results or RedisResultStore(redis, ttl_s=settings.result_ttl_s)
        self.classifier = classifier
        self.policy = PolicyStore(redis, settings)
        self.runs: dict[str, _Run] = {}
        self.batches: dict[str, Batch] = {}
        """The batch of each job claimed into one (batching on)."""
        self.on_stall: Callable[[], None] = self._fresh_pipeline_thread
        """Called when a stalled pipeline call is abandoned: start a fresh pipeline thread."""
        gpu.listeners.append(self.wake)
        gpu.queues[queue] = self.wake
        self.peers_elsewhere = False
        """Whether a worker of another process serves one of this GPU's queues (each beat)."""
        self.peers = Peers()
        """The other GPUs on this GPU's queues, from their heartbeats (each beat)."""

    # -- QueueWorker hooks ---------------------------------------------------------------------

    async def claim(self, slots: int) -> list[tuple[str, int]]:
        """Jobs for a model the GPU has loaded first (``worker.affinity``), across the queues
        that share it; in queue order (one round trip) when there is nothing to prefer."""
        wait_s = self.settings.affinity_wait_s
        resident = {*getattr(self.runner, "resident", ()), *filter(None, [self.gpu.model])}
        if wait_s <= 0 or not resident:
            return await super().claim(slots)
        queues = list(self.gpu.queues) or [self.queue_name]
        # A job that needs a load here is left for a peer that has its model and is free in
        # time; the grace is for peers that do not say what they hold, and with nobody else
        # to take the job, leaving it would only wait.
        peers = self.peers
        grace = LOAD_GRACE_S if self.peers_elsewhere and peers.blind else 0.0
        load_s = {**peers.load_s, **self.gpu.load_s}
        run_s = {**peers.run_s, **self.gpu.run_s}
        return await claim_by_affinity(
            self,
            slots,
            resident,
            wait_s=wait_s,
            queues=queues,
            grace_s=grace,
            peers=peers.known,
            load_s=load_s,
            run_s=run_s,
        )

    def info(self) -> dict[str, Any]:
        """The heartbeat, with what the peers' chooser needs of this GPU."""
        resident = {*getattr(self.runner, "resident", ()), *filter(None, [self.gpu.model])}
        return {
            **super().info(),
            "gpu": self.gpu.id,
            "resident": sorted(resident),
            "free_at": self.gpu.free_at(),
            "load_s": {m: round(s, 2) for m, s in self.gpu.load_s.items()},
            "run_s": {m: round(s, 2) for m, s in self.gpu.run_s.items()},
        }

    async def beat(self) -> None:
        """The heartbeat; also notes whether another process serves this GPU's queues."""
        await super().beat()
        workers = await live_workers(self.pool)
        here = (socket.gethostname(), os.getpid())
        self.peers_elsewhere = any(
            (w.get("host"), w.get("pid")) != here and w.get("queue") in self.gpu.queues
            for w in workers
        )
        self.peers = peers_from(workers, self.gpu.id, self.gpu.queues, here)
        self.peers_elsewhere = self.peers_elsewhere or bool(self.peers.known)

    def wake_peer(self, queue: str) -> None:
        """The affinity choice is a job in another queue of this GPU: wake its worker."""
        wake = self.gpu.queues.get(queue)
        if wake is not None:
            wake()

    def free_slots(self) -> int:
        """At most one job waiting for the GPU, fetched near the end of the running one."""
        return 1 if self.gpu.wants_job() else 0

    def job_fetched(self, job_id: str) -> None:
        """Count the job as waiting for the GPU from the moment it is claimed."""
        self.gpu.pending.add(job_id)
        self.runs[job_id] = _Run(job_id)

    def job_released(self, job_id: str) -> None:
        """Forget the job; a batch it never joined goes on without it."""
        self.gpu.pending.discard(job_id)
        self.runs.pop(job_id, None)
        batch = self.batches.pop(job_id, None)
        if batch is not None:
            # Here, not in process(): arq may end a claimed job without running it (max tries).
            batch.leave(job_id)

    def cancel_requested(self, job_id: str) -> None:
        """Stop the job at its next step (or before it starts)."""
        run = self.runs.get(job_id)
        if run is not None:
            run.stop("cancel")

    def lease_lost(self, job_id: str) -> None:
        """Another worker may run the job now: stop without writing its record."""
        super().lease_lost(job_id)
        run = self.runs.get(job_id)
        if run is not None:
            run.stop("lease")

    async def gave_up(self, job_id: str) -> None:
        """arq will not run the job again (it kept killing its workers): fail it clearly.

        Not once its result is stored (delivering): the delivery queue posts it whatever
        became of the generation job.
        """
        record = await self.records.transition(
            job_id,
            JobStatus.FAILED,
            only_from=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.ENCODING],
            error_code=WorkerLost.code,
            error_message=WorkerLost.default_message,
        )
        if record is not None:
            metrics.FAILURES.labels(WorkerLost.code).inc()
            await self._announce(record)

    # -- a job -----------------------------------------------------------------------------------

    async def process(self, job_id: str, job_try: int) -> None:
        """Run one job from its record to an enqueued delivery (or a final state)."""
        run = self.runs.setdefault(job_id, _Run(job_id))
        try:
            await self._process(run, job_try)
        except _Shutdown:
            raise asyncio.CancelledError from None
        except (RedisError, OSError) as exc:
            # Redis stayed away longer than the client's retries: put the job back rather
            # than let arq count it as done (the record would be stuck mid-way).
            log.warning("job %s: Redis failed mid-job (%s); re-queued", job_id, exc)
            raise Retry(defer=REDIS_RETRY_S) from exc
        finally:
            self.gpu.pending.discard(job_id)

    async def _process(self, run: _Run, job_try: int) -> None:
        job_id = run.job_id
        record = await self.records.get(job_id)
        if record is None:
            log.warning("job %s: no record (expired?); dropping it", job_id)
            return
        if record.finished or record.status == JobStatus.DELIVERING:
            # A re-run after the result was stored (or the job ended): only the delivery is
            # left, and enqueuing it twice is harmless.
            if record.posted_at is None and record.status != JobStatus.DELIVERED:
                await enqueue_delivery(self.pool, record)
            return
        if await self.pool.exists(keys.cancel_flag(job_id)):
            run.stop("cancel")
        if self.settings.batch_max > 1 and run.reason is None:
            await claim_batch(self, record)
        batch = self.batches.get(job_id)
        size = batch.size if batch is not None else 1
        inputs = JobInputs()
        if needs_inputs(record) and run.reason is None:
            try:
                inputs = await load_inputs(self.pool, record, self.settings)
            except UserError as exc:
                await self._fail(record, exc.code, exc.user_message)
                return
        if record.params.task.needs_image and inputs.image is None and run.reason is None:
            missing = InvalidImage("The input image expired before the job ran. Send it again.")
            await self._fail(record, missing.code, missing.user_message)
            return
        if inputs.video is not None and run.reason is None:
            # A clip is scored as a result would be, before any GPU time goes into it.
            verdict = await self._score(record, inputs.video, inputs.fps)
            if verdict.withheld:
                refused = "The video you sent was refused by this server's content policy."
                await self._fail(record, ContentRefused.code, refused)
                return
        spc = (await seconds_per_credit(self.pool, [record.params.model]))[record.params.model]
        # A batch's call runs its jobs together: its limit and estimate are theirs added up.
        timeout = size * job_timeout_s(spc, record.cost, self.settings.job_timeout_factor)
        estimate = None if spc is None else size * spc * max(record.cost, 0.01)
        publisher = ProgressPublisher(self.pool, job_id=job_id, platform=record.platform)
        if run.reason is not None:
            await self._stopped(run, record)  # cancelled before it reached the GPU
            return
        try:
            output = await self._run_pipeline(run, record, inputs, timeout, estimate, publisher)
        except asyncio.CancelledError:
            # The worker is stopping (SIGTERM): the thread has been told to stop and has
            # returned; put the job back for the next worker at once.
            await self._requeue(job_id, "re-queued: its worker was stopping")
            raise
        finally:
            await publisher.aclose()
        if output is None:
            return
        await self._finish(record, output, publisher, inputs.note)

    async def _run_pipeline(
        self,
        run: _Run,
        record: JobRecord,
        inputs: JobInputs,
        limit_s: float,
        estimate: float | None,
        publisher: ProgressPublisher,
    ) -> GenerationOutput | None:
        """Hold the GPU for the pipeline call only; None when the job ended another way."""
        if run.reason is not None:
            await self._stopped(run, record)
            return None
        call = _PipelineCall(
            self, run, record, inputs, limit_s=limit_s, estimate=estimate, publisher=publisher
        )
        future = call.submit()
        output: GenerationOutput | None = None
        try:
            async with call.deadline:
                output = await self._watch(future, call)
        except _Stalled:
            run.stop("stall")
            done, _ = await asyncio.wait({future}, timeout=STALL_GRACE_S)
            if not done:
                self._abandon(record.id)
        except Retry:
            raise
        except TimeoutError:
            if not call.deadline.expired():
                raise
            run.stop("timeout")
            await self._settle(future)
        except asyncio.CancelledError:
            # Shutting down: stop the thread, and let the RUNNING mark land before the job is
            # put back.
            run.stop("shutdown")
            await self._settle(future)
            if call.mark is not None:
                await asyncio.wait({call.mark})
            raise
        except Exception:
            pass  # read from the future by _after_stop
        finally:
            self.gpu.pending.discard(record.id)
        if call.mark is not None:
            record = await call.mark or record
        if output is not None:
            await record_duration(self.pool, record.params.model, call.run_s, record.cost)
            metrics.RUN_SECONDS.labels(*call.labels).observe(call.run_s)
            return output
        await self._after_stop(run, record, future)
        return None

    async def _watch(
        self, future: asyncio.Future[GenerationOutput], call: _PipelineCall
    ) -> GenerationOutput:
        """The call's output; ``_Stalled`` once it has gone ``stall_s`` without a step."""
        stall_s = self.settings.stall_s
        while True:
            done, _ = await asyncio.wait({future}, timeout=min(1.0, stall_s / 4))
            if done:
                if future.cancelled():
                    # Dropped from an abandoned pipeline thread's queue: run it again.
                    raise Retry(defer=0.5)
                return future.result()
            if call.stalled(stall_s):
                raise _Stalled

    def _abandon(self, job_id: str) -> None:
        """Give up on a pipeline thread that ignores its cancel event; start a fresh one."""
        log.error(
            "job %s: no pipeline step for %.0fs and the call did not stop; "
            "its thread is abandoned and a fresh one started",
            job_id,
            self.settings.stall_s,
        )
        self.gpu.finished(job_id)
        self.on_stall()

    def _fresh_pipeline_thread(self) -> None:
        old = self.pipeline_thread
        self.pipeline_thread = PipelineThread()
        old.shutdown(wait=False, cancel_futures=True)

    async def _settle(self, future: asyncio.Future[GenerationOutput]) -> None:
        """Wait for the pipeline thread to return after its cancel event was set."""
        while True:
            done, _ = await asyncio.wait({future}, timeout=SETTLE_LOG_S)
            if done:
                if not future.cancelled():
                    future.exception()  # retrieved: how it ended is decided by the caller
                return
            log.warning(
                "pipeline thread still running %.0fs after it was told to stop", SETTLE_LOG_S
            )

    async def _after_stop(
        self, run: _Run, record: JobRecord, future: asyncio.Future[GenerationOutput]
    ) -> None:
        exc = future.exception() if future.done() and not future.cancelled() else None
        if run.reason is not None:
            await self._stopped(run, record)
            return
        if isinstance(exc, OutOfMemory):
            await self._retry_or_fail(record, exc, limit=OOM_RETRIES)
        elif isinstance(exc, TransientError):
            await self._retry_or_fail(record, exc, limit=TRANSIENT_RETRIES)
        elif isinstance(exc, UserError):
            await self._fail(record, exc.code, exc.user_message)
        elif isinstance(exc, ModelUnavailable):
            # The operator's sentence in the log, the chat's in the job; other models go on.
            log.error("job %s: %s", record.id, exc.message)
            await self._fail(record, exc.code, exc.user_message)
        else:
            await self._internal(record, exc)

    async def _stopped(self, run: _Run, record: JobRecord) -> None:
        if run.reason == "cancel":
            done = await self.records.transition(
                record.id,
                JobStatus.CANCELLED,
                only_from=[JobStatus.QUEUED, JobStatus.RUNNING],
                error_code=Cancelled.code,
                error_message=Cancelled.default_message,
            )
            await self.pool.delete(keys.cancel_flag(record.id))
            if done is not None:
                await self._announce(done)
        elif run.reason == "timeout":
            timeout = JobTimeout(limit_s=record.timeout_s or 0)
            await self._fail(record, timeout.code, timeout.user_message)
        elif run.reason == "stall":
            stalled = JobStalled(stall_s=self.settings.stall_s)
            await self._fail(record, stalled.code, stalled.user_message)
        elif run.reason == "shutdown":
            raise _Shutdown
        elif run.reason == "lease":
            # Another worker may own the job now: leave its record alone, but keep the job in
            # the queue (returning would let arq drop it) in case nobody has taken it yet.
            raise Retry(defer=REDIS_RETRY_S)

    async def _retry_or_fail(self, record: JobRecord, exc: TransientError, *, limit: int) -> None:
        if record.transient_retries >= limit:
            await self._fail(record, exc.code, exc.user_message)
            return
        await self.records.transition(
            record.id,
            JobStatus.QUEUED,
            transient_retries=record.transient_retries + 1,
            note=f"retrying after {exc.code}",
        )
        log.warning("job %s: %s; retrying", record.id, exc)
        # arq puts the job back with this delay; OOM gets a moment for memory to settle.
        raise Retry(defer=exc.retry_after or 2.0 * (record.transient_retries + 1))

    async def _internal(self, record: JobRecord, exc: BaseException | None) -> None:
        ref = os.urandom(4).hex()
        log.error("job %s failed (ref %s)", record.id, ref, exc_info=exc)
        await self._fail(
            record, ReelbotError.code, f"Something went wrong (ref {ref}).", error_ref=ref
        )

    async def _fail(self, record: JobRecord, code: str, message: str, **fields: Any) -> None:
        done = await self.records.transition(
            record.id, JobStatus.FAILED, error_code=code, error_message=message, **fields
        )
        if done is not None:
            metrics.FAILURES.labels(code).inc()
            await self._announce(done)

    async def _cancelled_meanwhile(self, record: JobRecord, states: list[JobStatus]) -> bool:
        """A cancel that came after the last step (or during the encode) wins over the post:
        the job ends cancelled and refunded, and nothing is posted."""
        if not await self.pool.exists(keys.cancel_flag(record.id)):
            return False
        done = await self.records.transition(
            record.id,
            JobStatus.CANCELLED,
            only_from=states,
            error_code=Cancelled.code,
            error_message=Cancelled.default_message,
        )
        await self.pool.delete(keys.cancel_flag(record.id))
        if done is not None:
            await self._announce(done)
        return True

    async def _announce(self, record: JobRecord) -> None:
        """A final state: tell the adapter now and enqueue its notice delivery."""
        publisher = ProgressPublisher(self.pool, job_id=record.id, platform=record.platform)
        publisher.status(record.status, record.error_message)
        await publisher.aclose()
        await enqueue_delivery(self.pool, record)

    async def _requeue(self, job_id: str, note: str) -> None:
        await self.records.transition(
            job_id,
            JobStatus.QUEUED,
            only_from=[JobStatus.RUNNING, JobStatus.ENCODING],
            note=note,
        )

    async def _finish(
        self,
        record: JobRecord,
        output: GenerationOutput,
        publisher: ProgressPublisher,
        note: str = "",
    ) -> None:
        """Encode, store and hand over to delivery; overlaps the next job's pipeline call.

        A grid (count > 1) is encoded twice over: the composed grid as the result, and each
        image alone as a tile, every one fitted to the budget.
        """
        from reelbot.generation.media import encode_image, encode_video

        params = record.params
        if await self._cancelled_meanwhile(record, [JobStatus.RUNNING]):
            return
        encoding = await self.records.transition(
            record.id, JobStatus.ENCODING, timings=dict(output.timings)
        )
        if encoding is None:
            return  # cancelled or taken over meanwhile
        publisher.status(JobStatus.ENCODING)
        budget = budget_for(record.request.reply, video=params.task.is_video)
        started = time.monotonic()
        # Scored on the CPU beside the encode, while the GPU already runs the next job.
        scoring = asyncio.ensure_future(self._score(record, output.frames, output.fps))
        tiles: list[EncodedMedia] = []
        try:
            media: EncodedMedia
            if params.count > 1:
                media, tiles = await asyncio.to_thread(_encode_grid, output.frames, budget)
            elif params.task.is_video:
                fps = output.fps or params.fps or 16
                media = await asyncio.to_thread(
                    encode_video, output.frames, fps=fps, max_bytes=budget
                )
            else:
                media = await asyncio.to_thread(encode_image, output.frames[0], max_bytes=budget)
        except ValueError as exc:
            log.warning("job %s: %s", record.id, exc)
            scoring.cancel()  # nothing will be posted: its verdict does not matter
            too_large = OutputTooLarge(limit_bytes=budget)
            await self._fail(record, too_large.code, too_large.user_message)
            return
        except asyncio.CancelledError:
            scoring.cancel()
            await self._requeue(record.id, "re-queued: its worker was stopping")
            raise
        encode_s = time.monotonic() - started
        verdict = await scoring
        if verdict.withheld:
            # FAILED refunds the reservation (records.settle); nothing is stored or posted.
            await self._fail(
                record,
                ContentRefused.code,
                "The result was withheld by this server's content policy. "
                "Your credits were returned.",
            )
            await self.policy.withheld(
                record.requester,
                job_id=record.id,
                prompt=record.params.prompt,
                model=record.params.model,
                score=verdict.score,
            )
            return
        if await self._cancelled_meanwhile(record, [JobStatus.ENCODING]):
            return
        ref = await self.results.put(record.id, media.data, mime=media.mime)
        tile_infos = []
        for index, tile in enumerate(tiles):
            tile_ref = await self.results.put(record.id, tile.data, mime=tile.mime, part=index)
            tile_infos.append(_info(tile_ref, tile, spoiler=verdict.spoiler))
        info = _info(ref, media, spoiler=verdict.spoiler, nsfw_score=verdict.score)
        texts = tuple(getattr(output, "texts", ()))  # /describe's suggestions, numbered
        lines = [*(f"{i + 1}. {text}" for i, text in enumerate(texts)), info.note, note]
        said = "\n".join(line for line in lines if line)  # and what the input lost (its sound)
        update = {"tiles": tuple(tile_infos), "texts": texts, "note": said.strip()}
        info = info.model_copy(update=update)
        delivering = await self.records.transition(
            record.id,
            JobStatus.DELIVERING,
            result=info,
            timings={**output.timings, "encode": encode_s},
        )
        if delivering is None:
            return
        publisher.status(JobStatus.DELIVERING)
        await enqueue_delivery(self.pool, delivering)

    async def _score(
        self, record: JobRecord, frames: Sequence[Image.Image], fps: float | None
    ) -> Verdict:
        """Score the frames (first, last, one a second) and decide by the server's policy."""
        from reelbot.generation.safety import score_frames

        rules = await self.policy.output_rules(record.requester)
        score: float | None = None
        if self.classifier is not None:
            started = time.monotonic()
            try:
                score = await asyncio.to_thread(score_frames, self.classifier, frames, fps)
            except Exception:
                # Fail closed: a result nobody could check is treated as flagged.
                log.exception("job %s: the NSFW classifier failed; result flagged", record.id)
                score = 1.0
            log.debug("job %s: nsfw %.3f in %.3fs", record.id, score, time.monotonic() - started)
        return decide(
            score,
            threshold=rules.threshold,
            mode=rules.mode,
            nsfw_mode=rules.nsfw_mode,
            nsfw_channel=record.request.reply.nsfw_channel,
        )


def _encode_grid(
    frames: Sequence[Image.Image], budget: int
) -> tuple[EncodedMedia, list[EncodedMedia]]:
    """A grid's images composed into one (the result) and each alone (the tiles), each fitted
    to ``budget``; in a thread (``EncodedMedia`` values)."""
    from reelbot.generation.grid import compose_grid
    from reelbot.generation.media import encode_image

    grid = encode_image(compose_grid(frames), max_bytes=budget)
    return grid, [encode_image(frame, max_bytes=budget) for frame in frames]


def _info(
    ref: str, media: EncodedMedia, *, spoiler: bool, nsfw_score: float | None = None
) -> ResultInfo:
    """Where one encoded result (or one image of a grid) is stored and what it is."""
    return ResultInfo(
        ref=ref,
        mime=media.mime,
        ext=media.ext,
        size=len(media.data),
        width=media.width,
        height=media.height,
        frames=media.frames,
        fps=media.fps,
        note=media.note,
        spoiler=spoiler,
        nsfw_score=nsfw_score,
    )


_pipeline_threads = itertools.count()


class PipelineThread(ThreadPoolExecutor):
    """The single thread every pipeline call of a process goes through, named uniquely so that
    an abandoned one can be found among the live threads."""

    def __init__(self) -> None:
        self.name = f"pipeline-{next(_pipeline_threads)}"
        super().__init__(max_workers=1, thread_name_prefix=self.name)


def _still_running(executors: Sequence[PipelineThread]) -> int:
    """How many of these (abandoned) pipeline threads are still stuck in a call."""
    prefixes = tuple(f"{ex.name}_" for ex in executors)
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefixes) and t.is_alive())


async def serve_generation(
    settings: Settings,
    runner: PipelineRunner,
    queues: Sequence[str],
    *,
    redis_url: str,
    stop: asyncio.Event,
    results: ResultStore | None = None,
    ready: Callable[[list[GenerationWorker]], None] | None = None,
) -> int:
    """Run one generation worker per queue on one GPU until ``stop`` is set.

    Returns how many pipeline calls abandoned by the watchdog are still hung: their threads
    never end, so the process must exit without waiting for them (``os._exit``).
    """
    from reelbot.store.connection import connect

    classifier: Scorer | None = None
    if settings.nsfw_check:
        from reelbot.generation.safety import load_classifier

        classifier = await asyncio.to_thread(load_classifier, threads=CLASSIFIER_THREADS)
    gpu = GpuSlot()
    pipeline_thread = PipelineThread()
    abandoned: list[PipelineThread] = []
    workers: list[GenerationWorker] = []

    def fresh_pipeline_thread() -> None:
        # The workers of all queues share one pipeline thread: give them all the new one.
        nonlocal pipeline_thread
        abandoned.append(pipeline_thread)
        pipeline_thread = PipelineThread()
        for w in workers:
            w.pipeline_thread = pipeline_thread
        abandoned[-1].shutdown(wait=False, cancel_futures=True)

    try:
        # Before any job is taken: a load or compile now is not charged to the first job.
        await preload_defaults(settings, runner, queues, pipeline_thread, stop, gpu)
        if stop.is_set():
            return 0
        workers = [
            GenerationWorker(
                redis=connect(redis_url, queue=queue),
                queue=queue,
                settings=settings,
                runner=runner,
                gpu=gpu,
                pipeline_thread=pipeline_thread,
                results=results,
                classifier=classifier,
            )
            for queue in queues
        ]
        for w in workers:
            w.on_stall = fresh_pipeline_thread
        tasks = [asyncio.create_task(w.async_run()) for w in workers]
        if ready is not None:
            ready(workers)
        waiter = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            # close() cancels running jobs: each stops its pipeline and goes back to the queue.
            await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
            results_ = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in results_:
                if isinstance(outcome, BaseException) and not isinstance(
                    outcome, asyncio.CancelledError
                ):
                    log.error("worker stopped with an error", exc_info=outcome)
    finally:
        # Wait for the pipeline thread in use; an abandoned (hung) one is left behind.
        pipeline_thread.shutdown(wait=True)
    hung = _still_running(abandoned)
    if hung:
        log.warning("%d abandoned pipeline call(s) still hung at shutdown", hung)
    return hung
