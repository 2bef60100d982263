"""Reading a Telegram message: which command it is, for which bot, and which image comes with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message

from reelbot.errors import InvalidImage

DOWNLOAD_LIMIT = 20 * 1024 * 1024
"""The Bot API's getFile limit on the cloud server."""

_COMMAND_RE = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,32}))?(?:\s+|$)", re.S)


@dataclass(frozen=True)
class Command:
    """A command addressed to this bot: its name and the text after it."""

    name: str
    args: str


@dataclass(frozen=True)
class ImageSource:
    """An image that came with a command (a photo size or a document), by file id."""

    file_id: str
    file_size: int | None


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


def _from_message(message: Message) -> ImageSource | None:
    if message.photo:
        # Telegram lists sizes smallest first, but pick by area rather than trust the order.
        best = max(message.photo, key=lambda p: p.width * p.height)
        return ImageSource(best.file_id, best.file_size)
    document = message.document
    if document is not None:
        mime = (document.mime_type or "").lower()
        if not mime.startswith("image/"):
            name = document.file_name or "That file"
            raise InvalidImage(
                f"{name} is not an image ({mime or 'unknown type'}). Send a photo, or a PNG, "
                "JPEG or WEBP file, with the command as its caption."
            )
        return ImageSource(document.file_id, document.file_size)
    unusable = "Stickers" if message.sticker is not None else None
    if message.animation is not None or message.video is not None:
        unusable = "Videos and GIFs"
    if unusable:
        raise InvalidImage(
            f"{unusable} can't be used as input. Send a photo with the command as its caption."
        )
    return None


def find_image(message: Message) -> ImageSource | None:
    """The image sent with the command, or in the message it replies to; None when there is none.

    Raises:
        InvalidImage: the attachment is a sticker, a video or a non-image file, or it is over
            the bot download limit; the message says what to send instead.
    """
    source = _from_message(message)
    if source is None and message.reply_to_message is not None:
        source = _from_message(message.reply_to_message)
    if source is not None and source.file_size and source.file_size > DOWNLOAD_LIMIT:
        raise too_big(f"{source.file_size / (1024 * 1024):.0f} MB")
    return source


def too_big(size: str = "over 20 MB") -> InvalidImage:
    """An image over what bots may download (the size when known), in words."""
    return InvalidImage(
        f"That image is {size}; bots can only download files up to 20 MB. Send it as "
        "a photo (Telegram shrinks photos) or a smaller file."
    )
