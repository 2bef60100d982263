"""What the bot writes, in Telegram's terms: status lines, captions, buttons and callback data."""

from __future__ import annotations

import html
import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from reelbot.chat.replies import SHORT, Button
from reelbot.chat.texts import Status
from reelbot.jobs import GenerationParams

CAPTION_LIMIT = 1024
"""Telegram's caption limit, counted in UTF-16 code units after entity parsing."""
MESSAGE_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64

PREFIX = {"reroll": "rr", "vary": "va", "animate": "an", "cancel": "cx", "upscale": "up"}
PREFIX |= {"vary_subtle": "vs", "vary_strong": "vx", "rerun": "rn", "info": "in"} | SHORT
"""A chat button's action → its prefix in ``callback_data`` (kept short for the 64 bytes)."""
ACTION = {prefix: action for action, prefix in PREFIX.items()}
ICON = {"reroll": "🔁", "vary": "🎨", "animate": "🎬", "cancel": "✖"}
_DATA = re.compile(r"(?P<prefix>[a-z]{2}):(?P<job>[A-Za-z0-9]{1,40})(?::(?P<i>[0-9]))?")
ROW = 5  # buttons a row: a grid's U1–U4 and Re-roll, then V1–V4 (as on Discord)


def encode_button(action: str, job_id: str, index: int | None = None) -> str:
    """``rr:<job>``, ``up:<job>:<i>`` for image i of a grid: within 64 bytes, lasting restarts."""
    data = f"{PREFIX[action]}:{job_id}" + ("" if index is None else f":{index}")
    if len(data.encode()) > CALLBACK_DATA_LIMIT:
        raise ValueError(f"callback_data over {CALLBACK_DATA_LIMIT} bytes: {data!r}")
    return data


def decode_button(data: str | None) -> Button | None:
    """The button (no label) of ``callback_data``, or None for data this bot did not write."""
    m = _DATA.fullmatch(data or "")
    if m is None or m["prefix"] not in ACTION:
        return None
    return Button(ACTION[m["prefix"]], m["job"], "", int(m["i"]) if m["i"] else None)


def keyboard(buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
    """Chat buttons as rows of inline buttons; None for no buttons."""
    keys = [
        InlineKeyboardButton(
            f"{ICON.get(b.action, '')} {b.label}".strip(),
            callback_data=encode_button(b.action, b.job_id, b.index),
        )
        for b in buttons
    ]
    rows = [keys[i : i + ROW] for i in range(0, len(keys), ROW)]
    return InlineKeyboardMarkup(rows) if rows else None


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
