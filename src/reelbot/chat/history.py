"""What a person made, and how it was made: ``/history``, ``/show JOB`` and the Info button.

A job's record (its request, parameters and buttons) lives ``REELBOT_HISTORY_DAYS``; its result
bytes keep their own, shorter TTL. So an old job can still be described and re-run with the same
seed after its image is gone, and every answer says which of the two it has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from reelbot.chat.replies import Button
from reelbot.chat.service import ChatService, Context, reachable
from reelbot.chat.texts import clip
from reelbot.errors import JobNotFound
from reelbot.jobs import JobStatus
from reelbot.store.records import JobRecord

__all__ = ["History", "Shown", "ago", "info_text"]

HISTORY_LINES = 10
SCAN = 200
"""How many of the asker's newest jobs ``/history`` looks through for its ten results."""
MADE = (JobStatus.DELIVERING, JobStatus.DELIVERED)


def ago(seconds: float) -> str:
    """``5 min ago``, ``3 h ago``, ``2 days ago``."""
    if seconds < 90:
        return "just now"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def info_text(record: JobRecord) -> str:
    """Everything that made a result: model, seed, steps, guidance, size, style, negative,
    strength, and the time it took."""
    p = record.params
    lines = [f"{record.id} · /{p.task.command} · {record.status.value}"]
    if p.prompt:
        lines.append(f"Prompt: {clip(p.prompt, 500)}")
    if p.negative_prompt:
        lines.append(f"Negative: {clip(p.negative_prompt, 300)}")
    lines.append(f"Model {p.model} · seed {p.seed} · {p.steps} steps · guidance {p.guidance:g}")
    size = f"Size {p.width}×{p.height}"
    if p.count > 1:
        size += f" · {p.count} images, seeds {p.seed}–{p.seed + p.count - 1}"
    if p.task.is_video and p.fps:
        size += f" · {p.frames} frames at {p.fps} fps"
    lines.append(size)
    extras = [f"style {p.style}"] if p.style else []
    if p.strength is not None:
        extras.append(f"strength {p.strength:g}")
    if extras:
        lines.append(" · ".join(extras).capitalize())
    started, done = record.times.get(JobStatus.RUNNING), record.times.get(JobStatus.DELIVERING)
    if started is not None and done is not None and done >= started:
        lines.append(f"Took {done - started:.1f} s")
    lines.append(f"Flags: {p.summary()}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Shown:
    """``/show JOB``: the job, and its result while the bytes are stored (else None: its spec
    with a Re-run button instead)."""

    record: JobRecord
    data: bytes | None
    edit: bool = False
    """Whether the result's buttons offer Edit region (the server has the web editor)."""

    @property
    def text(self) -> str:
        """What to say with it: the parameters, and why there is no image when there is none."""
        if self.data is not None:
            return info_text(self.record)
        gone = "Its result has expired; Re-run makes it again with the same seed."
        if self.record.result is None:
            gone = "It has no result to show; Re-run makes it again with the same seed."
        return f"{info_text(self.record)}\n{gone}"

    @property
    def buttons(self) -> tuple[Button, ...]:
        """Re-run (same seed) and Info; the result's own buttons come with a re-post."""
        return (Button("rerun", self.record.id, "Re-run"), Button("info", self.record.id, "Info"))


class History:
    """The asker's own jobs on this platform, seen from the chat they ask in."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    def visible(self, record: JobRecord, ctx: Context) -> bool:
        """The asker's own job (or any, for an owner), on this platform; in a group or server
        channel only one started there, so a private prompt never shows in a group."""
        made_by, asker = record.requester, ctx.requester
        if record.platform != self.service.platform:
            return False
        if not asker.is_owner and made_by.user_id != asker.user_id:
            return False
        return (
            ctx.private
            or ctx.channel_id is None
            or record.request.reply.channel_id == (ctx.channel_id)
        )

    async def job(self, ctx: Context, job_id: str, *, posted_here: bool = False) -> JobRecord:
        """A job the asker may see; ``posted_here``: also anyone's job posted in this chat (an
        Info button under a result everybody there can see). Unknown otherwise."""
        async with reachable():
            record = await self.service.queue.records.get(job_id.strip().lower())
        if record is not None and (
            self.visible(record, ctx)
            or (
                posted_here
                and record.platform == self.service.platform
                and record.request.reply.channel_id == ctx.channel_id
            )
        ):
            return record
        raise JobNotFound(
            f"I have no job {clip(job_id, 40)!r} of yours here (records are kept "
            f"{self.service.settings.history_days} days). /history lists your recent ones."
        )

    async def text(
        self,
        ctx: Context,
        *,
        limit: int = HISTORY_LINES,
        link: Callable[[JobRecord], str | None] | None = None,
    ) -> str:
        """``/history``: the asker's last results here, newest first, each with /show and,
        where the platform has them, a ``link`` to jump to the posted result."""
        async with reachable():
            records = await self.service.queue.user_jobs(ctx.requester, limit=SCAN)
        made = [r for r in records if r.status in MADE and self.visible(r, ctx)][:limit]
        if not made:
            return "You have no results here yet. Try /imagine a red fox in the snow."
        now = time.time()
        lines = [f"Your last {len(made)} results (newest first):"]
        for r in made:
            prompt = clip(r.params.prompt, 50) or "(no prompt)"
            grid = f" --n {r.params.count}" if r.params.count > 1 else ""
            lines.append(
                f"{r.id} /{r.params.task.command} {prompt} --seed {r.params.seed}{grid}"
                f" · {ago(now - r.created_at)} · /show {r.id}"
            )
            jump = link(r) if link is not None else None
            lines[-1] += f" · {jump}" if jump else ""
        return "\n".join(lines)

    async def info(self, ctx: Context, job_id: str) -> str:
        """The Info button: how a result was made."""
        return info_text(await self.job(ctx, job_id, posted_here=True))

    async def show(self, ctx: Context, job_id: str) -> Shown:
        """``/show JOB``: the job, with its result bytes while they are stored."""
        record = await self.job(ctx, job_id)
        data = None
        if record.result is not None:
            async with reachable():
                data = await self.service.results.get(record.result.ref)
        return Shown(record, data, edit=self.service.settings.public_url is not None)
