"""``TelegramSurface``: the chat layer's five calls in Bot API terms (``reelbot.chat.surface``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from telegram import Bot, InputFile, InputMediaPhoto, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from reelbot.chat.replies import Button, Reply
from reelbot.chat.surface import status_buttons
from reelbot.chat.texts import Status
from reelbot.errors import BackendUnavailable, InvalidImage, OutputTooLarge, RateLimited
from reelbot.inputs import probe_image
from reelbot.jobs import JobStatus, ReplyAddress
from reelbot.queue.budgets import budget_for
from reelbot.store.records import JobRecord
from reelbot.store.results import ResultStore

from .parse import DOWNLOAD_LIMIT, too_big
from .render import caption_html, keyboard, status_text
from .status import Markup, StatusBoard

PHOTO_LIMIT = 10 * 1024 * 1024
"""sendPhoto: at most 10 MB, width + height at most 10000, ratio at most 20."""
UPLOAD_TIMEOUT_S = 120.0
DOWNLOAD_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 15.0


def fits_photo(mime: str, size: int, w: int, h: int) -> bool:
    """Whether Telegram takes the image as a photo (else it goes as a document, uncompressed)."""
    ratio_ok = max(w, h) <= 20 * max(1, min(w, h))
    return mime.startswith("image/") and size <= PHOTO_LIMIT and w + h <= 10000 and ratio_ok


def _where(reply: ReplyAddress, to: str | int | None = None) -> dict[str, Any]:
    """A reply to the command, or to message ``to`` (posted anyway if it was deleted), in its
    forum topic."""
    quote = None
    if (to := to or reply.message_id) is not None:
        quote = ReplyParameters(int(to), allow_sending_without_reply=True)
    thread = int(reply.thread_id) if reply.thread_id else None
    return dict(chat_id=int(reply.channel_id), reply_parameters=quote, message_thread_id=thread)


class TelegramSurface:
    """Status messages through the per-chat ``StatusBoard``, results as photo, video or file."""

    def __init__(self, bot: Bot, board: StatusBoard, results: ResultStore) -> None:
        self.bot, self.board, self.results = bot, board, results
        self.albums: dict[str, int] = {}
        """A grid's album posted, its keyboard message not yet: a retry posts only that."""

    async def _send(self, reply: ReplyAddress, text: str, markup: Markup) -> Message:
        t, where = REPLY_TIMEOUT_S, _where(reply)
        return await self.bot.send_message(
            text=text, reply_markup=markup, read_timeout=t, write_timeout=t, **where
        )

    async def post_status(self, reply: ReplyAddress, job_id: str, text: str) -> str | None:
        """The status message under the command, with its Cancel button."""
        markup = keyboard(status_buttons(job_id, JobStatus.QUEUED))
        message = await self._send(reply, text, markup)
        self.board.remember(message.chat_id, message.message_id, text, markup)
        return str(message.message_id)

    async def edit_status(
        self,
        reply: ReplyAddress,
        job_id: str,
        status: Status,
        preview: bytes | None,
        buttons: tuple[Button, ...],
    ) -> None:
        """The job's state in its status message, and the step preview in a photo under it."""
        if reply.status_message_id is None:
            return
        chat, message = int(reply.channel_id), int(reply.status_message_id)
        text, final = status_text(status), status.status.finished
        await self.board.show(chat, message, text, keyboard(buttons), final=final, job_id=job_id)
        if final or preview is not None:
            jpeg = None if final else preview
            await self.board.photo(chat, job_id, jpeg, _where(reply, reply.status_message_id))

    async def post_result(
        self, record: JobRecord, data: bytes, buttons: tuple[Button, ...]
    ) -> str | None:
        """Reply to the command with the result; Telegram's refusals as the queue's errors."""
        request, info = record.request, record.result
        assert info is not None
        limit = budget_for(request.reply, video=record.params.task.is_video)
        if len(data) > limit:
            # The worker encodes to the budget, so this is a bug or a changed limit.
            raise OutputTooLarge(limit_bytes=limit)
        # Who asked, where several share the chat (group and channel ids are negative).
        by = request.requester.display_name if int(request.reply.channel_id) < 0 else None
        caption, t = caption_html(record.params, requested_by=by), UPLOAD_TIMEOUT_S
        common: dict[str, Any] = {"caption": caption, "parse_mode": ParseMode.HTML}
        common |= {"reply_markup": keyboard(buttons), "read_timeout": t, "write_timeout": t}
        common |= _where(request.reply)
        file = InputFile(data, filename=f"reelbot-{record.id}.{info.ext}")
        send: Any
        tiles = [b for tile in info.tiles if (b := await self.results.get(tile.ref))]
        if info.tiles and len(tiles) == len(info.tiles):  # else the grid image, as one photo
            photo = partial(InputMediaPhoto, has_spoiler=info.spoiler)
            name = f"reelbot-{record.id}-{{}}.{info.tiles[0].ext}"
            album = [photo(b, filename=name.format(i)) for i, b in enumerate(tiles, 1)]
            send = partial(self._album, record.id, album)
        elif info.mime.startswith("video/"):
            send = self.bot.send_video
            common |= {"video": file, "supports_streaming": True, "has_spoiler": info.spoiler}
            common |= {"width": info.width, "height": info.height}
            common["duration"] = round(info.frames / info.fps) if info.fps else None
        elif fits_photo(info.mime, len(data), info.width, info.height):
            send, common["photo"], common["has_spoiler"] = self.bot.send_photo, file, info.spoiler
        else:
            send, common["document"] = self.bot.send_document, file
        try:
            message: Message = await send(**common)
        except RetryAfter as exc:
            # AIORateLimiter has already waited out several 429s; the queue retries later.
            # (The public attribute warns about its coming type change; read the timedelta.)
            raise RateLimited(retry_after=exc._retry_after.total_seconds()) from exc
        except BadRequest:
            raise  # a 400 will not get better: the delivery says it could not be posted
        except NetworkError as exc:
            raise BackendUnavailable(str(exc)) from exc
        return str(message.message_id)

    async def _album(
        self, job_id: str, media: list[InputMediaPhoto], caption: str, **common: Any
    ) -> Message:
        """A grid's album, then the caption and keyboard (an album takes none) under it; a retry
        after the album went (in this process) posts the rest only, never a second album."""
        if (first := self.albums.get(job_id)) is None:
            album = {k: v for k, v in common.items() if k not in ("reply_markup", "parse_mode")}
            first = (await self.bot.send_media_group(media=media, **album))[0].message_id
            self.albums[job_id] = first
        common["reply_parameters"] = ReplyParameters(first, allow_sending_without_reply=True)
        message: Message = await self.bot.send_message(text=caption, **common)
        self.albums.pop(job_id, None)
        return message

    async def answer(self, reply: ReplyAddress, answer: Reply) -> None:
        """A text reply to the command (Telegram has no private answers in a group)."""
        await self._send(reply, answer.text, keyboard(answer.buttons))

    async def fetch_input(self, ref: str, *, video: bool = False) -> bytes:
        """An input image (its header checked) or clip by file id; a failed download in words."""
        try:
            file = await self.bot.get_file(
                ref, read_timeout=DOWNLOAD_TIMEOUT_S, write_timeout=REPLY_TIMEOUT_S
            )
            data = bytes(await file.download_as_bytearray(read_timeout=DOWNLOAD_TIMEOUT_S))
        except TelegramError as exc:
            if isinstance(exc, BadRequest) and "too big" in exc.message.lower():
                raise too_big() from exc
            raise InvalidImage(
                "Telegram would not let me download that file. Please send it again."
            ) from exc
        if not video:
            probe_image(data, max_bytes=DOWNLOAD_LIMIT)
        return data
