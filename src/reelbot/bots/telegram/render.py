"""What the bot writes: status lines, progress bars, captions, buttons and their callback data."""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from reelbot.catalog import Catalog, Task
from reelbot.errors import UserError
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus, parse_prompt

CAPTION_LIMIT = 1024
"""Telegram's caption limit, counted in UTF-16 code units after entity parsing."""
TEXT_LIMIT = 4096
CALLBACK_DATA_LIMIT = 64
BAR_CELLS = 10


class Action(StrEnum):
    """What an inline button does; the value is its prefix in ``callback_data``."""

    REROLL = "rr"
    VARIATIONS = "va"
    ANIMATE = "an"
    CANCEL = "cx"


@dataclass(frozen=True)
class ButtonPress:
    """Decoded ``callback_data``: an action on a job."""

    action: Action
    job_id: str


def encode_button(action: Action, job_id: str) -> str:
    """``rr:<job_id>``: small enough for the 64-byte limit, and meaningful after a restart."""
    data = f"{action.value}:{job_id}"
    if len(data.encode()) > CALLBACK_DATA_LIMIT:
        raise ValueError(f"callback_data over {CALLBACK_DATA_LIMIT} bytes: {data!r}")
    return data


def decode_button(data: str | None) -> ButtonPress | None:
    """The action and job of a button, or None for data this bot did not write."""
    if not data or ":" not in data:
        return None
    prefix, _, job_id = data.partition(":")
    try:
        action = Action(prefix)
    except ValueError:
        return None
    if not job_id or len(job_id) > 40 or not job_id.isalnum():
        return None
    return ButtonPress(action, job_id)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it."""
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-16 units, with an ellipsis when cut."""
    if utf16_len(text) <= limit:
        return text
    out = []
    used = 1  # the ellipsis
    for ch in text:
        n = utf16_len(ch)
        if used + n > limit:
            break
        out.append(ch)
        used += n
    return "".join(out).rstrip() + "…"


def progress_bar(step: int, total: int) -> str:
    """``▰▰▰▱▱▱▱▱▱▱``, filled in proportion to ``step / total``."""
    total = max(total, 1)
    filled = max(0, min(BAR_CELLS, round(BAR_CELLS * step / total)))
    return "▰" * filled + "▱" * (BAR_CELLS - filled)


def eta_text(seconds: float | None) -> str:
    """A rough, human time estimate."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"


def _what(task: Task, prompt: str) -> str:
    shown = truncate(prompt, 80) if prompt else "(no prompt)"
    return f"/{task.value}: {shown}"


def status_text(
    task: Task,
    prompt: str,
    status: JobStatus,
    *,
    position: int | None = None,
    eta_s: float | None = None,
    step: int | None = None,
    total: int | None = None,
    message: str | None = None,
) -> str:
    """The status message for a job in a given state (plain text, no parse mode)."""
    head = _what(task, prompt)
    if status == JobStatus.QUEUED and position == 0:
        status = JobStatus.RUNNING  # the queue counts a job that a worker holds as place 0
    if status == JobStatus.QUEUED:
        if position is None:
            return f"⏳ Queued — {head}"
        where = "next in line" if position <= 1 else f"#{position} in line"
        eta = eta_text(eta_s)
        return f"⏳ Queued, {where}{', ' + eta if eta else ''} — {head}"
    if status == JobStatus.RUNNING:
        if step is not None and total:
            return f"🎨 {progress_bar(step, total)} step {step}/{total} — {head}"
        return f"🎨 Starting — {head}"
    if status == JobStatus.ENCODING:
        noun = "video" if task.is_video else "image"
        return f"📦 Encoding the {noun} — {head}"
    if status == JobStatus.DELIVERING:
        return f"📤 Sending the result — {head}"
    if status == JobStatus.DELIVERED:
        return f"✅ Done — {head}"
    if status == JobStatus.CANCELLED:
        return f"🚫 Cancelled — {head}"
    return f"⚠️ {message or 'This job failed.'} — {head}"


def prompt_of(request: GenerationRequest) -> str:
    """The prompt as the user typed it, flags taken out (what status messages show)."""
    try:
        return parse_prompt(request.text)[0]
    except UserError:
        return request.text  # checked before it was queued; never expected here


def cancel_keyboard(job_id: str) -> InlineKeyboardMarkup:
    """The status message's button while the job is queued or running."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("✖ Cancel", callback_data=encode_button(Action.CANCEL, job_id))]]
    )


def result_keyboard(job_id: str, task: Task) -> InlineKeyboardMarkup:
    """Buttons under a result: re-roll always; variations and animate under images."""
    row = [InlineKeyboardButton("🔁 Re-roll", callback_data=encode_button(Action.REROLL, job_id))]
    if not task.is_video:
        row.append(
            InlineKeyboardButton(
                "🎨 Variations", callback_data=encode_button(Action.VARIATIONS, job_id)
            )
        )
        row.append(
            InlineKeyboardButton("🎬 Animate", callback_data=encode_button(Action.ANIMATE, job_id))
        )
    return InlineKeyboardMarkup([row])


def caption_html(params: GenerationParams, *, requested_by: str | None = None) -> str:
    """The result caption in HTML: prompt, seed and the flags to reproduce it, within 1024.

    The length limit applies to the visible text, so it is counted before escaping.
    """
    summary = params.summary()
    tail_lines = [f"seed {params.seed} · {params.model} · {params.width}×{params.height}"]
    if requested_by:
        tail_lines.append(f"for {requested_by}")
    tail_visible = "\n".join(tail_lines)
    flags_visible = summary
    fixed = utf16_len(tail_visible) + utf16_len(flags_visible) + 2  # two newlines
    prompt = params.prompt or "(no prompt)"
    # The flags and seed are what reproduce the result, so the prompt is what gets cut.
    prompt = truncate(prompt, max(20, CAPTION_LIMIT - fixed))
    return (
        f"<b>{html.escape(prompt, quote=False)}</b>\n"
        f"<code>{html.escape(flags_visible, quote=False)}</code>\n"
        + html.escape(tail_visible, quote=False)
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


def help_text(bot_username: str) -> str:
    """Usage with examples."""
    return (
        "I make images and short videos from text.\n\n"
        "/imagine a red fox in the snow --ar 16:9\n"
        "/video waves rolling onto a beach --duration 2\n"
        "Send a photo with /remix make it winter as its caption (or reply to a photo)\n"
        "Send a photo with /animate as its caption to bring it to life\n\n"
        "Flags: --ar W:H, --seed N, --no WORDS, --steps N, --guidance X, --model NAME, "
        "--strength 0.1-1 (remix), --duration S and --fps N (video), --style NAME\n\n"
        "/jobs your jobs · /cancel stop one · /quota your budget · /models what runs here\n"
        f"In groups, address me as /imagine@{bot_username}."
    )


def models_text(catalog: Catalog) -> str:
    """The models this deployment serves, per task."""
    lines = []
    for task in Task:
        models = catalog.for_task(task)
        if not models:
            continue
        names = ", ".join(f"{m.name}{' (default)' if i == 0 else ''}" for i, m in enumerate(models))
        lines.append(f"/{task.value}: {names}")
    if catalog.styles:
        lines.append("Styles (--style): " + ", ".join(sorted(catalog.styles)))
    return "\n".join(lines)
