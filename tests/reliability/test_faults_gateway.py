"""The Discord gateway drops while jobs run and while a user sends a command, each repeated.

Discord closes gateway connections now and then (deploys, "going away", an unknown error); the
client resumes and Discord replays what happened meanwhile. Nothing may be lost: the jobs in
flight are posted once, and the command sent while the bot was away is answered and run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from reelbot.catalog import Catalog
from reelbot.jobs import JobStatus, job_id_for
from reelbot.store.connection import connect
from reelbot.store.records import RecordStore
from reliability.stacks import DiscordEmulator, Interaction, both_platforms

from .conftest import REPEATS, Figures

pytestmark = pytest.mark.timeout(180)

CLOSE_CODES = [4000, 1001]
"""Discord's "unknown error" and a plain "going away": both resumable."""
IN_FLIGHT = "waves on a rock --steps 6 --duration 2 --fps 8 --seed {i}"


async def _running(url: str, job_id: str) -> None:
    redis = connect(url)
    try:
        records = RecordStore(redis, finished_ttl_s=3600)
        running = (JobStatus.RUNNING, JobStatus.ENCODING)
        for _ in range(1500):
            record = await records.get(job_id)
            if record is not None and record.status in running:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"job {job_id} never ran")
    finally:
        await redis.aclose(close_connection_pool=True)


def results(emu: DiscordEmulator, inter: Interaction) -> list[dict[str, Any]]:
    return [m for m in emu.followups(inter) if m["attachments"]]


@pytest.mark.parametrize("rep", range(REPEATS))
async def test_gateway_disconnect_mid_job(
    rep: int,
    tmp_path: Path,
    catalog: Catalog,
    data_dir: Path,
    runner: Any,
    figures: Figures,
) -> None:
    code = CLOSE_CODES[rep % len(CLOSE_CODES)]
    async with both_platforms(tmp_path, catalog, data_dir, runner, workers=1) as up:
        emu = up.discord
        flying = [
            await emu.slash("video", {"prompt": IN_FLIGHT.format(i=i)}, user_id=str(4000 + i))
            for i in range(2)
        ]
        await emu.wait_for(lambda: all(i.response_type is not None for i in flying), within=5)
        # The first job is on the worker when the connection drops.
        await _running(up.settings.effective_redis_url, job_id_for("discord", flying[0].id))
        resumes, identifies = emu.resumes, emu.identifies
        await emu.disconnect(code)
        dropped = time.monotonic()
        # Sent while the bot is away: Discord replays it on RESUME.
        away = await emu.slash("imagine", {"prompt": f"sent while away {rep}"}, user_id="4100")
        await emu.wait_for(lambda: emu.resumes > resumes, within=30)
        everyone = [*flying, away]
        await emu.wait_for(lambda: all(results(emu, i) for i in everyone), within=90)
        recovery = time.monotonic() - dropped
        await asyncio.sleep(0.5)  # a second post would show here
        posts = {i.id: len(results(emu, i)) for i in everyone}
        figures.add(f"gateway disconnect ({code})", accepted=3, posts=posts, recovery_s=recovery)
        assert posts == dict.fromkeys(posts, 1)
        # Resumed, not a new session; the replayed command was answered like any other.
        assert emu.identifies == identifies
        assert away.response_type == 5 and not away.ephemeral
        assert emu.violations == []
