"""The web chat's commands and buttons: parse, submit to the shared queue, answer at once."""

from __future__ import annotations

import time
from typing import Any, Literal

from arq.connections import ArqRedis

from reelbot.bots.web.views import HELP_TEXT, PLATFORM, job_view, models_text, unknown_command
from reelbot.catalog import Catalog, Task
from reelbot.config import Settings
from reelbot.errors import InvalidImage, InvalidPrompt, JobNotFound, NotAllowed
from reelbot.governance.admin import Admin, run_admin
from reelbot.inputs import probe_image
from reelbot.jobs import (
    GenerationRequest,
    JobStatus,
    Options,
    ReplyAddress,
    Requester,
    merge_options,
    parse_prompt,
)
from reelbot.queue.submit import JobQueue
from reelbot.store.records import JobRecord
from reelbot.store.results import RedisResultStore, store_input

__all__ = ["Action", "WebChat"]

Action = Literal["reroll", "variations", "animate", "cancel"]
ACTIONS: tuple[Action, ...] = ("reroll", "variations", "animate", "cancel")
HISTORY_LIMIT = 30


def requester(client: str, owner_ids: tuple[str, ...] = ()) -> Requester:
    """The person at one browser: the web chat knows them only by the page's client id."""
    return Requester(
        platform=PLATFORM,
        user_id=client,
        display_name="you",
        is_admin=f"{PLATFORM}:{client}" in owner_ids,
        is_owner=f"{PLATFORM}:{client}" in owner_ids,
    )


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class WebChat:
    """Commands and buttons from the page, run against the shared job queue."""

    def __init__(self, redis: ArqRedis, settings: Settings, catalog: Catalog) -> None:
        self.redis = redis
        self.catalog = catalog
        self.queue = JobQueue(redis, settings, catalog)
        self.results = RedisResultStore(redis, ttl_s=settings.result_ttl_s)
        self.owner_ids = settings.owner_ids

    async def command(
        self, client: str, message_id: str, text: str, image: bytes | None
    ) -> dict[str, Any]:
        """Run one typed command; a generation answers with its job card (status, position)."""
        text = text.strip()
        if not text.startswith("/"):
            raise InvalidPrompt(
                "Commands start with a slash: try /imagine a red fox --seed 7, or /help."
            )
        name, _, rest = text[1:].partition(" ")
        name = name.lower()
        if name in {t.value for t in Task}:
            task = Task(name)
            image_ref = None
            if image is not None:
                if not task.needs_image:
                    raise InvalidImage(
                        f"/{task.value} takes no image; use /remix or /animate to start from one."
                    )
                probe_image(image)
                image_ref = await store_input(self.redis, image)
            return await self._submit(client, message_id, task, rest, Options(), image_ref)
        if name == "jobs":
            return _text(await self._jobs(client))
        if name == "cancel":
            return await self.cancel(client, rest.strip() or None)
        if name == "models":
            return _text(models_text(self.catalog))
        if name == "help":
            return _text(HELP_TEXT)
        if name == "quota":
            status = await self.queue.quotas.status(requester(client, self.owner_ids))
            return _text(f"{status.text(time.time())}\nYou are {PLATFORM}:{client} here.")
        if name == "admin":
            who = requester(client, self.owner_ids)
            if not who.is_admin:
                raise NotAllowed(
                    f"/admin is for owners: add {PLATFORM}:{client} to REELBOT_OWNER_IDS, or use "
                    "the operator CLI (reelbot quota …, reelbot jobs …)."
                )
            return _text(await run_admin(self.queue.quotas, Admin(who, owner=True), rest))
        raise InvalidPrompt(unknown_command(name))

    async def action(
        self, client: str, message_id: str, action: str, job_id: str
    ) -> dict[str, Any]:
        """A button under a job card: re-roll, variations, animate or cancel."""
        if action == "cancel":
            return await self.cancel(client, job_id)
        if action not in ACTIONS:
            raise InvalidPrompt(f"Unknown button {action[:20]!r}.")
        old = await self._own(client, job_id)
        prompt, from_text = parse_prompt(old.request.text)
        if action == "reroll":
            # Same request, fresh seed: the queue derives a new default seed from the new job id.
            options = merge_options(from_text, old.request.options).model_copy(
                update={"seed": None}
            )
            return await self._submit(
                client, message_id, old.request.task, prompt, options, old.request.image_ref
            )
        if old.result is None or old.params.task.is_video:
            raise JobNotFound("That job has no image to start from.")
        data = await self.results.get(old.result.ref)
        if data is None:
            raise JobNotFound("That result has expired; run the command again.")
        ref = await store_input(self.redis, data)
        task = Task.REMIX if action == "variations" else Task.ANIMATE
        return await self._submit(client, message_id, task, prompt, Options(), ref)

    async def _submit(
        self,
        client: str,
        message_id: str,
        task: Task,
        text: str,
        options: Options,
        image_ref: str | None,
    ) -> dict[str, Any]:
        request = GenerationRequest(
            task=task,
            text=text,
            options=options,
            image_ref=image_ref,
            requester=requester(client, self.owner_ids),
            reply=ReplyAddress(platform=PLATFORM, channel_id=client),
            # The page's own message id: a retried POST finds the same job, never a second one.
            source_id=f"{client}:{message_id}",
        )
        submitted = await self.queue.submit(request)
        return job_view(submitted.record, position=submitted.position)

    async def _own(self, client: str, job_id: str) -> JobRecord:
        record = await self.queue.records.get(job_id)
        if record is None or record.requester.user_id != client:
            raise JobNotFound(f"You have no job {job_id[:40]!r} (or it finished long ago).")
        return record

    async def cancel(self, client: str, job_id: str | None) -> dict[str, Any]:
        """Cancel the named job, or the client's newest unfinished one."""
        if job_id is None:
            open_jobs = [r for r in await self.queue.user_jobs(requester(client)) if not r.finished]
            if not open_jobs:
                raise JobNotFound("You have no queued or running jobs.")
            job_id = open_jobs[0].id
        outcome, record = await self.queue.cancel(job_id, requester=requester(client))
        said = {
            "removed": "Cancelled.",
            "stopping": "Stopping at the next step.",
            "too_late": "Too late to cancel: the result is being sent.",
            "already_finished": f"Already finished ({record.status.value}).",
        }[outcome]
        view = job_view(record)
        view["notice"] = said
        return view

    async def _jobs(self, client: str) -> str:
        records = await self.queue.user_jobs(requester(client))
        lines = []
        for record in reversed(records):
            if record.finished or record.status == JobStatus.DELIVERING:
                continue
            pos = await self.queue.position(record)
            where = record.status.value
            if pos is not None and pos.position > 0:
                where = f"queued, #{pos.position} in line, about {pos.eta_s:.0f} s"
            elif pos is not None:
                where = f"running, about {pos.eta_s:.0f} s left"
            lines.append(
                f"{record.id} /{record.params.task.value} {record.params.prompt} — {where}"
            )
        return "\n".join(["Your jobs:", *lines]) if lines else "You have no queued or running jobs."

    async def history(self, client: str) -> list[dict[str, Any]]:
        """The client's recent jobs, oldest first, for the chat log and the gallery."""
        records = await self.queue.user_jobs(requester(client), limit=HISTORY_LIMIT)
        views = []
        for record in reversed(records):
            delivered = record.status == JobStatus.DELIVERING and record.posted_at is not None
            views.append(job_view(record, delivered=delivered))
        return views

    async def client_of(self, job_id: str) -> str | None:
        """The client a job belongs to, from its record."""
        record = await self.queue.records.get(job_id)
        if record is None or record.platform != PLATFORM:
            return None
        return record.requester.user_id

    async def media(self, job_id: str, *, client: str) -> tuple[bytes, str] | None:
        """A web job's stored result and its content type, for its client or an owner.

        Never another platform's job: a Telegram job id can be computed from the update id.
        None (a 404 that says nothing of whether the job exists) for anything not served.
        """
        record = await self.queue.records.get(job_id)
        if record is None or record.result is None:
            return None
        job, who = record.requester, requester(client, self.owner_ids)
        if (job.platform, record.platform) != (PLATFORM, PLATFORM):
            return None
        if job.user_id != who.user_id and not who.is_owner:
            return None
        data = await self.results.get(record.result.ref)
        return None if data is None else (data, record.result.mime)
