"""From an interaction to a queued job: check, acknowledge within 3 s, submit, show status."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import discord

from reelbot.bots.discord import render
from reelbot.bots.discord.backend import Delivery, JobBackend, ProgressEvent
from reelbot.bots.discord.buttons import result_view, status_view
from reelbot.bots.discord.poster import TOKEN_LIFETIME_S, Poster
from reelbot.catalog import Catalog, Task
from reelbot.errors import InvalidImage, JobNotFound, NotAllowed
from reelbot.inputs import DEFAULT_MAX_BYTES, probe_image
from reelbot.jobs import (
    MAX_SEED,
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
)

log = logging.getLogger(__name__)

PLATFORM = "discord"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass
class _Watched:
    """A job whose status message this process keeps up to date."""

    reply: ReplyAddress
    prompt: str


def requester_of(interaction: discord.Interaction[Any], owner_ids: tuple[str, ...]) -> Requester:
    """Who asked, with admin rights from Manage Server or the configured owners."""
    user = interaction.user
    roles: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        # Discord sends the member's role ids with every interaction and discord.py keeps them
        # as given (Member._roles), but Member.roles resolves them through the guild cache,
        # which stays empty without the GUILDS intent (and after every re-IDENTIFY until
        # GUILD_CREATE): read the raw ids. @everyone (id == guild id) is never a tier.
        raw = getattr(user, "_roles", None)
        ids = [r.id for r in user.roles] if raw is None else list(raw)
        roles = tuple(str(i) for i in ids if i != interaction.guild_id)
    # default_member_permissions only hides commands in Discord's UI; the permission that came
    # with this interaction is what counts.
    is_admin = bool(interaction.permissions.manage_guild) and interaction.guild_id is not None
    is_admin = is_admin or f"{PLATFORM}:{user.id}" in owner_ids
    return Requester(
        platform=PLATFORM,
        user_id=str(user.id),
        server_id=str(interaction.guild_id) if interaction.guild_id else None,
        role_ids=roles,
        display_name=user.display_name,
        is_admin=is_admin,
        is_owner=f"{PLATFORM}:{user.id}" in owner_ids,
    )


def seed_for(job_id: str) -> int:
    """A default seed derived from the job id, so a re-run of the same job gives the same image."""
    return int(job_id[2:], 16) % (MAX_SEED + 1)


def check_attachment(attachment: discord.Attachment, size_limit: int) -> None:
    """Refuse an attachment from its metadata alone, before anything is downloaded."""
    limit = min(size_limit, DEFAULT_MAX_BYTES)
    ctype = (attachment.content_type or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith("image/"):
        raise InvalidImage(
            f"{attachment.filename} is not an image ({ctype}). Attach a PNG, JPEG or WEBP image."
        )
    if attachment.size > limit:
        raise InvalidImage(
            f"{attachment.filename} is {attachment.size / 1e6:.1f} MB; attach an image under "
            f"{limit / 1e6:.0f} MB."
        )


class Intake:
    """The Discord adapter's logic, called by thin command and button handlers."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        backend: JobBackend,
        poster: Poster,
        owner_ids: tuple[str, ...] = (),
    ) -> None:
        self.catalog = catalog
        self.backend = backend
        self.poster = poster
        self.owner_ids = owner_ids
        self._watched: dict[str, _Watched] = {}

    # -- generation ------------------------------------------------------------------------

    async def generate(
        self,
        interaction: discord.Interaction[Any],
        task: Task,
        text: str,
        options: Options,
        attachment: discord.Attachment | None = None,
    ) -> None:
        """Check the request, acknowledge it, then store the image, submit and show status."""
        job_id = job_id_for(PLATFORM, str(interaction.id))
        if attachment is not None:
            check_attachment(attachment, interaction.filesize_limit)
        # Cheap, pure checks come before the acknowledgement so that a mistake gets a private
        # answer; anything slow (download, Redis) comes after it.
        params = resolve(
            task,
            text,
            self.catalog,
            explicit=options,
            has_image=attachment is not None,
            default_seed=seed_for(job_id),
        )
        status_id = await _defer(interaction)
        image: bytes | None = None
        if attachment is not None:
            async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
                image = await attachment.read()
        await self._submit(interaction, status_id, task, text, options, params, image)

    async def _submit(
        self,
        interaction: discord.Interaction[Any],
        status_id: str | None,
        task: Task,
        text: str,
        options: Options,
        params: GenerationParams,
        image: bytes | None,
        image_ref: str | None = None,
    ) -> None:
        """After the acknowledgement: probe the image, store it, queue the job, show its status."""
        if image is not None:
            probe_image(image)
            image_ref = await self.backend.store_input(image)
        if status_id is None:
            status_id = str((await interaction.original_response()).id)
        reply = self.reply_address(interaction, status_message_id=status_id)
        request = GenerationRequest(
            task=task,
            text=text,
            options=options,
            image_ref=image_ref,
            requester=requester_of(interaction, self.owner_ids),
            reply=reply,
            source_id=str(interaction.id),
        )
        ticket = await self.backend.submit(request, params)
        self._watched[ticket.job_id] = _Watched(reply, params.prompt)
        text_now = render.status_text(
            JobStatus.QUEUED, params.prompt, position=ticket.position, eta_s=ticket.eta_s
        )
        await self.poster.status(ticket.job_id, reply, text_now, status_view(ticket.job_id))

    def reply_address(
        self, interaction: discord.Interaction[Any], *, status_message_id: str | None
    ) -> ReplyAddress:
        """Where the result goes: this interaction's token while it lives, then the channel."""
        channel_id = interaction.channel_id
        if channel_id is None:
            raise NotAllowed("This command only works in a channel or a DM with the bot.")
        return ReplyAddress(
            platform=PLATFORM,
            channel_id=str(channel_id),
            message_id=status_message_id,
            status_message_id=status_message_id,
            interaction_token=interaction.token,
            interaction_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_S,
            nsfw_channel=bool(getattr(interaction.channel, "nsfw", False)),
            extra={
                "application_id": str(interaction.application_id),
                "max_bytes": str(interaction.filesize_limit),
            },
        )

    async def reroll(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """The same request as ``job_id`` with a fresh seed, as a new job."""
        # Acknowledge before touching Redis: a slow lookup must not cost the 3 s window.
        status_id = await _defer(interaction)
        old = await self.backend.request_of(job_id)
        if old is None:
            raise JobNotFound("That job is too old to re-roll; run the command again.")
        prompt, from_text = parse_prompt(old.text)
        options = merge_options(from_text, old.options).model_copy(update={"seed": None})
        new_id = job_id_for(PLATFORM, str(interaction.id))
        params = resolve(
            old.task,
            prompt,
            self.catalog,
            explicit=options,
            has_image=old.image_ref is not None,
            default_seed=seed_for(new_id),
        )
        await self._submit(
            interaction, status_id, old.task, prompt, options, params, None, old.image_ref
        )

    async def from_result(
        self, interaction: discord.Interaction[Any], job_id: str, task: Task
    ) -> None:
        """Remix or animate the image on the clicked result message."""
        message = interaction.message
        images = [
            a
            for a in (message.attachments if message else [])
            if a.width or (a.content_type or "").startswith("image/")
        ]
        if not images:
            raise JobNotFound("There is no image on that message to use.")
        status_id = await _defer(interaction)
        old = await self.backend.request_of(job_id)
        text = parse_prompt(old.text)[0] if old is not None else ""
        new_id = job_id_for(PLATFORM, str(interaction.id))
        params = resolve(task, text, self.catalog, has_image=True, default_seed=seed_for(new_id))
        async with asyncio.timeout(DOWNLOAD_TIMEOUT_S):
            image = await images[0].read()
        await self._submit(interaction, status_id, task, text, Options(), params, image)

    # -- the rest of the commands -----------------------------------------------------------

    async def cancel_button(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """Cancel from the status message's button, and clear the buttons."""
        requester = requester_of(interaction, self.owner_ids)
        if not await self.backend.cancel(job_id, requester):
            raise JobNotFound("That job has finished already, or it is not yours to cancel.")
        watched = self._watched.get(job_id)
        prompt = watched.prompt if watched else ""
        self.poster.mark_finished(job_id)
        await interaction.response.edit_message(
            content=render.status_text(JobStatus.CANCELLED, prompt), view=None
        )

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str | None) -> None:
        """``/cancel [job]``: the named job, or the caller's latest one."""
        requester = requester_of(interaction, self.owner_ids)
        await interaction.response.defer(ephemeral=True, thinking=True)
        if job_id is None:
            jobs = await self.backend.jobs_of(requester)
            if not jobs:
                raise JobNotFound("You have no queued or running jobs.")
            job_id = jobs[-1].job_id
        own_only = requester.model_copy(update={"is_admin": False, "is_owner": False})
        if not await self.backend.cancel(job_id, own_only):
            raise JobNotFound(f"No job {job_id} of yours is queued or running.")
        await interaction.followup.send(f"Cancelled job `{job_id}`.", ephemeral=True)

    async def jobs(self, interaction: discord.Interaction[Any]) -> None:
        """``/jobs``: the caller's queued and running jobs."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        jobs = await self.backend.jobs_of(requester_of(interaction, self.owner_ids))
        if not jobs:
            await interaction.followup.send("You have no queued or running jobs.", ephemeral=True)
            return
        lines = [
            f"`{j.job_id}` /{j.task} · {j.status.value}"
            + (f" · position {j.position}" if j.position is not None else "")
            + f" · {render.clip(j.prompt, 60)}"
            for j in jobs
        ]
        await interaction.followup.send(render.clip("\n".join(lines), 2000), ephemeral=True)

    def require_admin(self, interaction: discord.Interaction[Any]) -> Requester:
        """The requester if they hold Manage Server (or are an owner); NotAllowed otherwise."""
        requester = requester_of(interaction, self.owner_ids)
        if not requester.is_admin:
            raise NotAllowed("Only server admins (Manage Server) can use /admin.")
        return requester

    async def admin_status(self, interaction: discord.Interaction[Any]) -> None:
        """``/admin status``: queue depth, workers and today's credits per server."""
        await self.admin_words(interaction, "status")

    async def admin_cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """``/admin cancel job``: cancel anyone's job."""
        requester = self.require_admin(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        if not await self.backend.cancel(job_id, requester):
            raise JobNotFound(f"No job {job_id} is queued or running.")
        await interaction.followup.send(f"Cancelled job `{job_id}`.", ephemeral=True)

    async def quota(self, interaction: discord.Interaction[Any]) -> None:
        """``/quota``: the caller's remaining credits and when they reset."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await self.backend.quota_text(requester_of(interaction, self.owner_ids))
        await interaction.followup.send(text, ephemeral=True)

    async def admin_words(self, interaction: discord.Interaction[Any], text: str) -> None:
        """``/admin quota …`` and ``/admin audit``: quota settings and the audit log."""
        requester = self.require_admin(interaction)
        owner = f"{PLATFORM}:{requester.user_id}" in self.owner_ids
        await interaction.response.defer(ephemeral=True, thinking=True)
        answer = await self.backend.admin(requester, text, owner=owner)
        await interaction.followup.send(render.clip(answer, 2000), ephemeral=True)

    # -- from the queue ---------------------------------------------------------------------

    async def on_progress(self, event: ProgressEvent) -> None:
        """Show a worker's progress on the job's status message (throttled by the poster)."""
        if event.status.finished:
            # The delivery posts the end state; a late event must not race it.
            return
        watched = self._watched.get(event.job_id)
        if watched is None:
            # A job from before a restart: its reply address is in the stored request.
            request = await self.backend.request_of(event.job_id)
            if request is None or request.reply.platform != PLATFORM:
                return
            watched = self._watched[event.job_id] = _Watched(request.reply, request.text)
        text = render.status_text(
            event.status,
            watched.prompt,
            position=event.position,
            eta_s=event.eta_s,
            step=event.step,
            total=event.total,
        )
        cancellable = event.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        view = status_view(event.job_id) if cancellable else None
        await self.poster.status(event.job_id, watched.reply, text, view)

    async def deliver(self, delivery: Delivery) -> str | None:
        """Post a finished job (called by the delivery consumer); the posted message's id."""
        self._watched.pop(delivery.job_id, None)
        return await self.poster.deliver(delivery)

    async def follow_progress(self, stop: asyncio.Event) -> None:
        """Apply progress events until ``stop`` is set; a failing event never stops the loop."""
        async for event in self.backend.progress(stop):
            try:
                await self.on_progress(event)
            except Exception:
                log.warning("progress for %s not shown", event.job_id, exc_info=True)


async def _defer(interaction: discord.Interaction[Any]) -> str | None:
    """Acknowledge with a public "thinking…" message; its id, when Discord returned it."""
    callback = await interaction.response.defer(thinking=True)
    message_id = callback.message_id if callback is not None else None
    return str(message_id) if message_id is not None else None


def view_for(job_id: str, delivery: Delivery) -> discord.ui.View | None:
    """Buttons under a result."""
    return result_view(job_id, delivery.params.task) if delivery.params else None
