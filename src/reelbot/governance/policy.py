"""Each server's content policy in Redis, the prompt check at submit, and ``/admin policy``.

The deployment's words, patterns and modes come from the settings; a server adds words and
patterns of its own and may change its modes and threshold. Every change, every refused
prompt and every withheld result goes to the audit log (``/admin audit``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from reelbot.config import Settings
from reelbot.content import Blocklist, OutputMode, ServerPolicy, check_pattern
from reelbot.errors import ContentRefused, InvalidOption, NotAllowed
from reelbot.governance import audit
from reelbot.governance.actor import Admin
from reelbot.jobs import Requester
from reelbot.store import keys

log = logging.getLogger(__name__)

__all__ = [
    "POLICY_HELP",
    "OutputRules",
    "PolicyStore",
    "apply",
    "edit",
    "policy_key",
    "run_policy",
    "server_scope",
]

POLICY_HELP = (
    "/admin policy show · /admin policy mode block|spoiler|allow|inherit · "
    "/admin policy nsfw-mode block|spoiler|allow|inherit · /admin policy threshold 0-1|inherit · "
    "/admin policy block WORD… · /admin policy unblock WORD… · /admin policy pattern REGEX · "
    "/admin policy unpattern REGEX · /admin policy words · /admin count 1-4|inherit\n"
    "mode: what happens to a flagged result (block: withheld and refunded; spoiler: posted "
    "behind a spoiler; allow); nsfw-mode: the same in channels marked NSFW; count: images per "
    "image command without --n (2-4 make a grid)."
)
_PROMPT_IN_AUDIT = 200


def _usable(patterns: Iterable[str], scope: str) -> list[str]:
    """The patterns RE2 can run; one stored before patterns moved to RE2 is skipped, and logged."""
    out = []
    for pattern in patterns:
        try:
            check_pattern(pattern)
        except ValueError as exc:
            log.warning("%s: pattern skipped (remove it: /admin policy unpattern): %s", scope, exc)
            continue
        out.append(pattern)
    return out


def policy_key(scope: str) -> str:
    """A server's own rules (JSON)."""
    return f"{keys.PREFIX}policy:{scope}"


def server_scope(requester: Requester) -> str:
    """The scope a request's rules live under: its server, or the platform's direct chats."""
    if requester.server_id is None:
        return f"{requester.platform}:direct"
    return f"{requester.platform}:server:{requester.server_id}"


@dataclass(frozen=True)
class OutputRules:
    """What the worker needs to decide on a result."""

    threshold: float
    mode: OutputMode
    nsfw_mode: OutputMode


class PolicyStore:
    """Read and change server policies; check prompts against them."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.deployment = Blocklist.build(settings.blocked_words, settings.blocked_patterns)

    async def get(self, scope: str) -> ServerPolicy:
        """A server's own rules (empty when none are set)."""
        raw = await self.redis.get(policy_key(scope))
        return ServerPolicy() if raw is None else ServerPolicy.model_validate_json(raw)

    async def for_requester(self, requester: Requester) -> ServerPolicy:
        """The rules of the server (or direct chats) a request came from."""
        return await self.get(server_scope(requester))

    async def output_rules(self, requester: Requester) -> OutputRules:
        """The threshold and modes that apply to a result for this requester."""
        return await self.rules(await self.for_requester(requester))

    async def rules(self, own: ServerPolicy) -> OutputRules:
        """A server's own rules over the deployment's."""
        s = self.settings
        return OutputRules(
            threshold=s.nsfw_threshold if own.threshold is None else own.threshold,
            mode=own.mode or s.output_policy,
            nsfw_mode=own.nsfw_mode or s.nsfw_channel_policy,
        )

    async def check_prompt(
        self, requester: Requester, prompt: str, *, job_id: str, now: float | None = None
    ) -> None:
        """Raise ``ContentRefused`` when the prompt hits a word or pattern; log it for admins."""
        hit = self.deployment.match(prompt)
        scope = server_scope(requester)
        if hit is None:
            own = await self.get(scope)
            if own.words or own.patterns:
                hit = Blocklist.build(own.words, _usable(own.patterns, scope)).match(prompt)
        if hit is None:
            return
        origin = scope
        name = f" ({requester.display_name})" if requester.display_name else ""
        await audit.record(
            self.redis,
            f"{requester.platform}:user:{requester.user_id}{name}",
            origin,
            "prompt refused",
            origin,
            prompt[:_PROMPT_IN_AUDIT],
            f"matched {hit} (job {job_id})",
            now=now,
        )
        raise ContentRefused()

    async def withheld(
        self,
        requester: Requester,
        *,
        job_id: str,
        prompt: str,
        model: str,
        score: float | None,
        now: float | None = None,
    ) -> None:
        """Log a result the classifier flagged and the policy withheld, for the server's admins."""
        scope = server_scope(requester)
        name = f" ({requester.display_name})" if requester.display_name else ""
        # An unscored result is never flagged, so None only reads well, it is not expected.
        said = "unscored" if score is None else f"nsfw score {score:.3f}"
        await audit.record(
            self.redis,
            f"{requester.platform}:user:{requester.user_id}{name}",
            scope,
            "result withheld",
            scope,
            prompt[:_PROMPT_IN_AUDIT],
            f"{said} on {model} (job {job_id})",
            now=now,
        )

    async def change(
        self,
        scope: str,
        policy: ServerPolicy,
        *,
        actor: str,
        origin: str,
        action: str,
        now: float | None = None,
    ) -> tuple[ServerPolicy, ServerPolicy]:
        """Store a server's new rules and audit the change; returns (before, after)."""
        before = await self.get(scope)
        await self.redis.set(policy_key(scope), policy.model_dump_json())
        await audit.record(
            self.redis,
            actor,
            origin,
            action,
            scope,
            before.describe(),
            policy.describe(),
            now=now,
        )
        return before, policy


def _mode(word: str) -> OutputMode | None:
    if word == "inherit":
        return None
    try:
        return OutputMode(word)
    except ValueError:
        raise InvalidOption(
            f"{word!r} is not a mode: use block, spoiler, allow or inherit.", option="mode"
        ) from None


def _threshold(word: str) -> float | None:
    if word == "inherit":
        return None
    try:
        value = float(word)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise InvalidOption(f"{word!r} is not a threshold from 0 to 1.", option="threshold")
    return value


def _count(word: str) -> int | None:
    if word == "inherit":
        return None
    if word not in ("1", "2", "3", "4"):
        raise InvalidOption(f"{word!r} is not a count: use 1 to 4 or inherit.", option="count")
    return int(word)


def edit(policy: ServerPolicy, action: str, args: list[str]) -> ServerPolicy:
    """The policy after one ``/admin policy`` action; ``InvalidOption`` for bad words."""
    if action in ("mode", "nsfw-mode", "threshold", "count") and len(args) != 1:
        raise InvalidOption(f"/admin policy {action} takes one value. {POLICY_HELP}", option=action)
    if action in ("block", "unblock", "pattern", "unpattern") and not args:
        raise InvalidOption(f"/admin policy {action} needs a value. {POLICY_HELP}", option=action)
    if action == "mode":
        return policy.model_copy(update={"mode": _mode(args[0].lower())})
    if action == "nsfw-mode":
        return policy.model_copy(update={"nsfw_mode": _mode(args[0].lower())})
    if action == "threshold":
        return policy.model_copy(update={"threshold": _threshold(args[0].lower())})
    if action == "count":
        return policy.model_copy(update={"count": _count(args[0].lower())})
    if action == "block":
        words = tuple(dict.fromkeys([*policy.words, " ".join(args).strip().lower()]))
        return policy.model_copy(update={"words": words})
    if action == "unblock":
        gone = " ".join(args).strip().lower()
        if gone not in policy.words:
            raise InvalidOption(f"{gone!r} is not on this server's list.", option="word")
        return policy.model_copy(update={"words": tuple(w for w in policy.words if w != gone)})
    pattern = " ".join(args)
    if action == "pattern":
        try:
            check_pattern(pattern)
        except ValueError as exc:
            raise InvalidOption(str(exc), option="pattern") from None
        return policy.model_copy(update={"patterns": (*policy.patterns, pattern)})
    if action == "unpattern":
        if pattern not in policy.patterns:
            raise InvalidOption(f"{pattern!r} is not on this server's list.", option="pattern")
        patterns = tuple(p for p in policy.patterns if p != pattern)
        return policy.model_copy(update={"patterns": patterns})
    raise InvalidOption(f"Unknown policy action {action!r}. {POLICY_HELP}", option="action")


async def run_policy(
    store: PolicyStore, admin: Admin, words: list[str], *, now: float | None = None
) -> str:
    """Run ``/admin policy …`` (the words after ``policy``) for the server it is typed in.

    In a direct chat (and the web chat) it is the platform's direct-chat policy, owners only.
    """
    scope = server_scope(admin.requester)
    if admin.requester.server_id is None and not admin.owner:
        raise NotAllowed(f"{scope} (direct chats) is the deployment owners' to change.")
    return await apply(store, scope, words, actor=admin.actor, origin=admin.origin, now=now)


async def apply(
    store: PolicyStore,
    scope: str,
    words: list[str],
    *,
    actor: str,
    origin: str,
    now: float | None = None,
) -> str:
    """Show or change one scope's policy (chat and CLI share it); says what happened."""
    action = words[0].lower() if words else "show"
    if action in ("help", "?"):
        return POLICY_HELP
    current = await store.get(scope)
    if action == "show":
        rules = await store.rules(current)
        return (
            f"{scope}: {current.describe()}\n"
            f"in effect: mode={rules.mode} nsfw-mode={rules.nsfw_mode} "
            f"threshold={rules.threshold:g}"
        )
    if action == "words":
        listed = [*current.words, *(f"/{p}/" for p in current.patterns)]
        return f"{scope}: " + (", ".join(listed) or "no words or patterns of its own")
    changed = edit(current, action, words[1:])
    at = time.time() if now is None else now
    before, after = await store.change(
        scope, changed, actor=actor, origin=origin, action=f"policy {action}", now=at
    )
    return f"{scope}: {before.describe()} → {after.describe()}."
