"""What the bot writes, in Telegram's terms: status lines, captions, buttons and callback data."""

from __future__ import annotations

import html

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from reelbot.chat.replies import Button
from reelbot.chat.texts import Status
from reelbot.jobs import GenerationParams

CAPTION_LIMIT = 1024
"""Telegram's caption limit, counted in UTF-16 code units after entity parsing."""
MESSAGE_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64

PREFIX = {"reroll": "rr", "vary": "va", "animate": "an", "cancel": "cx"}
"""A chat button's action → its prefix in ``callback_data`` (kept short for the 64 bytes)."""
ACTION = {prefix: action for action, prefix in PREFIX.items()}
ICON = {"reroll": "🔁", "vary": "🎨", "animate": "🎬", "cancel": "✖"}


def encode_button(action: str, job_id: str) -> str:
    """``rr:<job_id>``: small enough for the 64-byte limit, and meaningful after a restart."""
    data = f"{PREFIX[action]}:{job_id}"
    if len(data.encode()) > CALLBACK_DATA_LIMIT:
        raise ValueError(f"callback_data over {CALLBACK_DATA_LIMIT} bytes: {data!r}")
    return data


def decode_button(data: str | None) -> tuple[str, str] | None:
    """``(action, job_id)`` of a button, or None for data this bot did not write."""
    prefix, _, job_id = (data or "").partition(":")
    if prefix not in ACTION or not job_id or len(job_id) > 40 or not job_id.isalnum():
        return None
    return ACTION[prefix], job_id


def keyboard(buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
    """Chat buttons as one row of inline buttons; None for no buttons."""
    if not buttons:
        return None
    row = [
        InlineKeyboardButton(
            f"{ICON.get(b.action, '')} {b.label}".strip(),
            callback_data=encode_button(b.action, b.job_id),
        )
        for b in buttons
    ]
    return InlineKeyboardMarkup([row])


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-16 units, with an ellipsis when cut."""
    if utf16_len(text) <= limit:
        return text
    out, used = [], 1  # the ellipsis
    for ch in text:
        used += utf16_len(ch)
        if used > limit:
            break
        out.append(ch)
    return "".join(out).rstrip() + "…"


def status_text(status: Status) -> str:
    """A status message: the chat layer's words as plain text, within Telegram's 4096."""
    return truncate(status.text, MESSAGE_LIMIT)


def caption_html(params: GenerationParams, *, requested_by: str | None = None) -> str:
    """The result caption in HTML: prompt, seed and the flags to reproduce it, within 1024.

    The length limit applies to the visible text, so it is counted before escaping.
    """
    tail = f"seed {params.seed} · {params.model} · {params.width}×{params.height}"
    if requested_by:
        tail += f"\nfor {requested_by}"
    flags = params.summary()
    # The flags and seed are what reproduce the result, so the prompt is what gets cut.
    room = CAPTION_LIMIT - utf16_len(tail) - utf16_len(flags) - 2
    prompt = truncate(params.prompt or "(no prompt)", max(20, room))
    return (
        f"<b>{html.escape(prompt, quote=False)}</b>\n"
        f"<code>{html.escape(flags, quote=False)}</code>\n" + html.escape(tail, quote=False)
    )


COMMANDS: tuple[tuple[str, str], ...] = (
    ("imagine", "Make an image: /imagine a red fox --ar 16:9"),
    ("remix", "Change a photo: send it with /remix make it winter"),
    ("video", "Make a short video: /video waves at sunset"),
    ("animate", "Bring a photo to life: send it with /animate"),
    ("jobs", "Your queued and running jobs"),
    ("cancel", "Cancel your job: /cancel or /cancel JOB"),
    ("quota", "Your remaining budget"),
    ("models", "Models and what they do"),
    ("help", "How to use this bot, with examples"),
)
"""Every command with its menu description (for setMyCommands)."""
