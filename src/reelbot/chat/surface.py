"""``Surface``: what a platform does for the chat layer, and ``Conversation``, which runs the
platform-neutral half of an adapter over it (progress into status edits, deliveries into posts).

A new platform implements the five calls of ``Surface`` in its own terms, hands its events to
``ChatService`` and runs a ``Conversation``; everything else (rules, words, throttling, Redis
outages, exactly-once delivery) comes from here and ``reelbot.queue``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from reelbot.catalog import Task
from reelbot.chat.history import Shown
from reelbot.chat.replies import Button, Reply, reply_for
from reelbot.chat.service import CancelAnswer, ChatService, Ticket, Update
from reelbot.chat.texts import Status, undeliverable_text
from reelbot.chat.throttle import EditThrottle
from reelbot.config import Settings
from reelbot.errors import BackendUnavailable, TransientError, UserError
from reelbot.jobs import GenerationRequest, JobStatus, ReplyAddress
from reelbot.queue.delivery import Delivery, DeliveryConsumer
from reelbot.store.records import JobRecord

log = logging.getLogger(__name__)

__all__ = ["Conversation", "Surface", "result_buttons", "status_buttons", "submit_with_status"]


class Surface(Protocol):
    """One platform's side of a conversation."""

    async def post_status(self, reply: ReplyAddress, job_id: str, text: str) -> str | None:
        """Post a job's status message where the command came from; its message id."""
        ...

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        """Edit the status message: its state, a JPEG preview while it runs, the buttons."""
        ...

    async def post_result(
        self, record: JobRecord, data: bytes, buttons: tuple[Button, ...]
    ) -> str | None:
        """Post a finished job's file under the command; the posted message's id."""
        ...

    async def answer(self, reply: ReplyAddress, answer: Reply) -> None:
        """Answer the person who asked (privately where the platform can)."""
        ...

    async def fetch_input(self, ref: str) -> bytes:
        """Download an input file the user attached (raises a ``UserError`` in words)."""
        ...


def status_buttons(job_id: str, status: JobStatus) -> tuple[Button, ...]:
    """Cancel while a job waits or runs; nothing after."""
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return (Button("cancel", job_id, "Cancel"),)
    return ()


def result_buttons(record: JobRecord, *, edit: bool = False) -> tuple[Button, ...]:
    """What a result offers next, as Midjourney's and Runway's do (``edit``: one image offers
    Edit region too, before Info: ``chat.edit_links``).

    A grid: U1–U4 (upscale image i) and Re-roll, then V1–V4 (a subtle variation of image i) and
    Info. One image: Upscale, Vary (subtle), Vary (strong), Re-roll, Animate; Zoom Out 2× and
    1.5× and the four Pans; Info (an upscaled one has nothing to re-roll or upscale again). A
    video: Re-roll, Extend, Smooth, Upscale, Info (a smoothed one no Re-roll, an upscaled one no
    Re-roll or Upscale). /describe's suggestions: 1–4, each an /imagine.
    """
    job, task = record.id, record.params.task
    info = Button("info", job, "Info")
    result = record.result
    tiles = result.tiles if result is not None else ()
    if result is not None and result.texts:
        said = [Button("imagine", job, str(i + 1), i) for i in range(len(result.texts))]
        return (*said, info)
    if tiles:
        ups = [Button("upscale", job, f"U{i + 1}", i) for i in range(len(tiles))]
        varies = [Button("vary_subtle", job, f"V{i + 1}", i) for i in range(len(tiles))]
        return (*ups, Button("reroll", job, "Re-roll"), *varies, info)
    if task.is_video:
        edits = (Button("extend", job, "Extend"), Button("smooth", job, "Smooth"))
        if task == Task.UPSCALE_VIDEO:  # upscaled once, as Midjourney and Runway do
            return (*edits, info)
        clip = (*edits, Button("upscale", job, "Upscale"), info)
        return clip if task == Task.SMOOTH else (Button("reroll", job, "Re-roll"), *clip)
    varies = [
        Button("vary_subtle", job, "Vary (subtle)"),
        Button("vary_strong", job, "Vary (strong)"),
    ]
    edges = (
        Button("zoom_2", job, "Zoom Out 2x"),
        Button("zoom_15", job, "Zoom Out 1.5x"),
        *(Button(f"pan_{way}", job, arrow) for way, arrow in PANS.items()),
    )
    region = (Button("edit", job, "Edit region"),) if edit else ()
    if task == Task.UPSCALE:
        return (*varies, Button("animate", job, "Animate"), *edges, *region, info)
    up = Button("upscale", job, "Upscale")
    again = Button("reroll", job, "Re-roll")
    return (up, *varies, again, Button("animate", job, "Animate"), *edges, *region, info)


PANS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


async def submit_with_status(
    surface: Surface,
    where: ReplyAddress,
    job_id: str,
    prompt: str,
    run: Callable[..., Awaitable[Ticket]],
) -> tuple[Ticket, ReplyAddress] | None:
    """Post the status message, then submit (``run(reply=…)``, the address with its id) and show
    the place in line. A refused submit ends the message in words; a user's mistake gives None."""
    status_id = await surface.post_status(where, job_id, Status(JobStatus.QUEUED, prompt).text)
    where = where.model_copy(update={"status_message_id": status_id})
    try:
        ticket = await run(reply=where)
    except Exception as exc:
        # The status message already says "queued"; it must not go on saying so.
        ours = isinstance(exc, UserError | TransientError)
        why = reply_for(exc) if ours else "This job could not be queued."
        refused = Status(JobStatus.FAILED, prompt, message=why)
        await surface.edit_status(where, job_id, refused, None, ())
        if isinstance(exc, UserError):
            return None
        raise
    if not ticket.duplicate:
        now = Status(JobStatus.QUEUED, prompt, position=ticket.position, eta_s=ticket.eta_s)
        buttons = status_buttons(job_id, JobStatus.QUEUED)
        await surface.edit_status(where, job_id, now, None, buttons)
    return ticket, where


class Conversation:
    """Progress events into throttled status edits and deliveries into posts, for a surface."""

    def __init__(
        self,
        service: ChatService,
        surface: Surface,
        settings: Settings,
        *,
        edit_interval_s: float = 1.0,
        delivery_poll_s: float = 0.5,
        positions_every_s: float | None = None,
    ) -> None:
        self.service = service
        self.surface = surface
        self.throttle = EditThrottle(edit_interval_s)
        self.positions_every_s = positions_every_s
        self.waiting: dict[str, GenerationRequest] = {}
        """Jobs of this platform waiting in line, whose place is redrawn while they wait."""
        service.on_submit.append(self.watch)
        self.stopping: set[str] = set()
        """Jobs asked to stop while running (``ChatService.cancel``): drawn "Cancelling…"."""
        self._paces: dict[str, tuple[float, int]] = {}
        """When a running job's first step was seen here, and which: its ETA from its pace."""
        self._previews: dict[str, bytes] = {}
        """Each running job's newest step preview (JPEG) that no edit has shown yet."""
        service.on_cancel.append(self.cancelled)
        self.consumer = DeliveryConsumer(
            service.redis,
            service.platform,
            self.deliver,
            settings=settings,
            poll_delay_s=delivery_poll_s,
            notice=self.notice,
        )
        self.result_ttl_s = settings.result_ttl_s
        self.edit_links = settings.public_url is not None
        """Whether one image's result offers Edit region: a web editor to link to (the web
        chat's page has its own, ``bots.web.views``)."""

    def watch(self, ticket: Ticket, request: GenerationRequest) -> None:
        """Redraw a queued job's place in line until it runs (when positions are refreshed)."""
        if self.positions_every_s is not None and not ticket.duplicate:
            self.waiting[ticket.job_id] = request

    def cancelled(self, answer: CancelAnswer) -> None:
        """A running job asked to stop shows "Cancelling…" (no Cancel) until it has."""
        if answer.outcome == "stopping":
            self.stopping.add(answer.job_id)

    def eta_s(self, job_id: str, step: int | None, total: int | None) -> float | None:
        """Seconds left of a running job at its pace since the first step seen; None before."""
        if not step or not total:
            return None
        now = time.monotonic()
        seen_at, first = self._paces.setdefault(job_id, (now, step))
        return (now - seen_at) / (step - first) * (total - step) if step > first else None

    async def refresh_positions(self, stop: asyncio.Event) -> None:
        """Every ``positions_every_s``: each waiting job's place in line and ETA, redrawn."""
        every = self.positions_every_s
        while every is not None and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()
            for job_id, request in list(self.waiting.items()):
                try:
                    job = await self.service.job(job_id)
                except BackendUnavailable as exc:
                    log.debug("queue positions not redrawn: %s", exc)
                    break
                if job is None or job.status != JobStatus.QUEUED or job.position is None:
                    self.waiting.pop(job_id, None)
                    continue
                if job_id not in self.waiting:  # it started while Redis was asked
                    continue
                status = Status(
                    JobStatus.QUEUED, request.text, position=job.position, eta_s=job.eta_s
                )
                buttons = status_buttons(job_id, JobStatus.QUEUED)
                edit = functools.partial(
                    self.surface.edit_status, request.reply, job_id, status, None, buttons
                )
                await self.throttle.run(job_id, edit)

    async def on_update(self, update: Update) -> None:
        """Show one progress event on the job's status message."""
        event = update.event
        if event.status != JobStatus.QUEUED:
            self.waiting.pop(event.job_id, None)
        if event.status.finished:
            # The delivery posts the end state; a late event must not race it.
            return
        request = update.request
        step, total = event.step or None, event.total or None
        denoising = event.status == JobStatus.RUNNING and event.stage == "denoising"
        stopping = event.job_id in self.stopping
        status = Status(
            event.status,
            request.text,
            eta_s=self.eta_s(event.job_id, step, total) if denoising else None,
            step=step,
            total=total,
            message=event.message,
            stage=event.stage,
            stopping=stopping,
        )
        if event.preview_jpeg_b64:
            self._previews[event.job_id] = base64.b64decode(event.preview_jpeg_b64)
        buttons = () if stopping else status_buttons(event.job_id, event.status)

        async def edit() -> None:
            # The newest preview not shown yet: a later edit that replaced the one carrying it
            # (the throttle keeps only the latest) shows it instead.
            preview = self._previews.pop(event.job_id, None)
            await self.surface.edit_status(request.reply, event.job_id, status, preview, buttons)

        await self.throttle.run(event.job_id, edit)

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post a result, or end the status message in words (failed, cancelled)."""
        record = delivery.record
        self.throttle.forget(record.id)
        self.stopping.discard(record.id)
        self._paces.pop(record.id, None)
        self._previews.pop(record.id, None)
        if delivery.kind == "result" and delivery.data is not None:
            buttons = result_buttons(record, edit=self.edit_links)
            posted = await self.surface.post_result(record, delivery.data, buttons)
            done = Status(JobStatus.DELIVERED, record.request.text)
            with contextlib.suppress(Exception):
                await self.surface.edit_status(record.request.reply, record.id, done, None, ())
            return posted
        # A failure that reached delivery has used the GPU and keeps its charge; any other
        # failure refunded it (governance.quotas.settle_moved).
        status = Status(
            record.status,
            record.request.text,
            message=record.error_message,
            credits_back=record.result is None,
        )
        await self.surface.edit_status(record.request.reply, record.id, status, None, ())
        return None

    async def notice(self, record: JobRecord, attempt: int, final: bool) -> None:
        """A post that keeps failing: say it is being retried, or that it could not be posted."""
        if final:
            status = Status(
                JobStatus.FAILED, record.request.text, message=undeliverable_text(self.result_ttl_s)
            )
        else:
            said = f"posting failed {attempt} times; still trying"
            status = Status(JobStatus.DELIVERING, record.request.text, message=said)
        await self.surface.edit_status(record.request.reply, record.id, status, None, ())

    async def run(self, stop: asyncio.Event) -> None:
        """Follow progress and consume deliveries until ``stop`` is set."""
        consumer = asyncio.create_task(self.consumer.async_run(), name="chat-delivery")
        positions = asyncio.create_task(self.refresh_positions(stop), name="chat-positions")
        try:
            await self.service.follow_progress(stop, self.on_update)
        finally:
            try:
                await self.consumer.close()
            finally:
                # Even when this task is cancelled mid-close: no helper task outlives it.
                for task in (consumer, positions):
                    task.cancel()
                await asyncio.gather(consumer, positions, return_exceptions=True)
                await self.throttle.aclose()

    _running: tuple[asyncio.Event, asyncio.Task[None]] | None = None

    def start(self) -> None:
        """``run`` in a task until ``stop()``, for an adapter that starts and stops its parts."""
        stop = asyncio.Event()
        self._running = (stop, asyncio.create_task(self.run(stop), name="chat-conversation"))

    async def stop(self, timeout_s: float = 15.0) -> None:
        """End what ``start`` began (cancelled after ``timeout_s``); unposted results wait."""
        if self._running is None:
            return
        (stop, task), self._running = self._running, None
        stop.set()
        try:
            # Shielded: a timeout here must not cut the task's own clean-up short.
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning("the conversation did not stop within %.0f s; cancelling it", timeout_s)
            task.cancel()
        except Exception:
            log.exception("the conversation ended with an error")
        # Cancelled or not, wait for its clean-up: its helper tasks end with it.
        await asyncio.gather(task, return_exceptions=True)


async def repost(surface: Surface, where: ReplyAddress, shown: Shown) -> None:
    """``/show JOB``: its result posted again where it was asked for, with the result's buttons,
    while the bytes are stored; else its parameters with Re-run (the same seed) and Info."""
    if shown.data is None:
        await surface.answer(where, Reply(shown.text, private=False, buttons=shown.buttons))
        return
    request = shown.record.request.model_copy(update={"reply": where})
    here = shown.record.model_copy(update={"request": request})
    await surface.post_result(here, shown.data, result_buttons(shown.record, edit=shown.edit))
