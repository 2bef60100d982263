"""The audit log of quota changes: a capped Redis stream of who changed what, from where, when."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from reelbot.store import keys

__all__ = ["AUDIT", "AuditEntry", "entries", "record"]

AUDIT = f"{keys.PREFIX}quota:audit"
"""Stream of every change an admin or operator made."""
AUDIT_LIMIT = 10_000


@dataclass(frozen=True)
class AuditEntry:
    """One recorded change: who, from where, what, before, after, when."""

    at: float
    actor: str
    origin: str
    action: str
    scope: str
    before: str
    after: str

    def line(self) -> str:
        """One line for chat and the command line."""
        when = datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M")
        where = f" (from {self.origin})" if self.origin else ""
        return (
            f"{when} UTC {self.actor}{where} {self.action} {self.scope}: "
            f"{self.before} → {self.after}"
        )


async def record(
    redis: Redis,
    actor: str,
    origin: str,
    action: str,
    scope: str,
    before: str,
    after: str,
    *,
    now: float | None = None,
) -> None:
    """Add an entry to the audit log."""
    at = time.time() if now is None else now
    entry: dict[str, str] = {
        "at": repr(at),
        "actor": actor,
        "origin": origin,
        "action": action,
        "scope": scope,
        "before": before,
        "after": after,
    }
    await redis.xadd(AUDIT, entry, maxlen=AUDIT_LIMIT, approximate=True)  # type: ignore[arg-type]


async def entries(
    redis: Redis, *, limit: int = 20, scope: str | None = None, origin: str | None = None
) -> list[AuditEntry]:
    """The newest entries first; ``scope`` or ``origin`` keep those about or from one place."""
    out: list[AuditEntry] = []
    for _, fields in await redis.xrevrange(AUDIT, count=AUDIT_LIMIT):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        if scope is not None and not f["scope"].startswith(scope):
            continue
        if origin is not None and f["origin"] != origin and f["scope"] != origin:
            continue
        out.append(
            AuditEntry(
                float(f["at"]),
                f["actor"],
                f["origin"],
                f["action"],
                f["scope"],
                f["before"],
                f["after"],
            )
        )
        if len(out) >= limit:
            break
    return out
