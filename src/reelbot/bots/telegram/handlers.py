"""The PTB handlers: parse, submit, acknowledge; the logic they share lives in ``plan``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from telegram import Bot, CallbackQuery, Message, Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from reelbot.catalog import Catalog, Task
from reelbot.errors import (
    InvalidImage,
    JobNotFound,
    MissingImage,
    NotAllowed,
    TransientError,
    UserError,
)
from reelbot.inputs import probe_image
from reelbot.jobs import JobStatus, Options, ReplyAddress, Requester

from .backend import JobBackend, JobInfo, Progress
from .parse import DOWNLOAD_LIMIT, ImageSource, command_of, find_image
from .plan import PLATFORM, TASK_COMMANDS, plan_job, reply_for, requester_for
from .render import (
    Action,
    cancel_keyboard,
    decode_button,
    eta_text,
    help_text,
    models_text,
    prompt_of,
    status_text,
)
from .status import StatusBoard

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
SUBMIT_GRACE_S = 1.0
REPLY_TIMEOUT_S = 15.0


class CommandLayer:
    """Everything the bot does for a message or a button press."""

    def __init__(
        self,
        bot: Bot,
        backend: JobBackend,
        catalog: Catalog,
        board: StatusBoard,
        *,
        owner_ids: Collection[str] = (),
        max_upload_bytes: int | None = None,
    ) -> None:
        self.bot = bot
        self.backend = backend
        self.catalog = catalog
        self.board = board
        self.owner_ids = frozenset(owner_ids)
        self.max_upload_bytes = max_upload_bytes

    @property
    def username(self) -> str:
        """The bot's @username (known after ``Application.initialize``)."""
        return self.bot.username

    # -- messages --------------------------------------------------------------------------

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Route a command in a message text or photo caption."""
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        command = command_of(message, self.username)
        if command is None:
            return
        if command.name in TASK_COMMANDS:
            await self.start_task(message, TASK_COMMANDS[command.name], command.args)
        elif command.name in ("help", "start"):
            await self._reply(message, help_text(self.username))
        elif command.name == "models":
            await self._reply(message, models_text(self.catalog))
        elif command.name == "jobs":
            await self._reply(message, await self.jobs_text(self._requester(message)))
        elif command.name == "quota":
            await self._reply(message, await self.backend.quota_text(self._requester(message)))
        elif command.name == "cancel":
            await self.cancel_command(message, command.args)
        elif command.name == "admin":
            await self.admin_command(message, command.args)
        elif message.chat.type == ChatType.PRIVATE:
            # In groups other bots' commands come through as well; only answer in private.
            await self._reply(message, f"I don't know /{command.name}. See /help.")

    def _requester(self, message: Message, *, chat_admin: bool = False) -> Requester:
        user = message.from_user
        assert user is not None
        return requester_for(
            user_id=user.id,
            chat_id=message.chat.id,
            display_name=user.full_name,
            owner_ids=self.owner_ids,
            chat_admin=chat_admin,
        )

    async def _reply(self, message: Message, text: str) -> Message:
        return await message.reply_text(
            text, do_quote=True, read_timeout=REPLY_TIMEOUT_S, write_timeout=REPLY_TIMEOUT_S
        )

    async def start_task(self, message: Message, task: Task, text: str) -> None:
        """A generation command: check it, fetch its image, show a status message, submit."""
        requester = self._requester(message)
        source_id = f"{message.chat.id}:{message.message_id}"
        image = find_image(message) if task.needs_image else None
        if task.needs_image and image is None:
            raise MissingImage(
                f"/{task.value} needs an image: send a photo with /{task.value} as its caption, "
                f"or reply to a photo with /{task.value}."
            )
        await self.submit(
            message,
            task,
            text,
            requester=requester,
            source_id=source_id,
            image=image,
            thread_id=message.message_thread_id if message.is_topic_message else None,
        )

    async def submit(
        self,
        reply_to: Message,
        task: Task,
        text: str,
        *,
        requester: Requester,
        source_id: str,
        image: ImageSource | None = None,
        image_ref: str | None = None,
        explicit: Options | None = None,
        new_seed: bool = False,
        thread_id: int | None = None,
    ) -> str | None:
        """Plan, check, post the status message and enqueue; None for a duplicated update."""
        chat_id = reply_to.chat.id
        reply = reply_for(
            chat_id=chat_id,
            message_id=reply_to.message_id,
            thread_id=thread_id,
            max_upload_bytes=self.max_upload_bytes,
        )
        has_image = image is not None or image_ref is not None
        job_id, request, params = plan_job(
            task,
            text,
            self.catalog,
            requester=requester,
            reply=reply,
            source_id=source_id,
            has_image=has_image,
            image_ref=image_ref,
            explicit=explicit,
            new_seed=new_seed,
        )
        # Telegram re-sends updates that were not confirmed before a restart: one job per update.
        if await self.backend.exists(job_id):
            log.info("duplicate update for job %s ignored", job_id)
            return None
        if image is not None:
            image_ref = await self.backend.store_input(await self.download(image))
        prompt = prompt_of(request)
        queued = status_text(task, prompt, JobStatus.QUEUED)
        status = await reply_to.reply_text(
            queued,
            do_quote=True,
            reply_markup=cancel_keyboard(job_id),
            message_thread_id=thread_id,
            read_timeout=REPLY_TIMEOUT_S,
            write_timeout=REPLY_TIMEOUT_S,
        )
        self.board.remember(chat_id, status.message_id, queued, cancel_keyboard(job_id))
        request = request.model_copy(
            update={
                "image_ref": image_ref,
                "reply": reply.model_copy(update={"status_message_id": str(status.message_id)}),
            }
        )
        try:
            submitted = await self.backend.submit(request, params)
        except Exception as exc:
            # The status message already says "queued"; it must not go on saying so.
            why = "This job could not be queued."
            if isinstance(exc, (UserError, TransientError)):
                why = exc.user_message
            await self.board.show(chat_id, status.message_id, f"⚠️ {why}", final=True)
            if isinstance(exc, UserError):
                return None
            raise
        if submitted.duplicate:
            await status.delete()
            return None
        text_now = status_text(
            task, prompt, JobStatus.QUEUED, position=submitted.position, eta_s=submitted.eta_s
        )
        await self.board.show(chat_id, status.message_id, text_now, cancel_keyboard(job_id))
        return job_id

    async def download(self, image: ImageSource) -> bytes:
        """An input image's bytes, checked from its header before anything is queued."""
        try:
            file = await self.bot.get_file(
                image.file_id, read_timeout=DOWNLOAD_TIMEOUT_S, write_timeout=REPLY_TIMEOUT_S
            )
            data = bytes(await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT_S))
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise InvalidImage(
                    "That image is over the 20 MB bots can download. Send it as a photo "
                    "(Telegram shrinks photos) or a smaller file."
                ) from exc
            raise
        probe_image(data, max_bytes=DOWNLOAD_LIMIT)
        return data

    # -- jobs and cancel -------------------------------------------------------------------

    async def jobs_text(self, requester: Requester) -> str:
        """The requester's queued and running jobs."""
        jobs = await self.backend.jobs_of(requester)
        if not jobs:
            return "You have no queued or running jobs."
        return "\n".join(_job_line(job) for job in jobs)

    async def cancel_command(self, message: Message, args: str) -> None:
        """``/cancel [job]``: the named job, else the requester's newest unfinished one."""
        user_id = message.from_user.id if message.from_user else 0
        admin = await self._is_admin(message.chat.id, user_id)
        requester = self._requester(message, chat_admin=admin)
        job_id = args.split()[0] if args.split() else None
        if job_id is None:
            jobs = await self.backend.jobs_of(requester)
            if not jobs:
                raise JobNotFound("You have no queued or running jobs to cancel.")
            job_id = jobs[-1].job_id
        await self._cancel(job_id, requester)
        await self._reply(message, f"Cancelling {job_id}.")

    async def _cancel(self, job_id: str, requester: Requester) -> None:
        info = await self.backend.job(job_id)
        if info is None:
            # The status message (and its Cancel button) goes out just before the submit.
            await asyncio.sleep(SUBMIT_GRACE_S)
            info = await self.backend.job(job_id)
        if info is None:
            raise JobNotFound(f"There is no job {job_id[:40]} (it may have expired).")
        if info.request.requester.user_id != requester.user_id and not requester.is_admin:
            raise JobNotFound("That is not your job; only its owner or a chat admin can cancel it.")
        if not await self.backend.cancel(job_id, requester):
            raise JobNotFound(f"Job {job_id} has already finished.")
        reply = info.request.reply
        if reply.status_message_id is not None:
            text = status_text(info.request.task, prompt_of(info.request), JobStatus.CANCELLED)
            await self.board.show(
                int(reply.channel_id), int(reply.status_message_id), text, final=True
            )

    async def admin_command(self, message: Message, args: str) -> None:
        """``/admin …``: group administrators (asked live) and the deployment's owners."""
        user_id = message.from_user.id if message.from_user else 0
        owner = f"{PLATFORM}:{user_id}" in self.owner_ids
        admin = owner or await self._is_admin(message.chat.id, user_id)
        if not admin:
            raise NotAllowed("Only this group's administrators can use /admin.")
        requester = self._requester(message, chat_admin=True)
        words = args.split()
        if words[:1] == ["cancel"] and len(words) == 2:
            await self._cancel(words[1], requester)
            await self._reply(message, f"Cancelling {words[1]}.")
            return
        await self._reply(message, await self.backend.admin(requester, args, owner=owner))

    async def _is_admin(self, chat_id: int, user_id: int) -> bool:
        """Whether the user administers this group (asked live, never cached); never in private."""
        if chat_id > 0:
            return False
        try:
            member = await self.bot.get_chat_member(chat_id, user_id, read_timeout=REPLY_TIMEOUT_S)
        except TelegramError:
            return False
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    # -- buttons ---------------------------------------------------------------------------

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Re-roll, variations, animate or cancel, from an inline button."""
        query = update.callback_query
        if query is None:
            return
        press = decode_button(query.data)
        message = query.message
        if press is None or not isinstance(message, Message):
            await query.answer("This button no longer works; send the command again.")
            return
        requester = requester_for(
            user_id=query.from_user.id,
            chat_id=message.chat.id,
            display_name=query.from_user.full_name,
            owner_ids=self.owner_ids,
        )
        if press.action == Action.CANCEL:
            if requester.server_id is not None and not requester.is_admin:
                admin = await self._is_admin(message.chat.id, query.from_user.id)
                requester = requester.model_copy(update={"is_admin": admin})
            await self._cancel(press.job_id, requester)
            await query.answer("Cancelled.")
            return
        info = await self.backend.job(press.job_id)
        if info is None:
            await query.answer("That job has expired; send the command again.", show_alert=True)
            return
        await query.answer(_ACK[press.action])
        await self._button_job(query, message, press.action, info, requester)

    async def _button_job(
        self,
        query: CallbackQuery,
        message: Message,
        action: Action,
        info: JobInfo,
        requester: Requester,
    ) -> None:
        original = info.request
        source_id = f"cb:{query.id}"
        thread_id = int(original.reply.thread_id) if original.reply.thread_id else None
        if action == Action.REROLL:
            await self.submit(
                message,
                original.task,
                original.text,
                requester=requester,
                source_id=source_id,
                image_ref=original.image_ref,
                explicit=original.options,
                new_seed=True,
                thread_id=thread_id,
            )
            return
        # Variations and animate start from the result itself, which the button sits under.
        image = find_image(message)
        if image is None:
            raise MissingImage("That result has no image to start from.")
        task = Task.REMIX if action == Action.VARIATIONS else Task.ANIMATE
        prompt = prompt_of(original)
        await self.submit(
            message,
            task,
            prompt,
            requester=requester,
            source_id=source_id,
            image=image,
            new_seed=True,
            thread_id=thread_id,
        )

    # -- progress --------------------------------------------------------------------------

    async def on_progress(self, event: Progress) -> None:
        """Show a worker's progress in the job's status message (throttled by the board)."""
        reply: ReplyAddress = event.request.reply
        if reply.platform != "telegram" or reply.status_message_id is None:
            return
        chat_id, message_id = int(reply.channel_id), int(reply.status_message_id)
        text = status_text(
            event.request.task,
            prompt_of(event.request),
            event.status,
            position=event.position,
            eta_s=event.eta_s,
            step=event.step,
            total=event.total,
            message=event.message,
        )
        if event.status.finished:
            # The result (delivered) is posted by the delivery path; failures end here.
            await self.board.show(chat_id, message_id, text, final=True)
            return
        # Once encoding has started the queue can no longer stop the job: no Cancel button.
        cancellable = event.status in (JobStatus.QUEUED, JobStatus.RUNNING)
        markup = cancel_keyboard(event.job_id) if cancellable else None
        await self.board.show(chat_id, message_id, text, markup)


_ACK = {
    Action.REROLL: "Re-rolling…",
    Action.VARIATIONS: "Making variations…",
    Action.ANIMATE: "Animating…",
    Action.CANCEL: "Cancelling…",
}


def _job_line(job: JobInfo) -> str:
    prompt = prompt_of(job.request) or job.params.prompt
    short = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    state = job.status.value
    if job.status == JobStatus.QUEUED and job.position:
        eta = eta_text(job.eta_s)
        state = f"queued #{job.position}{', ' + eta if eta else ''}"
    elif job.status == JobStatus.RUNNING and job.step is not None and job.total:
        state = f"running, step {job.step}/{job.total}"
    return f"{job.job_id} · /{job.request.task.value} {short} · {state}"
