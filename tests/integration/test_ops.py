"""``reelbot jobs list|show|cancel`` against a real server."""

from __future__ import annotations

import asyncio
import os

import pytest

from reelbot.catalog import Task, load_catalog
from reelbot.cli import main
from reelbot.config import Settings
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.store.connection import connect

from .conftest import request

pytestmark = pytest.mark.timeout(30)


def _submit(settings: Settings, *texts: str) -> list[str]:
    async def go() -> list[str]:
        redis = connect(settings.effective_redis_url)
        try:
            queue = JobQueue(redis, settings, load_catalog("tiny"))
            done = [await queue.submit(request(Task.IMAGINE, t, f"ops-{t}")) for t in texts]
            return [d.record.id for d in done]
        finally:
            await redis.aclose(close_connection_pool=True)

    return asyncio.run(go())


def _status(settings: Settings, job_id: str) -> JobStatus:
    async def go() -> JobStatus:
        redis = connect(settings.effective_redis_url)
        try:
            return (await JobQueue(redis, settings, load_catalog("tiny")).get(job_id)).status
        finally:
            await redis.aclose(close_connection_pool=True)

    return asyncio.run(go())


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI's environment pointing at the test server."""
    for key in [k for k in os.environ if k.startswith("REELBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("REELBOT_REDIS_URL", settings.effective_redis_url)
    monkeypatch.setenv("REELBOT_MODELS", "tiny")
    monkeypatch.setenv("COLUMNS", "200")
    return settings


def test_list_show_and_cancel(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _submit(env, "a red barn", "a blue boat")

    assert main(["jobs", "list"]) == 0
    out = capsys.readouterr().out
    assert first in out and second in out and "queued" in out
    assert out.index(second) < out.index(first)  # newest first

    assert main(["jobs", "show", second]) == 0
    out = capsys.readouterr().out
    assert "a blue boat" in out and "#2 in line" in out and "--seed" in out

    assert main(["jobs", "cancel", first]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert _status(env, first) == JobStatus.CANCELLED
    assert main(["jobs", "cancel", first]) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["jobs", "show", "nope"], "There is no job 'nope'"),
        (["jobs", "cancel", "nope"], "There is no job 'nope'"),
        (["jobs", "list", "--limit", "0"], "--limit must be at least 1"),
        (["jobs", "frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], says: str, env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself on a bad subcommand
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and says in err[0]
