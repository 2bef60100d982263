"""Who runs an admin command: the caller of ``/admin`` words, and the audit log's who and where.

A leaf of ``governance``: ``admin`` (quotas) and ``policy`` (content policy) both take an
``Admin`` without importing each other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from reelbot.jobs import Requester

__all__ = ["Admin"]


@dataclass(frozen=True)
class Admin:
    """Who runs an admin command, and whether they own the deployment."""

    requester: Requester
    owner: bool

    @property
    def actor(self) -> str:
        """The audit log's "who"."""
        r = self.requester
        name = f" ({r.display_name})" if r.display_name else ""
        return f"{r.platform}:user:{r.user_id}{name}"

    @property
    def origin(self) -> str:
        """The audit log's "where": the server the command came from."""
        r = self.requester
        return f"{r.platform}:server:{r.server_id}" if r.server_id else f"{r.platform}:direct"
