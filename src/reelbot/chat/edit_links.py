"""Edit region: a result's region repainted from a mask, and the signed link that takes a Discord
or Telegram user to the web mask editor for it.

The web chat's own editor sends its mask with the press (``edit_region``). Elsewhere the press
answers, privately, with ``{REELBOT_PUBLIC_URL}/edit?t=TOKEN``: TOKEN is a ``Grant`` (the
platform, the job, the presser's quota fields, where to post the result, its expiry) as
base64url JSON, a dot, and its HMAC-SHA256 under a key every process shares
(``REELBOT_EDIT_LINK_KEY``, else 32 random bytes made once in Redis). The first browser that
opens a link claims it (a secret in a cookie, kept in Redis until the link expires); any other
browser is refused. The job it makes is the presser's, on their quota, posted back in the chat
the result came from by that platform's own process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import time

from arq.connections import ArqRedis
from pydantic import BaseModel, ConfigDict, ValidationError

from reelbot.catalog import Task
from reelbot.chat.history import History
from reelbot.chat.service import ChatService, Context, Ticket, reachable
from reelbot.config import Settings
from reelbot.errors import JobNotFound, LinkRefused, UserError
from reelbot.jobs import ReplyAddress, parse_prompt
from reelbot.masks import load_mask
from reelbot.store import keys
from reelbot.store.records import JobRecord, ResultInfo

__all__ = [
    "LINK_TTL_S",
    "EditLinks",
    "Grant",
    "claim",
    "edit_region",
    "read_grant",
    "sign",
    "signing_key",
    "verify",
]

LINK_TTL_S = 15 * 60.0
"""How long a link opens: time to paint a mask, short enough that a forwarded link dies soon (a
constant, like Discord's own 15-minute interaction tokens)."""
MAX_TOKEN_CHARS = 4096
"""Longer than any grant we sign (a member with many roles): anything longer is refused unread."""
CLAIM_MARGIN_S = 60
EXPIRED = "This link has expired; press Edit region again."
INVALID = "This link is not valid; press Edit region again to get a new one."
CLAIMED = "This link was opened by someone else; press Edit region yourself."
UNOPENED = "Open the link itself in your browser first (it works in one browser only)."
NO_LINKS = (
    "Edit region needs the web editor, and this server has none (REELBOT_PUBLIC_URL is unset)."
)
_B64 = re.compile(r"[A-Za-z0-9_-]{1,4096}")


class Grant(BaseModel):
    """What a link lets its holder do: edit one job's image as one person, until ``expires_at``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    platform: str
    job_id: str
    user_id: str
    server_id: str | None = None
    role_ids: tuple[str, ...] = ()
    display_name: str = ""
    reply: ReplyAddress
    """Where the result goes: the chat of the pressed result (no interaction token)."""
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def sign(key: bytes, grant: Grant) -> str:
    """The token of ``grant``: base64url(JSON) "." base64url(HMAC-SHA256)."""
    payload = grant.model_dump_json(exclude_defaults=True).encode()
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: str, *, now: float | None = None) -> Grant:
    """The grant a token carries, or ``LinkRefused``: forged, mangled or expired."""
    parts = token.split(".") if len(token) <= MAX_TOKEN_CHARS else []
    try:
        payload, mac = _unb64(parts[0]), _unb64(parts[1])
        if len(parts) != 2 or not hmac.compare_digest(mac, _mac(key, payload)):
            raise ValueError("bad signature")
        grant = Grant.model_validate_json(payload)
    except (IndexError, ValueError, binascii.Error, ValidationError) as exc:
        raise LinkRefused(INVALID, reason="invalid") from exc
    if grant.expires_at <= (time.time() if now is None else now):
        raise LinkRefused(EXPIRED, reason="expired")
    return grant


async def signing_key(redis: ArqRedis, settings: Settings) -> bytes:
    """The key links are signed with: ``REELBOT_EDIT_LINK_KEY``, else the one made once in Redis
    (SET NX, so every process reads the same without being configured)."""
    if settings.edit_link_key is not None:
        return settings.edit_link_key.get_secret_value().encode()
    async with reachable():
        await redis.set(keys.EDIT_LINK_KEY, secrets.token_hex(32), nx=True)
        stored = await redis.get(keys.EDIT_LINK_KEY)
    return bytes.fromhex(stored.decode() if isinstance(stored, bytes) else str(stored))


async def read_grant(redis: ArqRedis, settings: Settings, token: str) -> Grant:
    """The grant of a link, or ``LinkRefused`` (forged, mangled, expired)."""
    return verify(await signing_key(redis, settings), token)


async def claim(redis: ArqRedis, grant: Grant, browser: str | None, *, first: bool = True) -> str:
    """Bind a link to one browser: ``browser`` is its secret from an earlier open (its cookie),
    if any. ``first``: a link nobody opened yet is claimed with a new secret (the page's open);
    else it must be this browser's already (its image, its submit). Refused in words."""
    fresh = secrets.token_urlsafe(24)
    ttl = max(1, math.ceil(grant.expires_at - time.time()) + CLAIM_MARGIN_S)
    key = keys.edit_link_claim(grant.id)
    async with reachable():
        if first and await redis.set(key, fresh, nx=True, ex=ttl):
            return fresh
        held = await redis.get(key)
    held_text = held.decode() if isinstance(held, bytes) else str(held or "")
    if browser and held_text and hmac.compare_digest(held_text, browser):
        return browser
    if not held_text:
        raise LinkRefused(UNOPENED, reason="unopened")
    raise LinkRefused(CLAIMED, reason="claimed")


def _reply_of(record: JobRecord, ctx: Context) -> ReplyAddress:
    """Where a region edit of ``record`` pressed in ``ctx`` is posted: the chat of the pressed
    result, as a new message (no interaction token, no status message to edit)."""
    old = record.request.reply
    if ctx.channel_id is not None and ctx.channel_id != old.channel_id:  # a repost elsewhere
        return ReplyAddress(platform=old.platform, channel_id=ctx.channel_id, extra=old.extra)
    return ReplyAddress(
        platform=old.platform,
        channel_id=old.channel_id,
        thread_id=old.thread_id,
        nsfw_channel=old.nsfw_channel,
        extra=old.extra,
    )


def _source(record: JobRecord, index: int | None = None) -> ResultInfo:
    """The image a region edit starts from: the result, or image ``index`` of a grid."""
    info = record.result
    if info is None or not info.mime.startswith("image/") or record.params.task.is_video:
        raise JobNotFound("That job has no image to edit.")
    if index is not None and info.tiles:
        if not 0 <= index < len(info.tiles):
            raise JobNotFound(f"That grid has no image {index + 1}.")
        return info.tiles[index]
    return info


async def edit_region(
    service: ChatService,
    ctx: Context,
    record: JobRecord,
    prompt: str,
    mask: bytes,
    *,
    reply: ReplyAddress,
    source_id: str,
    index: int | None = None,
) -> Ticket:
    """Repaint the white part of ``mask`` on ``record``'s stored image (an /inpaint of the
    presser's own); an empty prompt keeps the result's. The mask is checked as any mask is
    (decoded with the input images' limits, all black or all white refused) before queueing."""
    info = _source(record, index)
    await asyncio.to_thread(load_mask, mask, (info.width, info.height))
    async with reachable():
        image = await service.results.get(info.ref)
    if image is None:
        raise JobNotFound("That result has expired; run the command again.")
    text = prompt.strip() or parse_prompt(record.request.text)[0]
    return await service.generate(
        ctx, Task.REMIX, text, image=image, mask=mask, reply=reply, source_id=source_id
    )


class EditLinks:
    """Edit region links over one platform's ``ChatService``: made by a press, opened and used
    by the web editor (with a service for the grant's platform)."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    async def mint(self, ctx: Context, job_id: str, *, now: float | None = None) -> str:
        """A link to edit ``job_id``'s image as the presser; refused where there is no editor
        or no image the presser may see here (Info's rule)."""
        base = self.service.settings.public_url
        if base is None:
            raise UserError(NO_LINKS)
        record = await History(self.service).job(ctx, job_id, posted_here=True)
        _source(record)
        who = ctx.requester
        grant = Grant(
            id=secrets.token_urlsafe(12),
            platform=self.service.platform,
            job_id=record.id,
            user_id=who.user_id,
            server_id=who.server_id,
            role_ids=who.role_ids,
            display_name=who.display_name,
            reply=_reply_of(record, ctx),
            expires_at=(time.time() if now is None else now) + LINK_TTL_S,
        )
        key = await signing_key(self.service.redis, self.service.settings)
        return f"{base}/edit?t={sign(key, grant)}"

    async def offer(self, ctx: Context, job_id: str) -> str:
        """The private answer to an Edit region press: the link and how long it works."""
        link = await self.mint(ctx, job_id)
        return (
            f"Edit region: paint what to change and say what goes there: {link}\n"
            f"The link works for {round(LINK_TTL_S / 60)} minutes, for you only; the result "
            "is posted in the chat you pressed it in."
        )

    def context(self, grant: Grant) -> Context:
        """The presser, as the grant's platform knows them (owners recomputed here)."""
        who = self.service.requester(
            grant.user_id,
            server_id=grant.server_id,
            display_name=grant.display_name,
            role_ids=grant.role_ids,
        )
        return Context(who, grant.reply.channel_id)

    async def record(self, grant: Grant) -> JobRecord:
        """The job a grant edits (its record lives longer than the link)."""
        async with reachable():
            record = await self.service.queue.records.get(grant.job_id)
        if record is None or record.platform != grant.platform:
            raise JobNotFound("That job is too old to edit; run the command again.")
        return record

    async def source(self, grant: Grant) -> tuple[bytes, str]:
        """The image the editor paints over, from the store."""
        info = _source(await self.record(grant))
        async with reachable():
            data = await self.service.results.get(info.ref)
        if data is None:
            raise JobNotFound("That result has expired; run the command again.")
        return data, info.mime

    async def submit(self, grant: Grant, prompt: str, mask: bytes, *, request_id: str) -> Ticket:
        """The region edit a link's page sends: queued as the grant's person, posted back in the
        grant's chat. ``request_id`` (the page's, per submit) makes a retried POST one job."""
        record = await self.record(grant)
        source_id = f"edit:{grant.id}:{request_id}"
        return await edit_region(
            self.service,
            self.context(grant),
            record,
            prompt,
            mask,
            reply=grant.reply,
            source_id=source_id,
        )
