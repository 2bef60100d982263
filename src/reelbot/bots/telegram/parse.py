"""Reading a Telegram message: which command it is, for which bot, and which image comes with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message

from reelbot.chat.albums import Attachment
from reelbot.errors import InvalidImage
from reelbot.video_inputs import check_declared_video

DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The Bot API's getFile limit on the cloud server."""

_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,32}))?(?:\s+|$)", re.S)


@dataclass(frozen=True)
class Command:
    """A command addressed to this bot: its name and the text after it."""

    name: str
    args: str


def parse_command(text: str | None, bot_username: str) -> Command | None:
    """``/imagine@bot a fox`` → ``Command("imagine", "a fox")``; None when not for this bot."""
    if not text:
        return None
    match = _COMMAND_RE.match(text)
    if match is None:
        return None
    target = match.group(2)
    # In a group several bots may share a command name; /cmd@otherbot is not ours.
    if target is not None and target.lower() != bot_username.lower():
        return None
    return Command(name=match.group(1).lower(), args=text[match.end() :].strip())


def command_of(message: Message, bot_username: str) -> Command | None:
    """The command in a message's text, or in its caption (a photo sent with a command)."""
    return parse_command(message.text or message.caption, bot_username)


def _from_message(message: Message, clips: bool = False) -> Attachment | None:
    if message.photo:
        # Telegram lists sizes smallest first, but pick by area rather than trust the order.
        best = max(message.photo, key=lambda p: p.width * p.height)
        return Attachment(best.file_id, best.file_size)
    # An animation (a GIF, as Telegram stores it) also sets ``document``: look at it first.
    clip = message.video or message.animation or message.document
    mime = (clip.mime_type or "").lower() if clip else ""
    # A GIF file is a clip where the command takes one (/smooth, /restyle), else a picture.
    gif = clips and mime == "image/gif"
    if clip is not None and (clip is not message.document or mime.startswith("video/") or gif):
        check_declared_video(clip.file_size, mime)  # getFile's 20 MB holds for clips too
        return Attachment(clip.file_id, clip.file_size, video=True)
    if clip is not None:  # a document that is no clip
        if not mime.startswith("image/"):
            raise InvalidImage(
                f"{clip.file_name or 'That file'} is not an image ({mime or 'unknown type'})."
                " Send a photo, or a PNG, JPEG or WEBP file, with the command as its caption."
            )
        return Attachment(clip.file_id, clip.file_size)
    if message.sticker is not None:
        raise InvalidImage("Stickers can't be used as input. Send a photo or a clip.")
    return None


def find_inputs(
    message: Message,
    album: list[Message] | None = None,
    replied: list[Message] | None = None,
    *,
    clips: bool = False,
) -> list[Attachment]:
    """The images and clips sent with the command (``album``: all parts of its album), else in
    the message it replies to (``replied``: that one's album); in order, maybe none. ``clips``:
    the command takes a clip, so a GIF file is one.

    Raises:
        InvalidImage, InvalidVideo: a sticker, a non-image file, over the download limit.
    """
    found = [s for part in album or [message] if (s := _from_message(part, clips))]
    if not found and (reply := message.reply_to_message) is not None:
        found = [s for part in replied or [reply] if (s := _from_message(part, clips))]
    for source in found:
        if source.size and source.size > DOWNLOAD_LIMIT:
            raise too_big(f"{source.size / (1024 * 1024):.0f} MB")
    return found


def too_big(size: str = "over 20 MB") -> InvalidImage:
    """An image over what bots may download (the size when known), in words."""
    return InvalidImage(
        f"That image is {size}; bots can only download files up to 20 MB. Send it as "
        "a photo (Telegram shrinks photos) or a smaller file."
    )
