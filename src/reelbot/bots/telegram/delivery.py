"""Posting a finished job to Telegram: the media with caption and buttons, and the final status."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypedDict

from telegram import Bot, InlineKeyboardMarkup, InputFile, Message, ReplyParameters
from telegram.constants import ParseMode

from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus

from .render import caption_html, prompt_of, result_keyboard, status_text
from .status import StatusBoard

log = logging.getLogger(__name__)

PHOTO_LIMIT = 10 * 1024 * 1024
"""sendPhoto: at most 10 MB, width + height at most 10000, ratio at most 20."""
UPLOAD_LIMIT = 50 * 1024 * 1024
"""sendVideo/sendDocument on the cloud Bot API; a local Bot API server allows 2000 MB."""
UPLOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ResultMedia:
    """An encoded result to upload."""

    data: bytes
    mime: str
    width: int
    height: int
    duration_s: float | None = None
    spoiler: bool = False

    @property
    def ext(self) -> str:
        """File extension for the upload's name."""
        return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(
            self.mime, "mp4" if self.mime.startswith("video/") else "bin"
        )


class _Common(TypedDict):
    """The arguments every result upload shares."""

    chat_id: int
    caption: str
    parse_mode: str
    reply_markup: InlineKeyboardMarkup
    reply_parameters: ReplyParameters | None
    message_thread_id: int | None
    read_timeout: float
    write_timeout: float


def fits_photo(media: ResultMedia) -> bool:
    """Whether Telegram takes the image as a photo (else it goes as a document, uncompressed)."""
    w, h = media.width, media.height
    return (
        media.mime.startswith("image/")
        and len(media.data) <= PHOTO_LIMIT
        and w + h <= 10000
        and max(w, h) <= 20 * max(1, min(w, h))
    )


def _reply_parameters(request: GenerationRequest) -> ReplyParameters | None:
    if request.reply.message_id is None:
        return None
    # The command may have been deleted while the job ran; post the result anyway.
    return ReplyParameters(
        message_id=int(request.reply.message_id), allow_sending_without_reply=True
    )


def _display(request: GenerationRequest) -> str | None:
    """Who asked, shown in groups where several people share the chat."""
    if int(request.reply.channel_id) > 0:
        return None
    return request.requester.display_name or None


async def post_result(
    bot: Bot,
    board: StatusBoard,
    *,
    job_id: str,
    request: GenerationRequest,
    params: GenerationParams,
    media: ResultMedia,
    upload_limit: int | None = None,
) -> Message:
    """Reply to the command with the result, then mark the status message done."""
    chat_id = int(request.reply.channel_id)
    thread_id = int(request.reply.thread_id) if request.reply.thread_id else None
    caption = caption_html(params, requested_by=_display(request))
    common = _Common(
        chat_id=chat_id,
        caption=caption,
        parse_mode=ParseMode.HTML,
        reply_markup=result_keyboard(job_id, request.task),
        reply_parameters=_reply_parameters(request),
        message_thread_id=thread_id,
        read_timeout=UPLOAD_TIMEOUT_S,
        write_timeout=UPLOAD_TIMEOUT_S,
    )
    file = InputFile(media.data, filename=f"reelbot-{job_id}.{media.ext}")
    if upload_limit is None:
        override = request.reply.extra.get("max_bytes")
        upload_limit = int(override) if override and override.isdigit() else UPLOAD_LIMIT
    if len(media.data) > upload_limit:
        # The worker encodes to the budget, so this is a bug or a changed limit; say so.
        size, limit = len(media.data) / 1e6, upload_limit / 1e6
        await finish_status(
            board,
            request,
            prompt_of(request),
            JobStatus.FAILED,
            f"The result ({size:.0f} MB) is over the {limit:.0f} MB Telegram takes from bots.",
        )
        raise ValueError(f"result of {job_id} is {len(media.data)} bytes, over {upload_limit}")
    message: Message
    if media.mime.startswith("video/"):
        duration = round(media.duration_s) if media.duration_s else None
        message = await bot.send_video(
            video=file,
            supports_streaming=True,
            width=media.width,
            height=media.height,
            duration=duration,
            has_spoiler=media.spoiler,
            **common,
        )
    elif fits_photo(media):
        message = await bot.send_photo(photo=file, has_spoiler=media.spoiler, **common)
    else:
        message = await bot.send_document(document=file, **common)
    await finish_status(board, request, prompt_of(request), JobStatus.DELIVERED)
    return message


async def finish_status(
    board: StatusBoard,
    request: GenerationRequest,
    prompt: str,
    status: JobStatus,
    message: str | None = None,
) -> None:
    """Put the final state into the status message and take its cancel button away."""
    if request.reply.status_message_id is None:
        return
    text = status_text(request.task, prompt, status, message=message)
    await board.show(
        int(request.reply.channel_id), int(request.reply.status_message_id), text, final=True
    )
