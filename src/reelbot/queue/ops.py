"""What ``reelbot jobs`` shows operators: rich tables of job records."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.table import Table

from reelbot.jobs import JobStatus
from reelbot.store.estimates import Position
from reelbot.store.records import JobRecord

__all__ = ["age", "job_detail", "jobs_table"]

_STYLE = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.ENCODING: "yellow",
    JobStatus.DELIVERING: "yellow",
    JobStatus.DELIVERED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "dim",
}


def age(seconds: float) -> str:
    """A short human duration: 42s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _status(record: JobRecord) -> str:
    return f"[{_STYLE[record.status]}]{record.status.value}[/]"


def jobs_table(records: Sequence[JobRecord], *, now: float | None = None) -> Table:
    """One line per job, newest first."""
    now = time.time() if now is None else now
    table = Table(title="jobs", title_justify="left")
    for column in ("id", "status", "task", "model", "user", "age", "tries", "prompt"):
        table.add_column(column, no_wrap=column != "prompt", overflow="ellipsis")
    for r in records:
        who = f"{r.requester.platform}:{r.requester.user_id}"
        table.add_row(
            r.id,
            _status(r),
            r.params.task.value,
            r.params.model,
            who,
            age(now - r.created_at),
            str(r.attempts),
            r.params.prompt[:60],
        )
    return table


def job_detail(
    record: JobRecord, position: Position | None = None, *, now: float | None = None
) -> Table:
    """Every field an operator needs about one job (nothing secret: no interaction token)."""
    now = time.time() if now is None else now
    table = Table(show_header=False, title=f"job {record.id}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    r = record
    rows: list[tuple[str, str]] = [
        ("status", _status(r)),
        ("requester", f"{r.requester.platform}:{r.requester.user_id} {r.requester.display_name}"),
        ("server", r.requester.server_id or "-"),
        ("queue", r.queue),
        ("task", r.params.task.value),
        ("prompt", r.params.prompt),
        ("params", r.params.summary()),
        ("cost", f"{r.cost:g} credits"),
        ("attempts", str(r.attempts)),
        ("worker", r.worker_id or "-"),
    ]
    if position is not None:
        place = "running" if position.position == 0 else f"#{position.position} in line"
        rows.append(("position", f"{place}, ETA {age(position.eta_s)}"))
    for status in JobStatus:
        if status in r.times:
            rows.append((f"  {status.value}", f"{age(now - r.times[status])} ago"))
    if r.timings:
        rows.append(("timings", ", ".join(f"{k} {v:.2f}s" for k, v in r.timings.items())))
    if r.result is not None:
        res = r.result
        rows.append(("result", f"{res.mime} {res.width}x{res.height} {res.size} bytes {res.note}"))
    if r.error_code:
        ref = f" (ref {r.error_ref})" if r.error_ref else ""
        rows.append(("error", f"{r.error_code}: {r.error_message}{ref}"))
    if r.note:
        rows.append(("note", r.note))
    if r.posted_at:
        rows.append(("posted", f"{age(now - r.posted_at)} ago, message {r.posted_message_id}"))
    for name, value in rows:
        table.add_row(name, value)
    return table
