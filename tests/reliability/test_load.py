"""Load: many simulated users on the Discord and Telegram emulators at once, two workers.

Every admitted job is delivered exactly once, every refusal is explained to the user, the
acknowledgements stay within the platform deadlines throughout and memory stays bounded.
``REELBOT_LOAD_USERS`` sets the number of users (40 here; the soak run uses 1000) and
``REELBOT_LOAD_SPREAD_S`` the time over which they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from reelbot.catalog import Catalog
from reliability.stacks import DiscordEmulator, Interaction, TelegramEmulator, User, both_platforms

USERS = int(os.environ.get("REELBOT_LOAD_USERS", "40"))
SPREAD_S = float(os.environ.get("REELBOT_LOAD_SPREAD_S", str(max(4.0, USERS * 0.12))))
REFUSE_EVERY = 8
"""Every 8th user sends a command that must be refused (an unknown aspect ratio)."""
DISCORD_ACK_S = 3.0
TELEGRAM_STATUS_S = 1.0
RSS_GROWTH_MB = 400.0
LOAD_SET = "REELBOT_LOAD_USERS" in os.environ
RESULTS = Path(
    os.environ.get("REELBOT_LOAD_REPORT")
    or (
        Path(__file__).resolve().parents[2] / "bench" / "results" / "load.json"
        if LOAD_SET
        else Path(tempfile.gettempdir()) / "reelbot-load.json"
    )
)
"""Where the figures go: bench/results/load.json when the size is set (the soak run)."""

pytestmark = pytest.mark.timeout(max(120, int(SPREAD_S + USERS * 3)))


def rss_mb() -> float:
    """This process's resident set (the adapters and workers run in it)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Replies = dict[tuple[int, int], list[dict[str, Any]]]


def tg_index(emu: TelegramEmulator) -> Replies:
    """The bot's messages by (chat, message replied to), in one pass over the emulator."""
    index: Replies = {}
    bot_id = emu.bot["id"]
    for (chat_id, _), message in sorted(emu.messages.items()):
        replied = message.get("reply_to_message", {}).get("message_id")
        if replied is not None and message["from"].get("id") == bot_id:
            index.setdefault((chat_id, replied), []).append(message)
    return index


def tg_replies(index: Replies, update: dict[str, Any]) -> list[dict[str, Any]]:
    message = update["message"]
    return index.get((message["chat"]["id"], message["message_id"]), [])


def tg_results(index: Replies, update: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in tg_replies(index, update) if {"photo", "document"} & m.keys()]


def prompt_for(i: int) -> str:
    if i % REFUSE_EVERY == REFUSE_EVERY - 1:
        return f"user {i} fox --ar 99:banana"
    return f"user {i} fox --seed {i}"


async def test_many_users_on_both_platforms(
    tmp_path: Path, tiny_catalog: Catalog, tiny_data_dir: Path, runner: Any, figures: Any
) -> None:
    collector = figures
    runner.preload("tiny-zimage")
    async with both_platforms(tmp_path, tiny_catalog, tiny_data_dir, runner, workers=2) as up:
        figures = await _drive(up.discord, up.telegram)
    posts: dict[str, int] = figures.pop("posts")
    _report(figures)
    collector.add(f"load: {USERS} users, 2 workers", accepted=figures["accepted"], posts=posts)
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
    assert figures["unexplained_refusals"] == 0, figures
    assert figures["discord_ack_max_s"] < DISCORD_ACK_S, figures
    assert figures["telegram_status_max_s"] < TELEGRAM_STATUS_S, figures
    assert figures["rss_end_mb"] - figures["rss_start_mb"] < RSS_GROWTH_MB, figures
    assert figures["discord_violations"] == [], figures


async def _drive(demu: DiscordEmulator, temu: TelegramEmulator) -> dict[str, Any]:
    """Users arrive over SPREAD_S, alternating platforms; then wait for every result."""
    discord: list[tuple[int, Interaction]] = []
    telegram: list[tuple[int, dict[str, Any], float, int]] = []
    warm = max(4, USERS // 10)
    rss_start = 0.0
    started = time.monotonic()
    for i in range(USERS):
        if i == warm:
            rss_start = rss_mb()
        if i % 2 == 0:
            user_id = str(300000000000000000 + i)
            inter = await demu.slash("imagine", {"prompt": prompt_for(i)}, user_id=user_id)
            discord.append((i, inter))
        else:
            user = User(1000 + i, f"User{i}", f"user{i}")
            chat = temu.private_chat(user)
            sent = time.monotonic()
            update = temu.user_text(chat, user, f"/imagine {prompt_for(i)}")
            telegram.append((i, update, sent, chat.id))
        await asyncio.sleep(max(0.0, started + SPREAD_S * (i + 1) / USERS - time.monotonic()))

    arrived = time.monotonic()

    def refused(i: int) -> bool:
        return i % REFUSE_EVERY == REFUSE_EVERY - 1

    pending_d = list(discord)
    pending_t = list(telegram)
    shown = [time.monotonic()]

    def discord_pending(item: tuple[int, Interaction]) -> bool:
        i, inter = item
        if refused(i) or inter.response_type == 4:  # 4: answered at once, i.e. refused
            return inter.response_type is None
        return not [m for m in demu.followups(inter) if m["attachments"]]

    def all_done() -> bool:
        # Only what is still pending is looked at again: the check stays cheap at 1000 users.
        pending_d[:] = [item for item in pending_d if discord_pending(item)]
        if time.monotonic() > shown[0] + 10:
            shown[0] = time.monotonic()
            print(f"load: {len(pending_d)} Discord, {len(pending_t)} Telegram pending", flush=True)
        if pending_d:
            return False
        index = tg_index(temu)
        pending_t[:] = [
            item
            for item in pending_t
            if not (tg_replies if refused(item[0]) else tg_results)(index, item[1])
        ]
        return not pending_t

    wait_s = 60.0 + USERS * 0.3
    with contextlib.suppress(TimeoutError):  # what is missing is counted as lost below
        await demu.wait_for(all_done, within=wait_s)
    drain_s = time.monotonic() - arrived
    await asyncio.sleep(1.5)  # a late duplicate would show up here
    rss_end = rss_mb()

    accepted = delivered = duplicated = lost = refusals = unexplained = 0
    acks: list[float] = []
    per_job: dict[str, int] = {}
    for i, inter in discord:
        if inter.responded_at is not None:
            acks.append(inter.responded_at - inter.created_at)
        if refused(i) or inter.response_type == 4:  # a refusal by the quota counts here too
            refusals += 1
            text = (demu.original(inter) or {}).get("content", "")
            if not (inter.response_type == 4 and inter.ephemeral and text.strip()):
                unexplained += 1
            continue
        accepted += 1
        posts = len([m for m in demu.followups(inter) if m["attachments"]])
        per_job[f"discord:{inter.id}"] = posts
        delivered += posts >= 1
        duplicated += max(0, posts - 1)
        lost += posts == 0
    statuses: list[float] = []
    index = tg_index(temu)
    for i, update, sent, chat_id in telegram:
        first = temu.calls_of("sendMessage", chat_id)
        if first:
            statuses.append(first[0].at - sent)
        if refused(i):
            refusals += 1
            texts = [m.get("text", "") for m in tg_replies(index, update)]
            if not any(t.strip() for t in texts) or tg_results(index, update):
                unexplained += 1
            continue
        accepted += 1
        posts = len(tg_results(index, update))
        per_job[f"telegram:{update['update_id']}"] = posts
        delivered += posts >= 1
        duplicated += max(0, posts - 1)
        lost += posts == 0
    return {
        "users": USERS,
        "spread_s": SPREAD_S,
        "accepted": accepted,
        "delivered": delivered,
        "duplicated": duplicated,
        "lost": lost,
        "refused": refusals,
        "unexplained_refusals": unexplained,
        "discord_ack_p50_s": round(statistics.median(acks), 3) if acks else 0.0,
        "discord_ack_p99_s": round(pct(acks, 0.99), 3),
        "discord_ack_max_s": round(max(acks, default=99.0), 3),
        "telegram_status_p50_s": round(statistics.median(statuses), 3) if statuses else 0.0,
        "telegram_status_p99_s": round(pct(statuses, 0.99), 3),
        "telegram_status_max_s": round(max(statuses, default=99.0), 3),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "wall_s": round(time.monotonic() - started, 1),
        # From the last arrival until the last result was posted: the backlog's drain.
        "drain_s": round(drain_s, 1),
        "discord_violations": list(demu.violations),
        "posts": per_job,
    }


def _report(figures: dict[str, Any]) -> None:
    """Print the figures and write them as JSON (``RESULTS``)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    width = max(len(k) for k in figures)
    out = io.StringIO()
    out.write("\nload figures\n")
    for key, value in figures.items():
        out.write(f"  {key:<{width}}  {value}\n")
    print(out.getvalue())
