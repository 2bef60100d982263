"""What the page shows: job cards and their partial updates as JSON, and the web's own texts."""

from __future__ import annotations

import base64
from typing import Any

from reelbot.chat.replies import Button
from reelbot.chat.surface import result_buttons, status_buttons
from reelbot.chat.texts import Status
from reelbot.jobs import JobStatus
from reelbot.store.records import JobRecord

__all__ = ["PLATFORM", "job_view", "status_view"]

PLATFORM = "web"

_SHOWN = {"mime", "width", "height", "size", "note", "spoiler"}


def actions(buttons: tuple[Button, ...], index: int | None = None) -> list[str]:
    """The page's names of a message's buttons (``index``: those under image i of a grid)."""
    return [b.action for b in buttons if b.index == index]


def _actions(record: JobRecord, status: JobStatus) -> list[str]:
    if status in (JobStatus.DELIVERING, JobStatus.DELIVERED) and record.result is not None:
        return actions(result_buttons(record, edit=True))  # the page has the editor
    # A failed job can be tried again from its card.
    return ["reroll"] if status == JobStatus.FAILED else actions(status_buttons(record.id, status))


def job_view(
    record: JobRecord,
    *,
    position: int | None = None,
    eta_s: float | None = None,
    delivered: bool = False,
) -> dict[str, Any]:
    """A whole job card: command, status, place in line, result and its parameters."""
    status = JobStatus.DELIVERED if delivered else record.status
    media, info = None, record.result
    if info is not None and status in (JobStatus.DELIVERING, JobStatus.DELIVERED):
        url = f"/media/{record.id}?client={record.requester.user_id}"
        kind = "video" if info.mime.startswith("video/") else "image"
        media = {"url": url, "kind": kind} | info.model_dump(include=_SHOWN)
        # A grid shows as its images, each with its own buttons (U1 and V1 under the first).
        buttons = result_buttons(record, edit=True)
        media["tiles"] = [
            {"url": f"{url}&part={i}", "actions": actions(buttons, i)}
            | tile.model_dump(include=_SHOWN)
            for i, tile in enumerate(info.tiles)
        ]
        said = enumerate(info.texts)  # /describe's suggestions: button 1 imagines the first
        media["texts"] = [{"text": t, "actions": actions(buttons, i)} for i, t in said]
    view: dict[str, Any] = {
        "type": "job",
        "job_id": record.id,
        "command": f"/{record.request.task.command} {record.request.text}".strip(),
        "task": record.params.task.value,
        "prompt": record.params.prompt,
        "summary": record.params.summary(),
        "seed": record.params.seed,
        "model": record.params.model,
        "status": status.value,
        "message": record.error_message,
        "notice": "",
        "media": media,
        "actions": _actions(record, status),
        "created_at": record.created_at,
    }
    if position is not None:
        view |= {"position": position, "eta_s": round(eta_s or 0.0, 1)}
    return view


def status_view(
    job_id: str, status: Status, preview: bytes | None, buttons: tuple[Button, ...]
) -> dict[str, Any]:
    """A status message's state as a partial update of the job's card."""
    view: dict[str, Any] = {
        "type": "job",
        "job_id": job_id,
        "status": status.status.value,
        "stage": status.stage,
        "step": status.step or 0,
        "total": status.total or 0,
        "actions": actions(buttons),
    }
    if status.position is not None:
        view |= {"position": status.position, "eta_s": round(status.eta_s or 0.0, 1)}
    if status.message:
        view["message"] = status.message
        if status.status == JobStatus.DELIVERING:
            view["notice"] = status.message
    if preview:
        view["preview"] = "data:image/jpeg;base64," + base64.b64encode(preview).decode()
    return view
