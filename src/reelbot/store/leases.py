"""An arq worker that wakes on submit, holds its jobs by short leases, and heartbeats.

Stock arq polls every ``poll_delay`` and marks a fetched job with an in-progress key that lives
for max(all job timeouts) + 10 s, so a SIGKILLed worker's job waits that long before anyone
runs it again. Here the in-progress key is a lease: its value names the holder and it lives
``lease_s`` (Settings.dead_worker_s), renewed on every heartbeat. When a worker dies its leases
lapse and any other worker picks the jobs up on its next poll: re-run within ``lease_s`` plus
a poll, whatever the jobs' timeouts. SIGTERM goes through arq: the running job's task is
cancelled, the job cleans up and arq leaves it at the head of the queue for the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss, result_key_prefix
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import Function, Worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from reelbot import metrics
from reelbot.store import keys, serializer

log = logging.getLogger(__name__)

__all__ = ["QueueWorker", "WorkerInfo", "live_workers", "new_worker_id"]

SCAN_LIMIT = 200
"""How many queue entries one poll looks at; jobs held by other workers are skipped."""
MAX_TRIES = 5
"""Runs of one job (crashes and transient retries included) before arq gives up on it."""
CLOSE_WAIT_S = 10.0
"""How long ``close`` waits for the poll loop to stop before closing the pool anyway."""

# Claim up to ARGV[2] due jobs that nobody holds, in queue order, in one round trip. The
# in-progress key is arq's own, so stock arq workers on the same queue still respect it.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[6])
local out = {}
for i = 1, #due, 2 do
  local key = ARGV[5] .. due[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
    table.insert(out, due[i])
    table.insert(out, due[i + 1])
    if #out >= 2 * tonumber(ARGV[2]) then break end
  end
end
return out
"""

# Renew the leases still held by ARGV[1]; return the 1-based indexes of those lost.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""


# End a run as arq's finish_job / finish_failed_job would, unless the lease says the run is
# stale. KEYS: in-progress, job, retry, queue, abort set, result. ARGV: holder id, "finish" or
# "retry", score increment ("" for none), job id, result ("" for none), its ttl ms ("" for no
# expiry). Returns 0 when another worker holds the lease (nothing touched), 2 when a retry
# found the job finished by someone else (its stray queue entry removed), 1 otherwise.
_END = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if ARGV[2] == 'finish' then
  if ARGV[5] ~= '' then
    if ARGV[6] ~= '' then
      redis.call('SET', KEYS[6], ARGV[5], 'PX', ARGV[6])
    else
      redis.call('SET', KEYS[6], ARGV[5])
    end
  end
  redis.call('DEL', KEYS[3], KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[5], ARGV[4])
  redis.call('ZREM', KEYS[4], ARGV[4])
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[4], ARGV[4])
  redis.call('DEL', KEYS[1])
  return 2
end
if ARGV[3] ~= '' then redis.call('ZINCRBY', KEYS[4], ARGV[3], ARGV[4]) end
redis.call('DEL', KEYS[1])
return 1
"""


def new_worker_id() -> str:
    """A worker id that says where the worker runs: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class WorkerInfo(dict[str, Any]):
    """A worker's heartbeat payload: id, queue, kind, pid, host, started_at, jobs; a generation
    worker adds its GPU's ``gpu`` (an id shared by the queues of one GPU), ``resident`` (the
    models loaded), ``free_at`` (epoch seconds its running call is expected to end; null:
    unknown), ``load_s`` (model -> seconds its last load took) and ``run_s`` (model -> seconds
    its last pipeline call took), for ``worker.candidates``."""


async def live_workers(redis: Redis, queue: str | None = None) -> list[WorkerInfo]:
    """Workers whose heartbeat has not lapsed (optionally only those on ``queue``)."""
    ids = sorted(m.decode() for m in await redis.smembers(keys.WORKERS))  # type: ignore[misc]
    if not ids:
        return []
    raws = await redis.mget([keys.worker(i) for i in ids])
    gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
    if gone:
        await redis.srem(keys.WORKERS, *gone)  # type: ignore[misc]
    infos = [WorkerInfo(json.loads(raw)) for raw in raws if raw is not None]
    return [i for i in infos if queue is None or i.get("queue") == queue]


class QueueWorker(Worker):
    """arq's Worker with wake-on-submit polling, leased jobs and a heartbeat."""

    kind = "queue"

    def __init__(
        self,
        functions: Sequence[Function | WorkerCoroutine],
        *,
        redis: ArqRedis,
        queue: str,
        worker_id: str | None = None,
        lease_s: float = 10.0,
        heartbeat_s: float = 2.0,
        poll_delay_s: float = 0.5,
        max_jobs: int = 1,
        on_startup: StartupShutdown | None = None,
        on_shutdown: StartupShutdown | None = None,
        max_tries: int = MAX_TRIES,
        close_redis: bool = True,
    ) -> None:
        if heartbeat_s * 2 > lease_s:
            raise ValueError("heartbeat_s must be at most half of lease_s, or leases lapse")
        super().__init__(
            functions,
            queue_name=queue,
            redis_pool=redis,
            # Signals are the process's business: one process may run several workers (an
            # image and a video queue on one GPU), and a loop has one handler per signal.
            handle_signals=False,
            on_startup=on_startup,
            on_shutdown=on_shutdown,
            max_jobs=max_jobs,
            # Jobs enforce their own timeouts (cooperatively: a pipeline thread cannot be
            # killed); arq's only ends the awaiting task and would leave the thread running.
            job_timeout=7 * 24 * 3600,
            keep_result=0,
            poll_delay=poll_delay_s,
            max_tries=max_tries,
            retry_jobs=True,
            allow_abort_jobs=False,
            job_serializer=serializer.dumps,
            job_deserializer=serializer.loads,
            health_check_interval=60,
            log_results=False,
        )
        self.worker_id = worker_id or new_worker_id()
        self.lease_ms = int(lease_s * 1000)
        self.in_progress_timeout_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.started_at = time.time()
        self.held: set[str] = set()
        self.close_redis = close_redis
        self._wake = asyncio.Event()
        self._closing = False
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._end = redis.register_script(_END)
        self._ending: set[asyncio.Task[Any]] = set()

    # -- hooks for subclasses ------------------------------------------------------------

    def free_slots(self) -> int:
        """How many more jobs to fetch now."""
        return self.max_jobs - self.job_counter

    def job_fetched(self, job_id: str) -> None:
        """Called when a job has been claimed, before it runs."""

    def job_released(self, job_id: str) -> None:
        """Called when a job's arq task has ended, whatever the outcome."""

    def cancel_requested(self, job_id: str) -> None:
        """A cancel for a job this worker holds."""

    async def gave_up(self, job_id: str) -> None:
        """arq stopped trying this job (too many tries, or its definition expired)."""

    def lease_lost(self, job_id: str) -> None:
        """Another worker may now run this job: stop working on it without writing state."""
        log.warning("job %s: lease lost (Redis unreachable too long?); abandoning it", job_id)

    def info(self) -> dict[str, Any]:
        """The heartbeat payload."""
        return {
            "id": self.worker_id,
            "queue": self.queue_name,
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at,
            "jobs": sorted(self.held),
        }

    # -- the loop --------------------------------------------------------------------------

    def wake(self) -> None:
        """Poll now rather than after ``poll_delay``."""
        self._wake.set()

    async def main(self) -> None:
        """Poll when woken (a submit, a free slot) or every ``poll_delay`` as a fallback."""
        if self._closing:
            return  # closed before it started: nothing may touch the pool any more
        self.ctx["redis"] = self.pool
        self.ctx["worker"] = self
        if self.on_startup:
            await self.on_startup(self.ctx)
        helpers = [asyncio.create_task(self._listen()), asyncio.create_task(self._beat())]
        backoff = 0.05
        try:
            while not self._closing:
                self._wake.clear()
                try:
                    await self._poll_iteration()
                    backoff = 0.05
                except (RedisError, OSError) as exc:
                    # A server restart or a network blip: keep the jobs we hold, poll again.
                    log.warning(
                        "%s: poll failed (%s); retrying in %.1fs", self.queue_name, exc, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_delay_s):
                        await self._wake.wait()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def claim(self, slots: int) -> list[tuple[str, int]]:
        """Claim up to ``slots`` due jobs nobody holds, in queue order: (job id, score) pairs."""
        claimed = await self._claim(
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                slots,
                self.worker_id,
                self.lease_ms,
                keys.arq_in_progress(""),
                SCAN_LIMIT,
            ],
        )
        return [
            (claimed[i].decode(), int(float(claimed[i + 1]))) for i in range(0, len(claimed), 2)
        ]

    async def _poll_iteration(self) -> None:
        slots = min(self.free_slots(), self.max_jobs - self.job_counter)
        if slots > 0 and self.allow_pick_jobs:
            for job_id, score in await self.claim(slots):
                await self.start_claimed(job_id, score)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                # Surfaces a bug in run_job itself (arq does the same).
                task.result()
        await self.heart_beat()

    async def start_claimed(self, job_id: str, score: int) -> None:
        """Run a job whose in-progress key this worker has just set to its own lease.

        A job this worker still runs is not started again: its lease lapsed (Redis was away
        longer than it) and this poll took it back before the old run had ended. The lease is
        this worker's again; the old run, told to stop or not, ends the job as usual.
        """
        running = self.tasks.get(job_id)
        if running is not None and not running.done():
            log.info("job %s: claimed again while its run here goes on; not started twice", job_id)
            return
        # arq's accounting, as in its start_jobs: the done callback releases both.
        await self.sem.acquire()
        if self._closing:  # checked after the wait for a slot, during which close may begin
            self.sem.release()
            await self._release(job_id)
            return
        self.job_counter += 1
        self.held.add(job_id)
        self.job_fetched(job_id)
        task = asyncio.create_task(self.run_job(job_id, score))
        task.add_done_callback(lambda _: self._job_done(job_id))
        self.tasks[job_id] = task

    async def _release(self, job_id: str) -> None:
        """Give back a job claimed while closing: it waits for the next worker, not the lease."""
        with contextlib.suppress(RedisError, OSError):
            await self._renew(keys=[keys.arq_in_progress(job_id)], args=[self.worker_id, 1])
        log.info("job %s: claimed while closing; left for the next worker", job_id)

    def _job_done(self, job_id: str) -> None:
        self._release_sem_dec_counter_on_complete()
        self.held.discard(job_id)
        self.job_released(job_id)
        self.wake()

    # -- helpers running beside the loop -----------------------------------------------------

    async def _listen(self) -> None:
        channels = [keys.wake_channel(self.queue_name), keys.CONTROL_CHANNEL]
        control = keys.CONTROL_CHANNEL.encode()
        while True:
            pubsub = self.pool.pubsub()
            try:
                await pubsub.subscribe(*channels)
                self.wake()  # submits may have been missed while (re)subscribing
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None:
                        continue
                    if message["channel"] == control:
                        self._on_control(message["data"])
                    else:
                        self.wake()
            except (RedisError, OSError) as exc:
                log.warning("%s: subscription lost (%s); resubscribing", self.queue_name, exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_control(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        job_id = message.get("cancel")
        if isinstance(job_id, str) and job_id in self.held:
            self.cancel_requested(job_id)

    async def _beat(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.warning("%s: heartbeat failed: %s", self.queue_name, exc)
            await asyncio.sleep(self.heartbeat_s)

    async def beat(self) -> None:
        """Announce this worker, renew its leases and pick up cancels that pub/sub missed."""
        held = sorted(self.held)
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.set(keys.worker(self.worker_id), json.dumps(self.info()), px=self.lease_ms)
            pipe.sadd(keys.WORKERS, self.worker_id)
            for job_id in held:
                pipe.exists(keys.cancel_flag(job_id))
            replies = await pipe.execute()
        metrics.HEARTBEATS.labels(self.queue_name, self.kind).inc()
        metrics.LAST_HEARTBEAT.labels(self.queue_name, self.kind).set_to_current_time()
        for job_id, flagged in zip(held, replies[2:], strict=True):
            if flagged:
                self._on_control(json.dumps({"cancel": job_id}).encode())
        if held:
            lost = await self._renew(
                keys=[keys.arq_in_progress(j) for j in held], args=[self.worker_id, self.lease_ms]
            )
            for index in lost:
                job_id = held[int(index) - 1]
                if job_id in self.held:
                    self.lease_lost(job_id)

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's end of a run (done, or back in the queue), skipped when the run is stale.

        A run whose lease another worker holds leaves the job to it; a retry of a job that
        another worker finished meanwhile does not put it back (arq's ZINCRBY would add a new
        queue entry, and the next run would find the job gone and give it up).
        """
        if keep_in_progress is not None:  # cron jobs keep their key; none run here
            await super().finish_job(
                job_id,
                finish,
                result_data,
                result_timeout_s,
                keep_result_forever,
                incr_score,
                keep_in_progress,
            )
            return
        ttl = "" if keep_result_forever or not result_timeout_s else int(result_timeout_s * 1000)
        await self._end_run(job_id, "finish" if finish else "retry", incr_score, result_data, ttl)

    async def _end_run(
        self,
        job_id: str,
        mode: str,
        incr_score: int | None = None,
        result_data: bytes | None = None,
        ttl: int | str = "",
    ) -> int:
        # arq shields this step from its job's cancellation, so it can outlive the task that
        # ``close`` waits for: ``close`` waits for it too, or it opens a connection afterwards.
        ending = asyncio.current_task()
        if ending is not None:
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)
        ended = await self._end(
            keys=[
                keys.arq_in_progress(job_id),
                keys.arq_job(job_id),
                keys.arq_retry(job_id),
                self.queue_name,
                abort_jobs_ss,
                result_key_prefix + job_id,
            ],
            args=[
                self.worker_id,
                mode,
                incr_score or "",
                job_id,
                result_data or "",
                ttl,
            ],
        )
        if ended == 0:
            log.info("job %s: another worker holds it now; this run leaves it alone", job_id)
        elif ended == 2:
            log.info("job %s: finished elsewhere meanwhile; not put back", job_id)
        return int(ended)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's last word on a job it will not run again; the subclass records why.

        Not when another worker holds the job's lease: this run is stale, the job is theirs.
        """
        keep_s = self.keep_result_s or 0
        keep = self.keep_result_forever or keep_s > 0
        ttl = "" if self.keep_result_forever else int(keep_s * 1000)
        if await self._end_run(job_id, "finish", None, result_data if keep else None, ttl) == 0:
            return
        try:
            await self.gave_up(job_id)
        except (RedisError, OSError) as exc:
            log.warning("job %s: could not record that it was given up: %s", job_id, exc)

    async def close(self) -> None:
        """Stop, wait for the jobs' clean-up, unregister and close the connection pool."""
        self._closing = True
        self.handle_sig(signal.SIGTERM)
        if not self._pool:
            return
        # The poll loop and its helpers use the pool: they must be gone before it closes, or
        # a poll in flight opens a connection that nothing ever closes. First, so that no job
        # starts after the running ones were gathered (a poll mid-claim starts none now).
        main = self.main_task
        if main is not None and main is not asyncio.current_task():
            _, running = await asyncio.wait([main], timeout=CLOSE_WAIT_S)
            if running:
                log.warning("%s: the poll loop did not stop in time", self.queue_name)
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        endings = [t for t in self._ending if t is not asyncio.current_task()]
        if endings:
            _, unfinished = await asyncio.wait(endings, timeout=CLOSE_WAIT_S)
            if unfinished:
                log.warning(
                    "%s: %d job ends did not finish in time", self.queue_name, len(unfinished)
                )
        with contextlib.suppress(RedisError, OSError):
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.delete(self.health_check_key, keys.worker(self.worker_id))
                pipe.srem(keys.WORKERS, self.worker_id)
                await pipe.execute()
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        if self.close_redis:
            await self.pool.aclose(close_connection_pool=True)
        self._pool = None
