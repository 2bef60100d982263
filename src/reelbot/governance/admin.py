"""The ``/admin quota …`` and ``/admin audit`` words, shared by every chat adapter.

A chat admin (Discord Manage Server, a Telegram group administrator) manages their own server
and, on Discord, roles; the deployment's owners (``REELBOT_OWNER_IDS``) manage every scope.
User scopes reach across servers, so only owners change them.
"""

from __future__ import annotations

import re
import time

from reelbot.errors import InvalidOption, NotAllowed
from reelbot.governance import audit
from reelbot.governance.actor import Admin
from reelbot.governance.policy import PolicyStore, run_policy
from reelbot.governance.quotas import KEYS, QuotaBook, credits, parse_scope, parse_value
from reelbot.jobs import Requester
from reelbot.store.leases import live_workers

__all__ = ["ADMIN_HELP", "Admin", "parse_assignments", "run_admin", "scope_of"]

ADMIN_HELP = (
    "/admin status · /admin quota show [SCOPE] · /admin quota set SCOPE KEY=VALUE… · "
    "/admin quota reset SCOPE · /admin quota usage [SCOPE] · /admin audit [N]\n"
    "SCOPE: server (this one), role:ID, user:ID, or a full scope such as discord:server:ID. "
    "KEY: daily (credits a day; on a server, the server's shared pool), concurrent, "
    "cooldown (s), queue. VALUE: a number, none (unlimited) or inherit.\n"
    "/admin policy … (content policy of this server; /admin policy help)\n"
    "/admin count 1-4|inherit (images per image command here without --n; 2-4 make a grid)"
)
_MENTION = re.compile(r"^<@(&?)!?(\d+)>$")


def scope_of(word: str, requester: Requester) -> str:
    """A scope as typed in chat: ``server``, ``role:ID``, ``user:ID``, a mention, or in full."""
    platform = requester.platform
    lowered = word.strip().lower()
    if lowered in ("server", "here"):
        if requester.server_id is None:
            raise InvalidOption(
                "'server' means the server you type in; use it there.", option="scope"
            )
        return f"{platform}:server:{requester.server_id}"
    mention = _MENTION.match(lowered)
    if mention:
        kind = "role" if mention.group(1) else "user"
        return parse_scope(f"{platform}:{kind}:{mention.group(2)}")
    if lowered.startswith(("role:", "user:")):
        return parse_scope(f"{platform}:{lowered}")
    return parse_scope(lowered)


def parse_assignments(words: list[str]) -> dict[str, float | None]:
    """``daily=50 cooldown=30`` as limits; ``InvalidOption`` for a bad word."""
    if not words:
        raise InvalidOption(f"Name at least one KEY=VALUE ({', '.join(KEYS)}).", option="key")
    out: dict[str, float | None] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise InvalidOption(f"{word!r} is not KEY=VALUE.", option=word)
        out[key.strip().lower()] = parse_value(key.strip().lower(), value)
    return out


def _may_change(admin: Admin, scope: str) -> None:
    if admin.owner:
        return
    r = admin.requester
    if scope == f"{r.platform}:server:{r.server_id}" and r.server_id is not None:
        return
    if scope.startswith(f"{r.platform}:role:") and r.server_id is not None:
        return
    raise NotAllowed(
        f"Server admins manage their own server (and its roles); {scope} is the owners' to change."
    )


async def _status(book: QuotaBook, admin: Admin, now: float) -> str:
    """Queue depth, live workers and today's use of the caller's server (every server: owners)."""
    settings = book.settings
    lines = []
    for name in (settings.image_queue, settings.video_queue):
        lines.append(f"waiting {name}: {await book.redis.zcard(name)}")
    lines.append(f"workers: {len(await live_workers(book.redis))}")
    r = admin.requester
    scope = r.platform if admin.owner or r.server_id is None else admin.origin
    used = await book.usage(scope, now=now)
    servers = {k: v for k, v in used.items() if ":server:" in k}
    lines += [f"credits today {k}: {credits(v)}" for k, v in servers.items()]
    return "\n".join(lines)


def _values(values: dict[str, float]) -> str:
    if not values:
        return "nothing set (inherits)"
    return ", ".join(f"{k}={credits(v)}" for k, v in sorted(values.items()))


async def run_admin(book: QuotaBook, admin: Admin, text: str, *, now: float | None = None) -> str:
    """Run one admin command's words (after ``/admin``) and say what happened."""
    at = time.time() if now is None else now
    words = text.split()
    if not words or words[0] in ("help", "?"):
        return ADMIN_HELP
    if words[0] == "status":
        return await _status(book, admin, at)
    if words[0] == "audit":
        limit = int(words[1]) if len(words) > 1 and words[1].isdigit() else 10
        origin = None if admin.owner else admin.origin
        entries = await audit.entries(book.redis, limit=min(limit, 50), origin=origin)
        return "\n".join(e.line() for e in entries) or "No changes recorded yet."
    if words[0] == "policy":
        return await run_policy(PolicyStore(book.redis, book.settings), admin, words[1:], now=at)
    if words[0] == "count":  # a server setting kept with its policy: /admin count 4
        store = PolicyStore(book.redis, book.settings)
        return await run_policy(store, admin, words if len(words) > 1 else ["show"], now=at)
    if words[0] != "quota" or len(words) < 2:
        raise InvalidOption(f"Unknown admin command. {ADMIN_HELP}", option="command")
    action, rest = words[1], words[2:]
    default_scope = "server" if admin.requester.server_id else f"user:{admin.requester.user_id}"
    if action == "show":
        scope = scope_of(rest[0] if rest else default_scope, admin.requester)
        return f"{scope}: {_values(await book.get(scope))}"
    if action == "usage":
        scope = scope_of(rest[0] if rest else default_scope, admin.requester)
        found = await book.usage(scope, now=at)
        lines = [f"{name}: {credits(value)} credits today" for name, value in found.items()]
        return "\n".join(lines) or f"{scope}: nothing used today."
    if not rest:
        raise InvalidOption(f"/admin quota {action} needs a SCOPE. {ADMIN_HELP}", option="scope")
    scope = scope_of(rest[0], admin.requester)
    _may_change(admin, scope)
    if action == "set":
        values = parse_assignments(rest[1:])
        before, after = await book.change(
            scope, values, actor=admin.actor, origin=admin.origin, now=at
        )
        return f"{scope}: {_values(before)} → {_values(after)}."
    if action == "reset":
        used = await book.reset_usage(scope, actor=admin.actor, origin=admin.origin, now=at)
        return f"{scope}: today's use ({credits(used)} credits) reset to 0."
    raise InvalidOption(f"Unknown quota action {action!r}. {ADMIN_HELP}", option="action")
