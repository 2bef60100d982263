"""Content policy end to end: discord.py against the local Discord, the real worker and classifier.

The tiny models paint abstract pictures that the classifier scores near 0, so the server's
threshold is set to 0 to flag every result: no explicit material is needed to see each mode.
"""

from __future__ import annotations

from typing import Any

import pytest
from discord_emulator import ADMIN_PERMISSIONS, MEMBER_PERMISSIONS, DiscordEmulator
from telegram_emulator import User
from test_discord_e2e import ALICE, BOB, STEP_S, Stack, decoded, result_of
from test_discord_e2e import stack as stack
from test_quota_e2e import answer, said
from test_quota_e2e import tg as tg
from test_telegram_e2e import Stack as TgStack
from test_telegram_e2e import wait_result

from reelbot.jobs import JobStatus, job_id_for

pytestmark = pytest.mark.timeout(120)


async def policy(emu: DiscordEmulator, action: str, value: str = "") -> str:
    """A server admin runs ``/admin policy ACTION VALUE`` and reads the answer."""
    options: dict[str, Any] = {"action": action, "value": value}
    inter = await emu.slash(
        "admin", options, subcommand="policy", user_id=ALICE, permissions=ADMIN_PERMISSIONS
    )
    return await said(emu, inter)


async def test_prompt_refusal_spoiler_and_block_through_discord(stack: Stack) -> None:
    emu = stack.emu
    server = f"discord:server:{emu.guild_id}"

    # A blocked word, however it is spelled: a refusal that names no word, and no job.
    assert "words=0 patterns=0 → " in await policy(emu, "block", "zorp")
    refused = await emu.slash("imagine", {"prompt": "a Z0RP at dawn"}, user_id=BOB)
    text = await said(emu, refused)
    assert "refused by this server's content policy" in text and "zorp" not in text.lower()
    assert await stack.record(job_id_for("discord", refused.id)) is None

    # A member may not change the policy.
    tried = await emu.slash(
        "admin",
        {"action": "mode", "value": "allow"},
        subcommand="policy",
        user_id=BOB,
        permissions=MEMBER_PERMISSIONS,
    )
    assert "Manage Server" in await said(emu, tried)

    # spoiler: the file arrives behind Discord's spoiler (its name starts with SPOILER_).
    await policy(emu, "threshold", "0")
    assert "mode=spoiler" in await policy(emu, "mode", "spoiler")
    await stack.start_worker()
    hidden = await emu.slash("imagine", {"prompt": "a calm lake"}, user_id=BOB)
    message = await result_of(emu, hidden)
    name, image = decoded(emu, message)
    assert name.startswith("SPOILER_") and name.endswith(".png")
    assert image.size[0] > 0

    # block: no media is posted, the user is told, and the credits come back.
    await policy(emu, "mode", "block")
    withheld = await emu.slash("video", {"prompt": "waves", "duration": 1.0}, user_id=BOB)

    def told() -> list[dict[str, Any]]:
        return [m for m in emu.followups(withheld) if "withheld" in m.get("content", "")]

    (notice,) = await emu.wait_for(told, within=STEP_S)
    assert "credits were returned" in notice["content"]
    assert not [m for m in emu.followups(withheld) if m["attachments"]]
    record = await stack.record(job_id_for("discord", withheld.id))
    assert (record.status, record.error_code, record.result) == (JobStatus.FAILED, "refused", None)
    budget = await said(emu, await emu.slash("quota", user_id=BOB))
    # Only the spoilered image (0.02) was charged; the withheld video was refunded.
    assert "(used 0.02)" in budget, budget

    # The refused prompt and every change are in the server's audit log.
    audit = await emu.slash(
        "admin", {"count": 10}, subcommand="audit", user_id=ALICE, permissions=ADMIN_PERMISSIONS
    )
    log = (await said(emu, audit)).splitlines()
    assert any("prompt refused" in line and "a Z0RP at dawn" in line for line in log), log
    assert sum(f"policy mode {server}" in line for line in log) == 2, log
    assert emu.violations == []


async def test_telegram_spoiler_and_refusal(tg: TgStack) -> None:
    emu = tg.emu
    admin, member = User(601, "Ada", "ada"), User(602, "Max", "max")
    group = emu.group(-1000000888, admins={admin.id})

    def say(user: User, text: str) -> dict[str, Any]:
        return emu.user_text(group, user, text.replace(" ", "@emu_bot ", 1))

    assert "words=1" in await answer(emu, say(admin, "/admin policy block zorp"))
    text = await answer(emu, say(member, "/imagine z o r p"))
    assert "refused by this server's content policy" in text, text
    await answer(emu, say(admin, "/admin policy threshold 0"))
    assert "mode=spoiler" in await answer(emu, say(admin, "/admin policy mode spoiler"))
    tg.start_worker()
    posted = await wait_result(emu, say(member, "/imagine a calm lake"))
    assert "photo" in posted
    (call,) = [c for c in emu.calls if c.method == "sendPhoto"]
    assert call.params["has_spoiler"] in ("true", "True", True), call.params
