"""Words every platform shows the same way: progress bars, ETAs, cancel answers, job lines,
the models list and the final states of a job. Platforms add their own markup around them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reelbot.catalog import Catalog, Task
from reelbot.jobs import JobStatus

__all__ = [
    "BUTTONS_HELP",
    "CANCEL_TEXT",
    "MENU",
    "Status",
    "clip",
    "eta_text",
    "final_text",
    "help_text",
    "models_lines",
    "progress_bar",
    "status_text",
]

BAR_WIDTH = 12

CANCEL_TEXT = {
    "removed": "Cancelled; the credits are back.",
    "stopping": "Cancelling… it stops at the next step.",
    "too_late": "Too late to cancel: the result is being sent.",
    "already_finished": "That job has finished already.",
    "already_delivered": "Too late to cancel: the result was already delivered.",
}
"""The answer to ``/cancel`` by outcome: a running job is not called cancelled until it is."""


def clip(text: str, limit: int) -> str:
    """Shorten text to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """A text progress bar, e.g. ``▰▰▰▱▱▱ 3/6``."""
    total = max(total, 1)
    step = min(max(step, 0), total)
    filled = round(width * step / total)
    return "▰" * filled + "▱" * (width - filled) + f" {step}/{total}"


def eta_text(eta_s: float | None) -> str:
    """`` · about 12 s`` or `` · about 3 min``; nothing when unknown."""
    if eta_s is None:
        return ""
    if eta_s < 60:
        return f" · about {max(1, round(eta_s))} s"
    return f" · about {round(eta_s / 60)} min"


def final_text(status: JobStatus, message: str | None = None) -> str:
    """How a job ended, in words: every job's status message ends in one of these."""
    if status == JobStatus.DELIVERED:
        return "✅ Done · posted below"
    if status == JobStatus.CANCELLED:
        return "🚫 Cancelled · the credits are back"
    detail = message or "something went wrong."
    return f"⚠️ Failed: {detail}"


@dataclass(frozen=True)
class Status:
    """A job's status message as values; each platform draws it in its own markup."""

    status: JobStatus
    prompt: str
    position: int | None = None
    eta_s: float | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None
    """Why it failed, or what a final state adds (kept for later, retrying)."""
    credits_back: bool = False
    """A failure that refunded the job's credits (every one before the result was made)."""
    stage: str | None = None
    """What the worker is doing while it runs (loading, denoising, decoding), when it says."""
    stopping: bool = False
    """Asked to stop while running: "Cancelling…" until the worker confirms."""

    @property
    def head(self) -> str:
        """The first line, without markup: ``🎨 Running ▰▰▱▱ 2/4 · about 3 s``."""
        if self.stopping and not self.status.finished:
            return f"🛑 {CANCEL_TEXT['stopping']}"
        if self.status == JobStatus.QUEUED:
            where = f" · position {self.position}" if self.position is not None else ""
            return f"⏳ Queued{where}{eta_text(self.eta_s)}"
        if self.status == JobStatus.RUNNING:
            bar = f" {progress_bar(self.step, self.total)}" if self.step and self.total else ""
            return f"🎨 Running{bar}{eta_text(self.eta_s)}"
        if self.status == JobStatus.ENCODING:
            return "🎞️ Encoding"
        if self.status == JobStatus.DELIVERING:
            return "📤 Sending the result" + (f" · {self.message}" if self.message else "")
        said = final_text(self.status, self.message)
        if self.credits_back and self.status == JobStatus.FAILED:
            said += " The credits are back."
        return said

    @property
    def text(self) -> str:
        """The whole message as plain text: the head and the prompt, quoted."""
        return self.head + (f"\n> {clip(self.prompt, 1500)}" if self.prompt else "")


def status_text(status: JobStatus, prompt: str, **fields: Any) -> str:
    """``Status(...).text``, for platforms with no markup of their own."""
    return Status(status, prompt, **fields).text


def undeliverable_text(ttl_s: int) -> str:
    """The final words of a result the platform would not take."""
    hours = max(1, round(ttl_s / 3600))
    return (
        f"The result could not be posted here. It is kept for about {hours} h "
        f"(/jobs and the web chat still know it)."
    )


def models_lines(catalog: Catalog) -> list[str]:
    """Each task with its models (the default first), then the style presets."""
    lines = []
    for task in Task:
        models = catalog.for_task(task)
        if not models:
            continue
        names = ", ".join(f"{m.name}{' (default)' if i == 0 else ''}" for i, m in enumerate(models))
        lines.append(f"/{task.value}: {names}")
    if catalog.styles:
        lines.append("Styles (--style): " + ", ".join(sorted(catalog.styles)))
    return lines


BUTTONS_HELP = (
    "Under a result: U1–U4 upscale, V1–V4 and Vary (subtle/strong) make variations, Zoom Out "
    "and the arrows widen the picture, Edit region (where the server has its web editor) "
    "repaints what you paint over, Re-roll draws a new seed, Extend makes a video longer, "
    "Smooth doubles its frames and Upscale its size, 1–4 under /describe imagine that prompt, "
    "Info says how it was made. Whoever presses a button starts a job of their own and pays for "
    "it (a grid costs n images); Cancel stays with the job's owner."
)
"""What the buttons under a result do, and who pays: every platform's /help says it."""


def help_text(attach: str, *, footer: str = "") -> str:
    """``/help`` for the platforms that read typed commands: the commands and their flags, with
    how this platform takes an image (``attach``) and its own last line."""
    lines = [
        "reelbot makes images and videos from a prompt.",
        "/imagine a red fox in the snow --ar 16:9 --seed 7 · an image",
        f"/remix make it winter · change a picture ({attach})",
        "/video waves at sunset --duration 2 · a short video",
        f"/animate · bring a picture to life ({attach})",
        f"/upscale --scale 4 --creative · a bigger, sharper picture ({attach})",
        "/restyle watercolor · redraw a clip you send · /smooth · twice the frames of a clip",
        f"/describe · four prompts for a picture ({attach}) · /blend · 2–4 pictures in one",
        "/remix with a second picture as a mask (white = change) · /animate with two: "
        "first and last frame",
        "Flags: --n 4 (a grid) --ar 16:9 --seed 42 --no text --steps 4 --guidance 3.5 "
        "--model NAME --strength 0.6 --duration 4 --fps 24 --style NAME",
        BUTTONS_HELP,
        "/history your last results · /show JOB post one again · /jobs your jobs · "
        "/cancel [job] stop one · /models what runs here · /quota your budget",
    ]
    return "\n".join([*lines, footer] if footer else lines)


MENU: tuple[tuple[str, str], ...] = (
    ("imagine", "Make an image: /imagine a red fox --ar 16:9"),
    ("remix", "Change a picture: send it with /remix make it winter"),
    ("video", "Make a short video: /video waves at sunset"),
    ("animate", "Bring a picture to life: send it with /animate"),
    ("upscale", "Make a picture bigger: send it with /upscale --scale 4"),
    ("restyle", "Redraw a clip: send it with /restyle watercolor"),
    ("smooth", "Twice the frames of a clip: send it with /smooth"),
    ("blend", "Two to four pictures in one: send them with /blend"),
    ("describe", "Four prompts for a picture: send it with /describe"),
    ("history", "Your last results, each with /show"),
    ("show", "Post one of your results again: /show JOB"),
    ("jobs", "Your queued and running jobs"),
    ("cancel", "Cancel your job: /cancel or /cancel JOB"),
    ("quota", "Your remaining budget"),
    ("models", "Models and what they do"),
    ("help", "How to use this bot, with examples"),
)
"""Every command with a line on it, for a platform's command menu (Telegram's setMyCommands)."""
