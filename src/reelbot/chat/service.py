"""``ChatService``: what every command means, once, for every platform.

A platform folder parses its events into these calls and renders what they return. The rules
live here and nowhere else: how a default seed is chosen (``jobs.seed_for``), who may cancel
what (the queue checks ownership and admin scope; this answers in words and never calls a job
cancelled before it is), what ``/jobs`` lists and from which chats, how a Redis failure reads
(``BackendUnavailable``: "temporarily unavailable"), and following progress through Redis
outages with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from reelbot import metrics
from reelbot.catalog import Catalog, Task
from reelbot.chat.attachments import MASK, MORE_IMAGES, task_for
from reelbot.chat.followups import Rerun, follow_up
from reelbot.chat.texts import CANCEL_TEXT, models_lines
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, JobNotFound, UserError
from reelbot.governance.admin import Admin, run_admin
from reelbot.inputs import probe_image
from reelbot.jobs import (
    GenerationParams,
    GenerationRequest,
    JobStatus,
    Options,
    ReplyAddress,
    Requester,
    job_id_for,
    merge_options,
    parse_prompt,
    resolve,
    seed_for,
)
from reelbot.queue.submit import JobQueue
from reelbot.store.leases import live_workers
from reelbot.store.progress import ProgressEvent, ProgressSubscription
from reelbot.store.records import JobRecord
from reelbot.store.results import RedisResultStore, store_input
from reelbot.video_inputs import VideoLimits, probe_clip

log = logging.getLogger(__name__)

__all__ = [
    "CancelAnswer",
    "ChatService",
    "Context",
    "JobView",
    "Ticket",
    "Update",
    "reachable",
]

CancelSaid = Literal["removed", "stopping", "too_late", "already_finished", "already_delivered"]

ANSWER_WITHIN_S = 10.0
"""How long a command waits on Redis before it is answered "temporarily unavailable"."""
PROGRESS_POLL_S = 0.5
RESUBSCRIBE_FIRST_S = 0.1
RESUBSCRIBE_MAX_S = 5.0
_REQUEST_CACHE = 1024


@dataclass(frozen=True)
class Context:
    """Who asked and where: the chat (channel, group, DM, browser) the command came from."""

    requester: Requester
    channel_id: str | None = None

    @property
    def private(self) -> bool:
        """A DM or a private chat: no server around it."""
        return self.requester.server_id is None


@dataclass(frozen=True)
class Ticket:
    """A submitted job: its id, its place in line, and whether it existed already."""

    job_id: str
    params: GenerationParams
    position: int | None = None
    eta_s: float | None = None
    duplicate: bool = False
    record: JobRecord | None = None
    """The job's record as the submit left it."""


@dataclass(frozen=True)
class JobView:
    """One job as ``/jobs`` and status messages show it."""

    job_id: str
    status: JobStatus
    request: GenerationRequest
    params: GenerationParams
    position: int | None = None
    eta_s: float | None = None
    error: str | None = None

    @property
    def line(self) -> str:
        """``ab12… /imagine · queued · #2 in line · a red fox``, for a ``/jobs`` list."""
        where = self.status.value
        if self.position is not None and self.position > 0:
            where = f"queued · #{self.position} in line"
        elif self.position == 0:
            where = "running"
        prompt = self.params.prompt
        prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
        return f"{self.job_id} /{self.params.task.command} · {where} · {prompt}"


@dataclass(frozen=True)
class CancelAnswer:
    """What a cancel did, in words, and the job it was about."""

    job_id: str
    outcome: CancelSaid
    record: JobRecord

    @property
    def text(self) -> str:
        """The sentence for the user."""
        return CANCEL_TEXT[self.outcome]

    @property
    def done(self) -> bool:
        """Whether the job is cancelled now (a running one is only asked to stop)."""
        return self.outcome == "removed"


@dataclass(frozen=True)
class Update:
    """A progress event with the job's request attached, for the platform to show."""

    event: ProgressEvent
    request: GenerationRequest

    @property
    def job_id(self) -> str:
        """The job the event is about."""
        return self.event.job_id


@contextlib.asynccontextmanager
async def reachable(within_s: float | None = None) -> AsyncIterator[None]:
    """Redis failures as ``BackendUnavailable``, which users are told to retry; so is a Redis
    that does not answer within ``ANSWER_WITHIN_S``: the client's own retries ride out a restart
    for about 15 s per call, and a command makes several calls."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN_S if within_s is None else within_s):
            yield
    except TimeoutError as exc:
        raise BackendUnavailable("Redis did not answer in time") from exc
    except (RedisError, OSError) as exc:
        raise BackendUnavailable(f"Redis: {exc}") from exc


class ChatService:
    """The product over the shared queue, for one platform."""

    def __init__(
        self, redis: ArqRedis, settings: Settings, catalog: Catalog, *, platform: str
    ) -> None:
        self.redis = redis
        self.catalog = catalog
        self.platform = platform
        self.queue = JobQueue(redis, settings, catalog)
        self.results = RedisResultStore(redis, ttl_s=settings.result_ttl_s)
        self.settings = settings
        self.owner_ids = settings.owner_ids
        self._requests: OrderedDict[str, GenerationRequest] = OrderedDict()
        self.on_submit: list[Callable[[Ticket, GenerationRequest], None]] = []
        """Called with every job this service queues (a ``Conversation`` watches its place)."""
        self.on_cancel: list[Callable[[CancelAnswer], None]] = []
        """Called with every answer to a cancel (a ``Conversation`` shows "Cancelling…")."""

    # -- generation ------------------------------------------------------------------------

    def plan(
        self,
        task: Task,
        text: str,
        options: Options,
        *,
        source_id: str,
        has_image: bool,
        has_video: bool = False,
    ) -> GenerationParams:
        """Check a request without touching Redis (before a platform's acknowledgement)."""
        job_id = job_id_for(self.platform, source_id)
        return resolve(
            task,
            text,
            self.catalog,
            explicit=options,
            has_image=has_image or has_video,  # a clip to extend starts from its last frame
            has_video=has_video,
            default_seed=seed_for(job_id),
        )

    async def store_input(self, data: bytes, *, video: bool = False) -> str:
        """Check an input image (or clip) from its header and keep it for the worker."""
        if video:
            limits = VideoLimits(max_duration_s=self.settings.video_input_max_s)
            await asyncio.to_thread(probe_clip, data, limits=limits)
        else:
            probe_image(data)
        async with reachable():
            return await store_input(self.redis, data)

    async def submit(self, request: GenerationRequest) -> Ticket:
        """Queue a request (idempotent on its source id)."""
        async with reachable():
            submitted = await self.queue.submit(request)
        pos = submitted.position
        ticket = Ticket(
            job_id=submitted.record.id,
            params=submitted.record.params,
            position=pos.position if pos else None,
            eta_s=pos.eta_s if pos else None,
            duplicate=not submitted.created,
            record=submitted.record,
        )
        for hook in self.on_submit:
            hook(ticket, request)
        return ticket

    async def generate(
        self,
        ctx: Context,
        task: Task,
        text: str,
        *,
        reply: ReplyAddress,
        source_id: str,
        options: Options | None = None,
        image: bytes | None = None,
        image_ref: str | None = None,
        video: bytes | None = None,
        mask: bytes | None = None,
        images: Sequence[bytes] = (),
    ) -> Ticket:
        """A generation command: check, store the inputs, queue. ``image`` is the one to
        start from, ``video`` a clip (/restyle, /smooth, or the one an /animate extends),
        ``mask`` /inpaint's, ``images`` /blend's others or /keyframes' last frame."""
        options = options or Options()
        extend = None
        with contextlib.suppress(UserError):  # a bad flag is refused by plan, in words
            extend = merge_options(parse_prompt(text)[1], options).extend
        if extend is not None and task == Task.ANIMATE and video is None:
            # /animate --extend JOB: the asker's own video (or an owner's pick), from the store.
            found = await self.result_for(ctx, extend)
            if found is None or not found[1].startswith("video/"):
                raise JobNotFound(f"You have no video {extend[:40]!r} to extend here.")
            video = found[0]
        # /remix with a mask varies its white region; /animate with two images ends on the last.
        given = [name for name, part in ((MASK, mask), (MORE_IMAGES[0], images)) if part]
        task = task_for(task, given)
        try:
            has_image = image is not None or bool(image_ref)
            has_video = video is not None
            self.plan(
                task, text, options, source_id=source_id, has_image=has_image, has_video=has_video
            )
        except UserError as exc:
            # Refused before the queue sees it: counted as the queue counts its own refusals.
            metrics.SUBMISSIONS.labels(self.platform, task.value).inc()
            metrics.REFUSALS.labels(self.platform, exc.code).inc()
            raise
        if image is not None:
            image_ref = await self.store_input(image)
        video_ref = await self.store_input(video, video=True) if video is not None else None
        mask_ref = await self.store_input(mask) if mask is not None else None
        more_refs = tuple([await self.store_input(each) for each in images])
        request = GenerationRequest(
            task=task,
            text=text,
            options=options,
            image_ref=image_ref,
            video_ref=video_ref,
            mask_ref=mask_ref,
            more_refs=more_refs,
            requester=ctx.requester,
            reply=reply,
            source_id=source_id,
        )
        return await self.submit(request)

    async def rerun(
        self,
        ctx: Context,
        job_id: str,
        how: Rerun,
        *,
        reply: ReplyAddress,
        source_id: str,
        same_chat: bool = False,
        index: int | None = None,
    ) -> Ticket:
        """A button on a result: re-roll it (fresh seed), vary or animate its image.

        ``index`` picks one image of a grid (its stored tile) as the source; a re-roll of a
        grid makes a grid of the same size again.

        The source image comes from the stored result, never from the platform, so a failed
        platform download cannot lose the click. ``same_chat``: only a job that was started in
        this chat of this platform (where a click carries nothing but a job id, as on the web
        chat, whose job ids of other chats must not reveal their prompts); any other reads as
        unknown.
        """
        async with reachable():
            old = await self.queue.records.get(job_id)
        if old is not None and same_chat:
            where = (old.request.reply.platform, old.request.reply.channel_id)
            if where != (self.platform, ctx.channel_id):
                old = None
        if old is None:
            raise JobNotFound("That job is too old to use again; run the command again.")
        plan = follow_up(how, old, self.catalog, index)
        data = clip = None
        for info in (plan.source, plan.video):
            if info is None:
                continue
            async with reachable():
                found = await self.results.get(info.ref)
            if found is None:
                raise JobNotFound("That result has expired; run the command again.")
            data, clip = (found, clip) if info is plan.source else (data, found)
        return await self.generate(
            ctx,
            plan.task,
            plan.prompt,
            options=plan.options,
            image=data,
            video=clip,
            image_ref=plan.image_ref,
            reply=reply,
            source_id=source_id,
        )

    async def request_of(self, job_id: str) -> GenerationRequest | None:
        """The request a job was made from, while its record lives."""
        cached = self._requests.get(job_id)
        if cached is not None:
            return cached
        async with reachable():
            record = await self.queue.records.get(job_id)
        if record is None:
            return None
        self._remember(job_id, record.request)
        return record.request

    def _remember(self, job_id: str, request: GenerationRequest) -> None:
        self._requests[job_id] = request
        while len(self._requests) > _REQUEST_CACHE:
            self._requests.popitem(last=False)

    # -- jobs and cancel ---------------------------------------------------------------------

    async def job(self, job_id: str) -> JobView | None:
        """One job with its place in line while it waits or runs; None when unknown."""
        async with reachable():
            record = await self.queue.records.get(job_id)
            return None if record is None else await self._view(record)

    async def _view(self, record: JobRecord) -> JobView:
        pos = None if record.finished else await self.queue.position(record)
        return JobView(
            job_id=record.id,
            status=record.status,
            request=record.request,
            params=record.params,
            position=pos.position if pos else None,
            eta_s=pos.eta_s if pos else None,
            error=record.error_message,
        )

    @staticmethod
    def listed(record: JobRecord, ctx: Context) -> bool:
        """What ``/jobs`` lists and a bare ``/cancel`` may pick: the asker's queued and running
        jobs; in a group or server channel only those started in that chat, so a private
        prompt never shows outside the private chat."""
        if record.finished or record.status == JobStatus.DELIVERING:
            return False
        if ctx.private or ctx.channel_id is None:
            return True
        return record.request.reply.channel_id == ctx.channel_id

    async def jobs(self, ctx: Context) -> list[JobView]:
        """The asker's queued and running jobs in this chat, oldest first."""
        async with reachable():
            records = await self.queue.user_jobs(ctx.requester)
            return [await self._view(r) for r in reversed(records) if self.listed(r, ctx)]

    async def jobs_text(self, ctx: Context) -> str:
        """``/jobs`` as lines."""
        views = await self.jobs(ctx)
        if not views:
            return "You have no queued or running jobs here."
        return "\n".join(["Your jobs:", *(v.line for v in views)])

    async def cancel(self, ctx: Context, job_id: str | None = None) -> CancelAnswer:
        """``/cancel [job]``: the named job, or the asker's newest one in this chat.

        The queue decides who may (the owner; a server admin within their own server; the
        configured owners everywhere) and raises ``JobNotFound`` otherwise.
        """
        if job_id is None:
            views = await self.jobs(ctx)
            if not views:
                raise JobNotFound("You have no queued or running jobs here.")
            job_id = views[-1].job_id
        async with reachable():
            outcome, record = await self.queue.cancel(job_id, requester=ctx.requester)
        said: CancelSaid = outcome
        # A cancelled or failed job is posted too (its notice): only a result was "delivered".
        if outcome in ("already_finished", "too_late") and (
            record.status == JobStatus.DELIVERED
            or (record.posted_at is not None and record.result is not None)
        ):
            said = "already_delivered"
        answer = CancelAnswer(job_id=job_id, outcome=said, record=record)
        for hook in self.on_cancel:
            hook(answer)
        return answer

    async def history(self, ctx: Context, *, limit: int = 30) -> list[JobRecord]:
        """The asker's recent jobs on this platform, newest first."""
        async with reachable():
            return await self.queue.user_jobs(ctx.requester, limit=limit)

    async def result_for(
        self, ctx: Context, job_id: str, part: int | None = None
    ) -> tuple[bytes, str] | None:
        """A job's stored result (``part``: image i of a grid) and its type, for the person who
        made it (or an owner) on this platform; never another platform's job (ids can be
        computed from platform ids). None, saying nothing of whether it exists, for the rest."""
        async with reachable():
            record = await self.queue.records.get(job_id)
            if record is None or record.result is None:
                return None
            made_by, asker = record.requester, ctx.requester
            if made_by.platform != self.platform or record.platform != self.platform:
                return None
            if made_by.user_id != asker.user_id and not asker.is_owner:
                return None
            tiles = record.result.tiles
            if part is not None and not 0 <= part < len(tiles):
                return None
            info = record.result if part is None else tiles[part]
            data = await self.results.get(info.ref)
        return None if data is None else (data, info.mime)

    # -- the rest of the commands ------------------------------------------------------------

    async def quota_text(self, requester: Requester) -> str:
        """The asker's remaining credits, jobs in flight and when the window resets."""
        async with reachable():
            status = await self.queue.quotas.status(requester)
        return status.text(time.time())

    def models_text(self) -> str:
        """The models this deployment serves, per task, and the style presets."""
        return "\n".join(models_lines(self.catalog))

    def is_owner(self, requester: Requester) -> bool:
        """A configured owner (``REELBOT_OWNER_IDS``): admin rights everywhere."""
        return f"{requester.platform}:{requester.user_id}" in self.owner_ids

    def requester(
        self, user_id: str, *, server_id: str | None = None, display_name: str = "", **more: Any
    ) -> Requester:
        """Who asks on this platform (``server_id``: the server or group around the chat, None
        in a private one); an owner is an admin everywhere. ``more``: ``role_ids``, or
        ``is_admin`` where the platform says so."""
        who = Requester(
            platform=self.platform,
            user_id=user_id,
            server_id=server_id,
            display_name=display_name,
            **more,
        )
        owner = self.is_owner(who)
        return who.model_copy(update={"is_owner": owner, "is_admin": who.is_admin or owner})

    async def admin(self, requester: Requester, words: str) -> str:
        """``/admin …`` words (the platform has checked the admin right)."""
        async with reachable():
            return await run_admin(
                self.queue.quotas, Admin(requester, self.is_owner(requester)), words
            )

    async def stats(self) -> dict[str, int]:
        """Jobs waiting per generation queue and live workers, for ``/admin status``."""
        async with reachable():
            counts = {
                f"waiting {name}": int(await self.redis.zcard(name))
                for name in self.queue.generation_queues
            }
            counts["workers"] = len(await live_workers(self.redis))
        return counts

    # -- progress ----------------------------------------------------------------------------

    async def follow_progress(
        self, stop: asyncio.Event, on_update: Callable[[Update], Awaitable[None]]
    ) -> None:
        """Hand this platform's progress events to ``on_update`` until ``stop`` is set.

        Progress is lossy by design, so a Redis outage costs events, never the stream: the
        subscription is made again with back-off for as long as it takes. A failing update is
        logged with its job and never stops the loop.
        """
        backoff = RESUBSCRIBE_FIRST_S
        while not stop.is_set():
            try:
                async with ProgressSubscription(self.redis, self.platform) as events:
                    while not stop.is_set():
                        # Polled rather than cancelled: closing a subscription from inside a
                        # cancelled read was seen to hang shutdown.
                        event = await events.get(PROGRESS_POLL_S)
                        backoff = RESUBSCRIBE_FIRST_S
                        if event is not None:
                            await self._hand_over(event, on_update)
            except (RedisError, OSError, BackendUnavailable) as exc:
                log.warning("progress subscription lost (%s); again in %.1f s", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await stop.wait()
                backoff = min(backoff * 2, RESUBSCRIBE_MAX_S)

    async def _hand_over(
        self, event: ProgressEvent, on_update: Callable[[Update], Awaitable[None]]
    ) -> None:
        try:
            request = await self.request_of(event.job_id)
            if request is None or request.reply.platform != self.platform:
                return
            await on_update(Update(event=event, request=request))
        except BackendUnavailable:
            raise
        except Exception:
            log.warning("progress of %s not shown", event.job_id, exc_info=True)
