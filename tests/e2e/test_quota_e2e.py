"""Quotas end to end through both emulators: refusals, admins changing limits, the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discord_emulator import ADMIN_PERMISSIONS, MEMBER_PERMISSIONS, DiscordEmulator, Interaction
from telegram_emulator import (
    TOKEN,
    TelegramEmulator,
    User,
)
from test_discord_e2e import ALICE, BOB, Stack, acknowledged, result_of
from test_discord_e2e import stack as stack
from test_telegram_e2e import Stack as TgStack
from test_telegram_e2e import replies, wait_result

from reelbot.catalog import Catalog
from reelbot.config import Settings
from reelbot.governance.quotas import QuotaBook
from reelbot.jobs import job_id_for
from reelbot.store.connection import connect

pytestmark = pytest.mark.timeout(120)


async def book_do(settings: Settings, scope: str, **values: float) -> None:
    """An operator sets limits (as ``reelbot quota set`` does)."""
    redis = connect(settings.effective_redis_url)
    try:
        await QuotaBook(redis, settings).change(scope, dict(values), actor="cli:test", origin="cli")
    finally:
        await redis.aclose(close_connection_pool=True)


async def admin_quota(
    emu: DiscordEmulator, action: str, options: dict[str, str], *, user_id: str, permissions: int
) -> Interaction:
    """``/admin quota action:ACTION …``."""
    given = {"action": action, **options}
    return await emu.slash(
        "admin", given, subcommand="quota", user_id=user_id, permissions=permissions
    )


async def said(emu: DiscordEmulator, inter: Interaction) -> str:
    """The text of the first ephemeral answer (a direct reply or a followup)."""
    await acknowledged(emu, inter)

    def text() -> str | None:
        for message in [*emu.followups(inter), emu.original(inter) or {}]:
            if message.get("content") and "is thinking" not in message["content"]:
                return str(message["content"])
        return None

    return str(await emu.wait_for(text, within=10))


async def test_discord_refusal_admin_change_and_audit(stack: Stack) -> None:
    emu = stack.emu
    # A user over their own budget: a clear refusal and no job.
    await book_do(stack.settings, f"discord:user:{BOB}", daily=0.01)
    over = await emu.slash("imagine", {"prompt": "too dear"}, user_id=BOB)
    text = await said(emu, over)
    assert "0.01 of 0.01 left today" in text and "costs 0.02" in text, text
    assert "reset at 00:00 UTC (in" in text
    assert all(m["flags"] & 64 for m in emu.followups(over))
    assert await stack.record(job_id_for("discord", over.id)) is None
    await book_do(stack.settings, f"discord:user:{BOB}", daily=200)

    # A server admin empties the server's pool from chat; Bob's next command is refused.
    done = await admin_quota(
        emu,
        "set",
        {"scope": "server", "limits": "daily=0"},
        user_id=ALICE,
        permissions=ADMIN_PERMISSIONS,
    )
    assert f"discord:server:{emu.guild_id}: nothing set (inherits) → daily=0" in await said(
        emu, done
    )
    refused = await emu.slash("imagine", {"prompt": "pool is dry"}, user_id=BOB)
    assert "server's credits are spent" in await said(emu, refused)
    assert await stack.record(job_id_for("discord", refused.id)) is None

    # Bob is no admin: his change is refused and nothing changes.
    tried = await admin_quota(
        emu,
        "set",
        {"scope": "server", "limits": "daily=none"},
        user_id=BOB,
        permissions=MEMBER_PERMISSIONS,
    )
    assert "Manage Server" in await said(emu, tried)
    again = await emu.slash("imagine", {"prompt": "still dry"}, user_id=BOB)
    assert "server's credits are spent" in await said(emu, again)

    # The admin lifts it; the very next command runs.
    lifted = await admin_quota(
        emu,
        "set",
        {"scope": "server", "limits": "daily=none"},
        user_id=ALICE,
        permissions=ADMIN_PERMISSIONS,
    )
    assert "→ daily=unlimited" in await said(emu, lifted)
    await stack.start_worker()
    runs = await acknowledged(emu, await emu.slash("imagine", {"prompt": "now"}, user_id=BOB))
    await result_of(emu, runs)
    budget = await said(emu, await emu.slash("quota", user_id=BOB))
    assert "Credits left today: 199.98 of 200 (used 0.02)" in budget, budget

    status = await emu.slash(
        "admin", subcommand="status", user_id=ALICE, permissions=ADMIN_PERMISSIONS
    )
    assert f"credits today discord:server:{emu.guild_id}: 0.02" in await said(emu, status)

    # Every change is in the audit log, with who and where; the refused one is not.
    audit = await emu.slash(
        "admin", {"count": 10}, subcommand="audit", user_id=ALICE, permissions=ADMIN_PERMISSIONS
    )
    log = (await said(emu, audit)).splitlines()
    server = f"discord:server:{emu.guild_id}"
    assert len(log) == 2, log
    assert (
        f"discord:user:{ALICE}" in log[0] and f"set {server}: daily=0 → daily=unlimited" in log[0]
    )
    assert f"set {server}: (inherit) → daily=0" in log[1]
    assert all(BOB not in line.split(" set ")[0] for line in log)


@pytest.fixture
async def tg(
    telegram_emu: TelegramEmulator,
    telegram_redis_url: str,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
    runner: Any,
) -> AsyncIterator[TgStack]:
    """The Telegram stack of ``test_telegram_e2e``, running, on a flushed server."""
    settings = Settings(
        redis_url=telegram_redis_url,
        telegram_token=TOKEN,
        telegram_api_url=telegram_emu.root,
        models="tiny",
        data_dir=tiny_data_dir,
        device="cpu",
        heartbeat_s=0.5,
        dead_worker_s=2.0,
    )
    running = TgStack(telegram_emu, settings, tiny_catalog, runner)
    await running.redis.flushall()
    await running.start_bot()
    try:
        yield running
    finally:
        await running.close()


async def answer(emu: TelegramEmulator, update: dict[str, Any]) -> str:
    """The bot's text reply to a message, once it is more than the "Queued" placeholder."""

    def settled() -> list[str]:
        texts = [m["text"] for m in replies(emu, update) if "text" in m]
        return [t for t in texts if not t.startswith("⏳")]

    found = await emu.wait_for(settled)
    return str(found[0])


async def test_telegram_refusal_admin_change_and_audit(tg: TgStack) -> None:
    emu = tg.emu
    admin, member = User(501, "Ada", "ada"), User(502, "Max", "max")
    group = emu.group(-1000000777, admins={admin.id})
    server = f"telegram:server:{group.id}"

    def say(user: User, text: str) -> dict[str, Any]:
        return emu.user_text(group, user, text.replace(" ", "@emu_bot ", 1))

    await book_do(tg.settings, f"telegram:user:{member.id}", daily=0.01)
    text = await answer(emu, say(member, "/imagine too dear"))
    assert "0.01 of 0.01 left today" in text and "reset at 00:00 UTC (in" in text, text
    await book_do(tg.settings, f"telegram:user:{member.id}", daily=200)

    set_text = await answer(emu, say(admin, "/admin quota set server daily=0"))
    assert f"{server}: nothing set (inherits) → daily=0" in set_text, set_text
    refused = say(member, "/imagine dry pool")
    assert "server's credits are spent" in await answer(emu, refused)
    assert (
        await tg.records.get(
            job_id_for("telegram", f"{group.id}:{refused['message']['message_id']}")
        )
        is None
    )

    denied = await answer(emu, say(member, "/admin quota set server daily=none"))
    assert "administrators" in denied, denied

    lifted = await answer(emu, say(admin, "/admin quota set server daily=none"))
    assert "→ daily=unlimited" in lifted
    tg.start_worker()
    await wait_result(emu, say(member, "/imagine runs now"))
    quota = await answer(emu, say(member, "/quota now"))
    assert "Credits left today: 199.98 of 200" in quota, quota

    audit = await answer(emu, say(admin, "/admin audit"))
    lines = audit.splitlines()
    assert len(lines) == 2 and "daily=0 → daily=unlimited" in lines[0], lines
    assert all(f"telegram:user:{admin.id}" in line for line in lines)
