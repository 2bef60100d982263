"""Credit budgets per scope: limits, the admission check run inside the submit, settlement.

Scopes, least to most specific: ``default`` → ``PLATFORM`` → ``PLATFORM:server:ID`` →
``discord:role:ID`` → ``PLATFORM:user:ID``. A user's limits are the most specific value of each
key; among a user's roles the most generous wins. A server scope's ``daily`` is the server's
pool, charged alongside the user; its other keys apply to each member. The check itself is a Lua
fragment spliced into the submit script (``RESERVE_LUA``), so deduplication, the global cap and
every budget are decided in one atomic step. The job's record moving to a final status settles
the reservation exactly once (``settle``): delivered or being delivered keeps the charge, a
failure or a cancel refunds it. ``settle_moved`` is the record store's hook that does it, given
to every ``RecordStore`` that changes records.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from reelbot.config import Settings
from reelbot.errors import InvalidOption, QuotaExceeded
from reelbot.governance import audit
from reelbot.jobs import JobStatus, Requester
from reelbot.store import keys
from reelbot.store.records import JobRecord

__all__ = [
    "KEYS",
    "RESERVE_LUA",
    "Limits",
    "QuotaBook",
    "QuotaStatus",
    "parse_scope",
    "parse_value",
    "settle",
    "settle_moved",
    "window",
]

KEYS = ("daily", "concurrent", "cooldown", "queue")
"""The limit keys a scope may set."""
UNLIMITED = ("none", "unlimited", "off", "inf")
INHERIT = ("inherit", "unset", "-")
_Q = f"{keys.PREFIX}quota:"
RESERVATION_TTL_S = 7 * 24 * 3600
"""A reservation outlives any job record that could still settle it."""
_EPS = 1e-6
FAIR_MEMORY_S = 3600
"""How long a server's place in the fair order (and the queue's virtual clock) outlives its
last submit; the clock outlives every server's key, as every submit renews it."""
VIRTUAL_SCORE_END = 10**12
"""Fair-order scores are virtual milliseconds below this (2001 as a wall clock), so they are
always due; arq's retries score by the wall clock and so sort after every waiting job."""
_SCOPE_RE = re.compile(r"^(?:default|[a-z]+|[a-z]+:(?:server|user):[\w.-]+|discord:role:\d+)$")

# Runs inside the submit script after the duplicate and global-cap checks and before any write;
# refuses with {-2, reason, detail} or leaves the queue score to use in ``qscore``.
# KEYS[8] reservation, [9] user's used credits, [10] server's used credits ('' for none),
# [11] user's in-flight jobs, [12] server's in-flight jobs ('' for none), [13] user's last
# submit, [14] the fair-order group's last queue score, [15] the queue, [16] the queue's
# virtual clock (the highest score given).
# ARGV[10] cost, [11] now (s), [12] user daily, [13] server pool, [14] concurrent, [15] queue
# (-1: unlimited), [16] cooldown s, [17] when the usage counters may expire (unix s),
# [18] fair spacing ms, [19] how long the fair-order keys live (ms), [20] the job record key
# prefix, [21] where virtual scores end (real ones, from arq's retries, are wall-clock ms).
RESERVE_LUA = """
local cost = tonumber(ARGV[10])
local now = tonumber(ARGV[11])
local function prune(key)
  -- A job whose settle never ran (its process died) must not hold a slot for ever.
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local raw = redis.call('GET', ARGV[20] .. id)
    local gone = not raw
    if raw then
      local st = cjson.decode(raw)['status']
      gone = st == 'delivered' or st == 'failed' or st == 'cancelled'
    end
    if gone then redis.call('ZREM', key, id) end
  end
  return redis.call('ZCARD', key)
end
local cooldown = tonumber(ARGV[16])
if cooldown > 0 then
  local last = tonumber(redis.call('GET', KEYS[13]) or '')
  if last and now - last < cooldown then
    return {-2, 'cooldown', tostring(cooldown - (now - last))}
  end
end
local concurrent = tonumber(ARGV[14])
if concurrent >= 0 and redis.call('ZCARD', KEYS[11]) >= concurrent then
  local n = prune(KEYS[11])
  if n >= concurrent then return {-2, 'concurrent', tostring(n)} end
end
local qlimit = tonumber(ARGV[15])
if KEYS[12] ~= '' and qlimit >= 0 and redis.call('ZCARD', KEYS[12]) >= qlimit then
  local n = prune(KEYS[12])
  if n >= qlimit then return {-2, 'queue', tostring(n)} end
end
local used = tonumber(redis.call('GET', KEYS[9]) or '0')
local daily = tonumber(ARGV[12])
if daily >= 0 and used + cost > daily + 1e-6 then return {-2, 'daily', tostring(used)} end
local pool = tonumber(ARGV[13])
if KEYS[10] ~= '' then
  local pused = tonumber(redis.call('GET', KEYS[10]) or '0')
  if pool >= 0 and pused + cost > pool + 1e-6 then return {-2, 'pool', tostring(pused)} end
  redis.call('INCRBYFLOAT', KEYS[10], ARGV[10])
  redis.call('EXPIREAT', KEYS[10], ARGV[17])
  redis.call('ZADD', KEYS[12], now, ARGV[7])
end
redis.call('INCRBYFLOAT', KEYS[9], ARGV[10])
redis.call('EXPIREAT', KEYS[9], ARGV[17])
redis.call('ZADD', KEYS[11], now, ARGV[7])
if cooldown > 0 then
  redis.call('SET', KEYS[13], ARGV[11], 'EX', math.ceil(cooldown) + 1)
end
redis.call('HSET', KEYS[8], 'cost', ARGV[10], 'user_used', KEYS[9], 'server_used', KEYS[10],
  'user_jobs', KEYS[11], 'server_jobs', KEYS[12])
redis.call('EXPIRE', KEYS[8], ARGV[5])
-- Fair order, start-time fair queueing in virtual time: a job's queue score is the later of
-- the queue's virtual clock (the score at its head, or the last score given while it was
-- empty) and one spacing after its group's previous job, so a flood from one server
-- interleaves with other servers' first jobs. Virtual scores are far below the wall clock in
-- ms that arq compares them with: every waiting job is due at once and only the order
-- differs; no job ever waits on the clock, however long a server's backlog.
local spacing = tonumber(ARGV[18])
local clock = tonumber(redis.call('GET', KEYS[16]) or '0')
local head = redis.call('ZRANGE', KEYS[15], 0, 0, 'WITHSCORES')
if head[2] and tonumber(head[2]) < tonumber(ARGV[21]) then clock = tonumber(head[2]) end
local qscore = clock
local glast = tonumber(redis.call('GET', KEYS[14]) or '')
if glast and glast + spacing > qscore then qscore = glast + spacing end
redis.call('SET', KEYS[14], tostring(qscore), 'PX', ARGV[19])
local top = tonumber(redis.call('GET', KEYS[16]) or '0')
if qscore > top then top = qscore end
redis.call('SET', KEYS[16], tostring(top), 'PX', ARGV[19])
"""

_SETTLE = """
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return 0 end
local r = {}
for i = 1, #h, 2 do r[h[i]] = h[i + 1] end
if ARGV[2] == 'refund' then
  for _, key in ipairs({r['user_used'], r['server_used']}) do
    -- A counter of a window that has passed is gone; a refund must not recreate it negative.
    if key and key ~= '' and redis.call('EXISTS', key) == 1 then
      redis.call('INCRBYFLOAT', key, '-' .. r['cost'])
    end
  end
end
for _, key in ipairs({r['user_jobs'], r['server_jobs']}) do
  if key and key ~= '' then redis.call('ZREM', key, ARGV[1]) end
end
redis.call('DEL', KEYS[1])
return 1
"""


def limits_key(scope: str) -> str:
    """Hash of the limits a scope sets."""
    return f"{_Q}limits:{scope}"


SCOPES = f"{_Q}scopes"
"""Set of scopes that set any limit."""


def used_key(scope: str, window_id: int) -> str:
    """Credits a user or server used in one daily window."""
    return f"{_Q}used:{scope}:{window_id}"


def jobs_key(scope: str) -> str:
    """Sorted set of a user's or server's jobs in flight."""
    return f"{_Q}jobs:{scope}"


def reservation_key(job_id: str) -> str:
    """What a job's submit charged; deleted when settled, so it settles once."""
    return f"{_Q}reserved:{job_id}"


def last_submit_key(scope: str) -> str:
    """When a user last submitted, for the cooldown."""
    return f"{_Q}last:{scope}"


def fair_key(queue: str, group: str) -> str:
    """The last queue score given to a server's (or a direct user's) job."""
    return f"{_Q}fair:{queue}:{group}"


def fair_clock_key(queue: str) -> str:
    """The highest fair-order score given on a queue: its virtual clock while it is empty."""
    return f"{_Q}fair-clock:{queue}"


def parse_scope(text: str) -> str:
    """A scope as typed, checked; ``InvalidOption`` names the accepted forms."""
    scope = text.strip().lower()
    if not _SCOPE_RE.match(scope):
        raise InvalidOption(
            f"{text!r} is not a scope: use default, PLATFORM, PLATFORM:server:ID, "
            "discord:role:ID or PLATFORM:user:ID",
            option="scope",
        )
    return scope


def parse_value(key: str, text: str) -> float | None:
    """A limit value: a number, ``none`` for unlimited (inf), ``inherit`` for None (unset)."""
    if key not in KEYS:
        raise InvalidOption(f"{key!r} is not a limit: use {', '.join(KEYS)}", option=key)
    word = text.strip().lower()
    if word in INHERIT:
        return None
    if word in UNLIMITED:
        # No cooldown is a cooldown of 0; the others have no upper bound.
        return 0.0 if key == "cooldown" else math.inf
    try:
        value = float(word.rstrip("s")) if key == "cooldown" else float(word)
    except ValueError:
        raise InvalidOption(
            f"{key}={text}: use a number, 'none' (unlimited) or 'inherit'", option=key
        ) from None
    if value < 0 or math.isnan(value):
        raise InvalidOption(f"{key}={text}: must be 0 or more", option=key)
    if key in ("concurrent", "queue") and value != int(value):
        raise InvalidOption(f"{key}={text}: must be a whole number", option=key)
    return value


def window(now: float, reset_hour: int) -> tuple[int, float]:
    """The daily window ``now`` falls in: its number and when it ends (unix seconds)."""
    offset = reset_hour * 3600
    number = math.floor((now - offset) / 86400)
    return number, (number + 1) * 86400 + offset


def credits(value: float) -> str:
    """Credits for people: ``inf`` as unlimited, else at most two decimals."""
    if math.isinf(value):
        return "unlimited"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _until(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def reset_text(reset_at: float, now: float) -> str:
    """``00:00 UTC (in 3 h 12 min)``."""
    clock = datetime.fromtimestamp(reset_at, UTC).strftime("%H:%M")
    return f"{clock} UTC (in {_until(reset_at - now)})"


def user_scope(requester: Requester) -> str:
    """The user's own scope."""
    return f"{requester.platform}:user:{requester.user_id}"


def server_scope(requester: Requester) -> str | None:
    """The server's (guild's or group chat's) scope; None in a direct chat."""
    if requester.server_id is None:
        return None
    return f"{requester.platform}:server:{requester.server_id}"


@dataclass(frozen=True)
class Limits:
    """A user's effective limits; ``inf`` is unlimited."""

    daily: float
    pool: float
    concurrent: float
    cooldown: float
    queue: float


@dataclass(frozen=True)
class QuotaStatus:
    """What ``/quota`` tells a user."""

    limits: Limits
    used: float
    pool_used: float
    in_flight: int
    reset_at: float

    @property
    def remaining(self) -> float:
        """Credits the user can still spend today, the server pool included."""
        mine = max(0.0, self.limits.daily - self.used)
        return min(mine, max(0.0, self.limits.pool - self.pool_used))

    def text(self, now: float) -> str:
        """Remaining credits, jobs in flight and the reset, as a few lines."""
        lines = [
            f"Credits left today: {credits(self.remaining)}"
            + (f" of {credits(self.limits.daily)}" if not math.isinf(self.limits.daily) else "")
            + f" (used {credits(self.used)}).",
        ]
        if not math.isinf(self.limits.pool):
            left = max(0.0, self.limits.pool - self.pool_used)
            lines.append(
                f"This server's pool: {credits(left)} of {credits(self.limits.pool)} left."
            )
        lines.append(f"Jobs in flight: {self.in_flight} of {credits(self.limits.concurrent)}.")
        if self.limits.cooldown > 0:
            lines.append(f"Cooldown between jobs: {credits(self.limits.cooldown)} s.")
        lines.append(f"Resets at {reset_text(self.reset_at, now)}.")
        return "\n".join(lines)


def _fmt(values: dict[str, float]) -> str:
    if not values:
        return "(inherit)"
    return " ".join(f"{k}={credits(v)}" for k, v in sorted(values.items()))


def _lua_limit(value: float) -> str:
    return "-1" if math.isinf(value) else repr(value)


class QuotaBook:
    """Read and change limits, check usage, and build a submit's admission keys."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def defaults(self) -> dict[str, float]:
        """The deployment's built-in limits (from the settings)."""
        s = self.settings
        return {
            "daily": s.quota_daily,
            "concurrent": float(s.quota_concurrent),
            "cooldown": s.quota_cooldown_s,
            "queue": float(s.quota_queue),
        }

    async def get(self, scope: str) -> dict[str, float]:
        """The limits a scope sets itself (not inherited ones)."""
        raw = await self.redis.hgetall(limits_key(scope))  # type: ignore[misc]
        return {k.decode(): float(v) for k, v in raw.items()}

    async def _many(self, scopes: list[str]) -> list[dict[str, float]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hgetall(limits_key(scope))
            raws = await pipe.execute()
        return [{k.decode(): float(v) for k, v in raw.items()} for raw in raws]

    async def limits(self, requester: Requester) -> Limits:
        """The requester's effective limits, most specific scope first."""
        server = server_scope(requester)
        # Role tiers wherever the platform sends role ids (Discord does).
        roles = [f"{requester.platform}:role:{r}" for r in requester.role_ids]
        scopes = ["default", requester.platform, server or "", *roles, user_scope(requester)]
        found = await self._many(scopes)
        base, platform, srv, role_sets, user = found[0], found[1], found[2], found[3:-1], found[-1]
        if server is None:
            srv = {}
        eff = self.defaults()
        for layer in (base, platform):
            eff.update(layer)
        queue_limit = srv.get("queue", eff["queue"])
        eff.update({k: v for k, v in srv.items() if k != "daily"})
        # Several roles: the most generous of those that set a key (a lower cooldown is kinder).
        generous: dict[str, float] = {}
        for layer in role_sets:
            for key, value in layer.items():
                if key not in generous:
                    generous[key] = value
                elif key == "cooldown":
                    generous[key] = min(generous[key], value)
                else:
                    generous[key] = max(generous[key], value)
        eff.update(generous)
        eff.update(user)
        return Limits(
            daily=eff["daily"],
            pool=srv.get("daily", math.inf),
            concurrent=eff["concurrent"],
            cooldown=eff["cooldown"],
            queue=queue_limit,
        )

    async def change(
        self,
        scope: str,
        values: dict[str, float | None],
        *,
        actor: str,
        origin: str = "",
        now: float | None = None,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Set (or with None, unset) keys of a scope; recorded in the audit log."""
        scope = parse_scope(scope)
        before = await self.get(scope)
        sets = {k: repr(v) for k, v in values.items() if v is not None}
        unsets = [k for k, v in values.items() if v is None]
        async with self.redis.pipeline(transaction=True) as pipe:
            if sets:
                pipe.hset(limits_key(scope), mapping=sets)
            if unsets:
                pipe.hdel(limits_key(scope), *unsets)
            pipe.sadd(SCOPES, scope)
            await pipe.execute()
        after = await self.get(scope)
        if not after:
            await self.redis.srem(SCOPES, scope)  # type: ignore[misc]
        await audit.record(
            self.redis, actor, origin, "set", scope, _fmt(before), _fmt(after), now=now
        )
        return before, after

    async def reset_usage(
        self, scope: str, *, actor: str, origin: str = "", now: float | None = None
    ) -> float:
        """Forget a user's or server's use in the current window; returns what it had used."""
        scope = parse_scope(scope)
        at = time.time() if now is None else now
        number, _ = window(at, self.settings.quota_reset_hour)
        used = float(await self.redis.getdel(used_key(scope, number)) or 0)
        await audit.record(
            self.redis, actor, origin, "reset", scope, f"used={credits(used)}", "used=0", now=at
        )
        return used

    async def usage(self, scope: str, *, now: float | None = None) -> dict[str, float]:
        """Credits used in the current window per user or server under ``scope``."""
        scope = parse_scope(scope)
        number, _ = window(time.time() if now is None else now, self.settings.quota_reset_hour)
        if ":user:" in scope or ":server:" in scope:
            raw = await self.redis.get(used_key(scope, number))
            return {scope: float(raw or 0)}
        match = f"{_Q}used:*:{number}" if scope == "default" else f"{_Q}used:{scope}:*:{number}"
        found: dict[str, float] = {}
        async for key in self.redis.scan_iter(match=match, count=500):
            name = key.decode()[len(f"{_Q}used:") : -len(f":{number}")]
            found[name] = float(await self.redis.get(key) or 0)
        return dict(sorted(found.items()))

    async def status(self, requester: Requester, *, now: float | None = None) -> QuotaStatus:
        """The requester's budget right now."""
        at = time.time() if now is None else now
        number, end = window(at, self.settings.quota_reset_hour)
        limits = await self.limits(requester)
        server = server_scope(requester)
        user = user_scope(requester)
        used = float(await self.redis.get(used_key(user, number)) or 0)
        pool_used = float(await self.redis.get(used_key(server, number)) or 0) if server else 0.0
        in_flight = int(await self.redis.zcard(jobs_key(user)))
        return QuotaStatus(limits, used, pool_used, in_flight, end)

    async def admission(
        self, requester: Requester, *, job_id: str, queue: str, cost: float, now: float
    ) -> tuple[list[str], list[str], Limits]:
        """The keys and arguments ``RESERVE_LUA`` needs for one submit (KEYS[8:], ARGV[10:])."""
        limits = await self.limits(requester)
        number, end = window(now, self.settings.quota_reset_hour)
        user = user_scope(requester)
        server = server_scope(requester)
        group = server or user
        lua_keys = [
            reservation_key(job_id),
            used_key(user, number),
            used_key(server, number) if server else "",
            jobs_key(user),
            jobs_key(server) if server else "",
            last_submit_key(user),
            fair_key(queue, group),
            queue,
            fair_clock_key(queue),
        ]
        args = [
            repr(cost),
            repr(now),
            _lua_limit(limits.daily),
            _lua_limit(limits.pool),
            _lua_limit(limits.concurrent),
            _lua_limit(limits.queue),
            repr(limits.cooldown),
            # Kept a day past the window, so ``quota usage`` can still answer for yesterday.
            str(int(end) + 86400),
            str(int(self.settings.fair_spacing_s * 1000)),
            str(int(FAIR_MEMORY_S * 1000)),
            keys.record(""),
            str(VIRTUAL_SCORE_END),
        ]
        return lua_keys, args, limits

    def refusal(
        self, reason: str, detail: float, limits: Limits, *, cost: float, now: float
    ) -> QuotaExceeded:
        """The error for a refused submit, with what is left and when it resets."""
        _, end = window(now, self.settings.quota_reset_hour)
        resets = f"Credits reset at {reset_text(end, now)}."
        if reason == "daily":
            left = max(0.0, limits.daily - detail)
            return QuotaExceeded(
                f"Not enough credits: you have {credits(left)} of {credits(limits.daily)} "
                f"left today and this job costs {credits(cost)}. {resets}",
                retry_after=end - now,
            )
        if reason == "pool":
            left = max(0.0, limits.pool - detail)
            return QuotaExceeded(
                f"This server's credits are spent: {credits(left)} of "
                f"{credits(limits.pool)} left today and this job costs {credits(cost)}. {resets}",
                retry_after=end - now,
            )
        if reason == "cooldown":
            return QuotaExceeded(
                f"Please wait {math.ceil(detail)} s more: jobs need "
                f"{credits(limits.cooldown)} s between them here.",
                retry_after=detail,
            )
        if reason == "concurrent":
            return QuotaExceeded(
                f"You already have {int(detail)} jobs queued or running, the most allowed "
                "at once. Submit again when one has finished."
            )
        return QuotaExceeded(
            f"This server already has {int(detail)} jobs queued or running, the most it may "
            "have. Submit again when some have finished."
        )


async def settle(redis: Redis, job_id: str, *, refund: bool) -> bool:
    """Close a job's reservation once: keep the charge or refund it; False if already settled."""
    done = await redis.eval(  # type: ignore[misc]
        _SETTLE, 1, reservation_key(job_id), job_id, "refund" if refund else "commit"
    )
    return bool(done)


_REFUNDED = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
# A result that reached delivery has used the GPU, so a failed post keeps the charge.
_KEPT = frozenset({JobStatus.DELIVERING, JobStatus.DELIVERED})


async def settle_moved(redis: Redis, before: JobRecord, after: JobRecord) -> None:
    """The ``RecordStore`` hook: a job reaching delivery or a final status settles its quota."""
    if after.status in _REFUNDED | _KEPT:
        # Every path to a final status comes through a record store; the reservation's own
        # marker makes a second settle (a re-delivery, a late cancel) a no-op.
        await settle(redis, after.id, refund=after.status in _REFUNDED)
