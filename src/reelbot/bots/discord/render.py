"""Message text for Discord: status lines, progress bars, result captions, all within 2000 chars."""

from __future__ import annotations

from reelbot.catalog import Catalog, Task
from reelbot.jobs import GenerationParams, GenerationRequest, JobStatus

MAX_CONTENT = 2000
"""Discord's limit on a message's content."""
BAR_WIDTH = 12


def clip(text: str, limit: int) -> str:
    """Shorten text to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """A text progress bar, e.g. ``▰▰▰▱▱▱ 3/6``."""
    total = max(total, 1)
    step = min(max(step, 0), total)
    filled = round(width * step / total)
    return "▰" * filled + "▱" * (width - filled) + f" {step}/{total}"


def _eta(eta_s: float | None) -> str:
    if eta_s is None:
        return ""
    if eta_s < 60:
        return f" · about {max(1, round(eta_s))} s"
    return f" · about {round(eta_s / 60)} min"


def status_text(
    status: JobStatus,
    prompt: str,
    *,
    position: int | None = None,
    eta_s: float | None = None,
    step: int | None = None,
    total: int | None = None,
    detail: str = "",
) -> str:
    """The status message for a job, as the original interaction response shows it."""
    if status == JobStatus.QUEUED:
        where = f" · position {position}" if position is not None else ""
        head = f"⏳ **Queued**{where}{_eta(eta_s)}"
    elif status == JobStatus.RUNNING:
        bar = f" {progress_bar(step, total)}" if step is not None and total else ""
        head = f"🎨 **Running**{bar}{_eta(eta_s)}"
    elif status == JobStatus.ENCODING:
        head = "🎞️ **Encoding**"
    elif status == JobStatus.DELIVERING:
        head = "📤 **Posting**"
    elif status == JobStatus.DELIVERED:
        head = "✅ **Done** · posted below"
    elif status == JobStatus.CANCELLED:
        head = "🚫 **Cancelled**"
    else:
        head = f"⚠️ **Failed**: {detail or 'something went wrong.'}"
    quoted = f"\n> {clip(prompt, 1500)}" if prompt else ""
    return clip(head + quoted, MAX_CONTENT)


def result_text(
    request: GenerationRequest, params: GenerationParams, *, mention: bool, note: str = ""
) -> str:
    """The caption of a result: who asked, the prompt, and the flags that reproduce it."""
    who = f"<@{request.requester.user_id}> " if mention else ""
    flags = f"`{params.summary()}`"
    if params.negative_prompt:
        flags += f"\n--no {clip(params.negative_prompt, 300)}"
    tail = f"\n{flags}" + (f"\n{clip(note, 200)}" if note else "")
    head = f"{who}**/{params.task.value}** "
    room = MAX_CONTENT - len(head) - len(tail)
    return head + clip(params.prompt or "(no prompt)", max(room, 20)) + tail


def failure_text(request: GenerationRequest, message: str, *, mention: bool) -> str:
    """The text posted when a job failed."""
    who = f"<@{request.requester.user_id}> " if mention else ""
    return clip(f"{who}⚠️ /{request.task.value} failed: {message}", MAX_CONTENT)


def models_text(catalog: Catalog) -> str:
    """The ``/models`` answer: each task with its models, the default first."""
    lines = ["**Models on this deployment**"]
    for task in Task:
        models = catalog.for_task(task)
        if not models:
            continue
        names = ", ".join(
            f"`{m.name}`" + (" (default)" if i == 0 else "") for i, m in enumerate(models)
        )
        lines.append(f"/{task.value}: {names}")
    return clip("\n".join(lines), MAX_CONTENT)


HELP_TEXT = """**reelbot** makes images and videos from a prompt.
`/imagine a red fox in the snow` · an image
`/remix prompt image:<attachment>` · change a picture
`/video waves at sunset` · a short video
`/animate image:<attachment>` · bring a picture to life
Options: `negative`, `seed`, `aspect`, `steps`, `guidance`, `model`, `strength`, \
`duration`, `fps`, or flags in the prompt: `--ar 16:9 --seed 42 --no text --steps 4 --model NAME`.
`/jobs` your jobs · `/cancel` stop one · `/models` what runs here · `/quota` your budget"""
