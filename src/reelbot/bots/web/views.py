"""What the page shows: job records and events as JSON for the browser, and the text answers."""

from __future__ import annotations

import difflib
from typing import Any

from reelbot.catalog import Catalog, Task
from reelbot.jobs import JobStatus
from reelbot.store.estimates import Position
from reelbot.store.progress import ProgressEvent
from reelbot.store.records import JobRecord

__all__ = [
    "HELP_TEXT",
    "command_of",
    "event_view",
    "job_view",
    "models_text",
    "position_view",
    "unknown_command",
]

PLATFORM = "web"

HELP_TEXT = """reelbot makes images and videos from a prompt.
/imagine a red fox in the snow --ar 16:9 --seed 7 · an image
/remix make it winter (attach an image) · change a picture
/video waves at sunset --duration 2 · a short video
/animate (attach an image) · bring a picture to life
Flags: --ar 16:9 --seed 42 --no text --steps 4 --guidance 3.5 --model NAME --strength 0.6 \
--duration 4 --fps 24 --style NAME
/jobs your jobs · /cancel [job] stop one · /models what runs here · /quota your budget"""

COMMANDS = (
    "imagine",
    "remix",
    "video",
    "animate",
    "jobs",
    "cancel",
    "models",
    "help",
    "quota",
    "admin",
)


def command_of(record: JobRecord) -> str:
    """The command as the user typed it."""
    text = record.request.text
    return f"/{record.request.task.value} {text}".strip()


def _actions(record: JobRecord, status: JobStatus) -> list[str]:
    """The buttons a job card has: cancel while it waits or runs, then re-roll and friends."""
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return ["cancel"]
    if status in (JobStatus.DELIVERING, JobStatus.DELIVERED) and record.result is not None:
        if record.params.task.is_video:
            return ["reroll"]
        return ["reroll", "variations", "animate"]
    return ["reroll"] if status == JobStatus.FAILED else []


def job_view(
    record: JobRecord, *, position: Position | None = None, delivered: bool = False
) -> dict[str, Any]:
    """A whole job card: command, status, place in line, result and its parameters."""
    status = JobStatus.DELIVERED if delivered else record.status
    media = None
    if record.result is not None and status in (JobStatus.DELIVERING, JobStatus.DELIVERED):
        info = record.result
        media = {
            "url": f"/media/{record.id}?client={record.requester.user_id}",
            "mime": info.mime,
            "kind": "video" if info.mime.startswith("video/") else "image",
            "width": info.width,
            "height": info.height,
            "size": info.size,
            "note": info.note,
            "spoiler": info.spoiler,
        }
    view: dict[str, Any] = {
        "type": "job",
        "job_id": record.id,
        "command": command_of(record),
        "task": record.params.task.value,
        "prompt": record.params.prompt,
        "summary": record.params.summary(),
        "seed": record.params.seed,
        "model": record.params.model,
        "status": status.value,
        "message": record.error_message,
        "media": media,
        "actions": _actions(record, status),
        "created_at": record.created_at,
    }
    if position is not None:
        view["position"] = position.position
        view["eta_s"] = round(position.eta_s, 1)
    return view


def position_view(job_id: str, position: Position) -> dict[str, Any]:
    """A waiting job's place in line and ETA, as a partial update of its card."""
    return {
        "type": "job",
        "job_id": job_id,
        "status": JobStatus.QUEUED.value,
        "position": position.position,
        "eta_s": round(position.eta_s, 1),
    }


def event_view(event: ProgressEvent) -> dict[str, Any]:
    """A progress or status event as a partial update of a job card."""
    view: dict[str, Any] = {
        "type": "job",
        "job_id": event.job_id,
        "status": event.status.value,
        "stage": event.stage,
        "step": event.step,
        "total": event.total,
    }
    if event.status == JobStatus.RUNNING:
        view["actions"] = ["cancel"]
    if event.message:
        view["message"] = event.message
    if event.preview_jpeg_b64:
        view["preview"] = f"data:image/jpeg;base64,{event.preview_jpeg_b64}"
    return view


def models_text(catalog: Catalog) -> str:
    """The ``/models`` answer: each task with its models, the default first."""
    lines = [f"Models on this deployment ({catalog.set_name}):"]
    for task in Task:
        models = catalog.for_task(task)
        if models:
            names = ", ".join(
                m.name + (" (default)" if i == 0 else "") for i, m in enumerate(models)
            )
            lines.append(f"/{task.value}: {names}")
    return "\n".join(lines)


def unknown_command(name: str) -> str:
    """The answer to a command that does not exist, with the nearest one."""
    close = difflib.get_close_matches(name.lower(), COMMANDS, n=1)
    hint = f" Did you mean /{close[0]}?" if close else ""
    return f"Unknown command /{name[:40]}.{hint} Try /help."
