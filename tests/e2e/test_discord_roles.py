"""Discord role tiers end to end: a quota set on a role applies to the members who hold it.

The bot runs without the GUILDS intent, so discord.py has no guild cache and cannot resolve
``Member.roles``; the role ids that come with every interaction are what counts. The emulator
sends GUILD_CREATE only to a client that asks for GUILDS, as Discord does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from discord_emulator import GUILDS_INTENT, MANAGE_GUILD, DiscordEmulator
from test_discord_e2e import ALICE, BOB, Stack
from test_discord_e2e import stack as stack
from test_quota_e2e import book_do, said

pytestmark = pytest.mark.timeout(120)


async def test_role_tier_applies_to_a_member_holding_the_role(stack: Stack) -> None:
    emu = stack.emu
    patrons = emu.add_role("patrons")
    emu.give_role(BOB, patrons)
    # As an admin would: `reelbot quota set default daily=1`, then a tier for the role.
    await book_do(stack.settings, "default", daily=1)
    await book_do(stack.settings, f"discord:role:{patrons}", daily=37)

    held = await said(emu, await emu.slash("quota", user_id=BOB))
    assert "Credits left today: 37 of 37" in held, held
    # Someone without the role keeps the default.
    plain = await said(emu, await emu.slash("quota", user_id=ALICE))
    assert "Credits left today: 1 of 1" in plain, plain


async def test_role_tier_with_several_roles_takes_the_most_generous(stack: Stack) -> None:
    emu = stack.emu
    small, large = emu.add_role("small"), emu.add_role("large")
    for role in (small, large):
        emu.give_role(BOB, role)
    await book_do(stack.settings, "default", daily=1)
    await book_do(stack.settings, f"discord:role:{small}", daily=5)
    await book_do(stack.settings, f"discord:role:{large}", daily=37)
    held = await said(emu, await emu.slash("quota", user_id=BOB))
    assert "Credits left today: 37 of 37" in held, held


async def _identify(emu: DiscordEmulator, intents: int) -> list[dict[str, Any]]:
    """Connect a bare gateway client with ``intents``; the dispatches it gets in 0.5 s."""
    frames: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(emu.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        identify = {"token": emu.bot_token, "intents": intents, "properties": {}}
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        try:
            async with asyncio.timeout(0.5):
                while True:
                    frame = await ws.receive_json()
                    if frame.get("op") == 0:
                        frames.append(frame)
        except TimeoutError:
            pass
    return frames


async def test_emulator_sends_guild_create_only_for_the_guilds_intent(
    discord_emu: DiscordEmulator,
) -> None:
    mods = discord_emu.add_role("mods", permissions=MANAGE_GUILD)

    bare = await _identify(discord_emu, 0)
    assert [f["t"] for f in bare] == ["READY"]
    assert bare[0]["d"]["guilds"] == [{"id": discord_emu.guild_id, "unavailable": True}]

    guilds = await _identify(discord_emu, GUILDS_INTENT)
    assert [f["t"] for f in guilds] == ["READY", "GUILD_CREATE"]
    roles = {r["id"]: r for r in guilds[1]["d"]["roles"]}
    assert roles[discord_emu.guild_id]["name"] == "@everyone"
    assert roles[mods]["permissions"] == str(MANAGE_GUILD)
    assert discord_emu.identify_intents == [0, GUILDS_INTENT]


async def test_emulator_interaction_member_carries_roles_and_permissions(
    discord_emu: DiscordEmulator,
) -> None:
    mods = discord_emu.add_role("mods", permissions=MANAGE_GUILD)
    discord_emu.give_role(BOB, mods)
    with pytest.raises(KeyError):
        discord_emu.give_role(BOB, discord_emu.guild_id)  # @everyone is never assigned
    inter = await discord_emu.slash("quota", user_id=BOB)
    member = inter.payload["member"]
    assert member["roles"] == [mods]
    assert int(member["permissions"]) & MANAGE_GUILD
    plain = await discord_emu.slash("quota", user_id=ALICE)
    assert plain.payload["member"]["roles"] == []
    assert not int(plain.payload["member"]["permissions"]) & MANAGE_GUILD


@pytest.mark.parametrize("guilds", [False, True])
async def test_discordpy_resolves_roles_only_from_guild_create(
    discord_emu: DiscordEmulator, guilds: bool
) -> None:
    """Why the adapter reads raw ids: ``Member.roles`` is empty unless GUILD_CREATE came."""
    import discord

    from reelbot.bots.discord.app import point_at

    patrons = discord_emu.add_role("patrons")
    discord_emu.give_role(BOB, patrons)
    point_at(discord_emu.api_url, discord_emu.gateway_url)
    seen: asyncio.Queue[discord.Interaction[discord.Client]] = asyncio.Queue()
    client = discord.Client(intents=discord.Intents(guilds=guilds), guild_ready_timeout=0.1)

    @client.event
    async def on_interaction(interaction: discord.Interaction[discord.Client]) -> None:
        await seen.put(interaction)

    task = asyncio.create_task(client.start(discord_emu.bot_token))
    try:
        await asyncio.wait_for(client.wait_until_ready(), 10)
        await discord_emu.slash("quota", user_id=BOB)
        inter = await asyncio.wait_for(seen.get(), 10)
        assert isinstance(inter.user, discord.Member)
        resolved = [r.id for r in inter.user.roles if not r.is_default()]
        assert resolved == ([int(patrons)] if guilds else [])
        assert list(inter.user._roles) == [int(patrons)]  # the raw ids, whatever the cache
    finally:
        await client.close()
        await asyncio.gather(task, return_exceptions=True)
