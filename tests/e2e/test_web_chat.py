"""The web chat on the chat layer, in process: a private Valkey that these tests stop and start,
the real worker on the tiny models, pages over HTTP and server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_up import Page, _delivered, page

from integration.conftest import SlowSteps, make_settings, start_generation
from reelbot.bots.web.service import bind, serve_web
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reelbot.store.records import JobRecord, RecordStore

pytestmark = pytest.mark.timeout(150)

OWNER = "owner-client-0003"
OUTAGE_S = 30.0
SLOW_VIDEO = "a long shot of the sea --steps 8 --duration 4 --fps 8"


@dataclass
class Web:
    """The chat under test: where it is, its server and its settings."""

    url: str
    server: RedisServer
    settings: Settings

    async def record(self, job_id: str) -> JobRecord:
        redis = connect(self.server.url)
        try:
            return await RecordStore(redis, finished_ttl_s=60).require(job_id)
        finally:
            await redis.aclose(close_connection_pool=True)


@pytest.fixture
async def web(tmp_path: Path, discord_data_dir: Path) -> AsyncIterator[Web]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    settings = make_settings(server.url, discord_data_dir, owner_ids=(f"web:{OWNER}",))
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_web(settings, stop, sock))
    try:
        yield Web(url, server, settings)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await serving
        server.stop(kill=True)


@pytest.fixture
async def worker(web: Web, discord_runner: Any) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = await start_generation(web.settings, SlowSteps(discord_runner), stop)
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


def _of(p: Page, job_id: str) -> list[dict[str, Any]]:
    return [e for e in p.events if e.get("job_id") == job_id]


async def _send_when_up(p: Page, text: str) -> dict[str, Any]:
    """A command, sent again while the chat still answers 503 (Redis coming back)."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                answer = await p.send(text)
                if answer.status_code != 503:
                    assert answer.status_code == 200, answer.text
                    body: dict[str, Any] = answer.json()
                    return body
            await asyncio.sleep(0.5)


async def test_progress_and_results_survive_a_30_s_redis_outage(web: Web, worker: None) -> None:
    async with page(web.url) as p:
        before = (await p.send("/imagine a fox before the outage --seed 1")).json()
        await p.wait(before["job_id"], _delivered)
        await asyncio.to_thread(web.server.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(web.server.start)

        after = await _send_when_up(p, f"/video {SLOW_VIDEO} --seed 2")
        # The card keeps moving: progress is followed again after the outage.
        await p.wait(after["job_id"], lambda e: e["status"] == "running" and e.get("step", 0) > 0)
        await p.wait(after["job_id"], _delivered)
        await asyncio.sleep(1.0)
        for job in (before, after):
            assert len([e for e in _of(p, job["job_id"]) if _delivered(e)]) == 1, _of(
                p, job["job_id"]
            )
            assert (await web.record(job["job_id"])).status == JobStatus.DELIVERED


async def test_each_browser_is_its_own_chat(web: Web) -> None:
    """The web has no group chats: a browser's jobs never show in another's /jobs, a bare
    /cancel touches only the asker's own, and only an owner cancels someone else's job."""
    async with page(web.url) as ann, page(web.url) as bob:
        mine = (await ann.send("/imagine my secret prompt")).json()
        theirs = (await bob.send("/imagine a fox of bob's")).json()
        listed = (await bob.send("/jobs")).json()["text"]
        assert theirs["job_id"] in listed
        assert mine["job_id"] not in listed and "secret" not in listed
        cancelled = (await bob.send("/cancel")).json()
        assert cancelled["job_id"] == theirs["job_id"] and cancelled["status"] == "cancelled"
        assert mine["job_id"] in (await ann.send("/jobs")).json()["text"]
        # Bob can neither cancel Ann's job nor re-run it (which would show him its prompt).
        for action in ("cancel", "reroll", "variations"):
            refused = await bob.send(action=action, job=mine["job_id"])
            assert refused.status_code == 400 and "secret" not in refused.text, refused.text
        assert (await web.record(mine["job_id"])).status == JobStatus.QUEUED

        owner = Page(ann.http)
        owner.client = OWNER
        alone = await owner.send("/cancel")
        assert alone.status_code == 400 and "no queued or running" in alone.json()["message"]
        assert (await web.record(mine["job_id"])).status == JobStatus.QUEUED
        # An owner (REELBOT_OWNER_IDS web:CLIENT) may cancel any web job by name.
        said = await owner.send(action="cancel", job=mine["job_id"])
        assert said.status_code == 200, said.text
        assert said.json()["status"] == "cancelled"
        await ann.wait(mine["job_id"], lambda e: e["status"] == "cancelled")


async def test_cancelling_a_running_job_says_cancelling_until_the_worker_stops_it(
    web: Web, worker: None
) -> None:
    async with page(web.url) as p:
        job_id = (await p.send(f"/video {SLOW_VIDEO}")).json()["job_id"]
        await p.wait(job_id, lambda e: e["status"] == "running" and e.get("step", 0) > 0)
        answer = (await p.send(action="cancel", job=job_id)).json()
        assert answer["notice"].startswith("Cancelling"), answer
        assert answer["status"] == "running" and "Cancelled" not in answer["notice"]
        seen = len(_of(p, job_id))
        ended = await p.wait(job_id, lambda e: e["status"] in ("cancelled", "delivered"))
        assert ended["status"] == "cancelled"
        # The card turned "cancelled" only once the worker had stopped the job.
        record = await web.record(job_id)
        assert record.status == JobStatus.CANCELLED and record.result is None
        later = _of(p, job_id)[seen:]
        assert not any(_delivered(e) for e in later)
