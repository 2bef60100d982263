"""``reelbot quota`` against a real server: set, show, usage, reset, audit, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.config import Settings
from reelbot.queue.submit import JobQueue

from .conftest import request

pytestmark = pytest.mark.timeout(60)


def reelbot(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line against the test's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_REDIS_URL": settings.effective_redis_url,
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "reelbot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_operator_sets_shows_and_audits_limits(
    settings: Settings, queue: JobQueue, redis: ArqRedis
) -> None:
    done = reelbot(settings, "quota", "set", "web:user:u1", "daily=0.05", "cooldown=none")
    assert done.returncode == 0, done.stderr
    assert "daily=0.05" in done.stdout and "cooldown=0" in done.stdout
    shown = reelbot(settings, "quota", "show", "web:user:u1")
    assert "web:user:u1: cooldown=0 daily=0.05" in shown.stdout
    # The operator's limit applies to the next submit.
    limits = await queue.quotas.limits(request(Task.IMAGINE, "x", "s0").requester)
    assert limits.daily == 0.05
    await queue.submit(request(Task.IMAGINE, "a fox", "cli-0"))
    usage = reelbot(settings, "quota", "usage", "web")
    assert "web:user:u1\t0.02" in usage.stdout, usage.stdout
    audit = reelbot(settings, "quota", "audit")
    assert audit.returncode == 0
    assert "(from cli) set web:user:u1: (inherit) → cooldown=0 daily=0.05" in audit.stdout
    reset = reelbot(settings, "quota", "reset", "web:user:u1")
    assert "(0.02 credits) reset to 0" in reset.stdout
    assert "reset web:user:u1" in reelbot(settings, "quota", "audit").stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("set", "web:nope:1", "daily=1"), "is not a scope"),
        (("set", "default", "speed=3"), "'speed' is not a limit"),
        (("set", "default", "daily=-1"), "must be 0 or more"),
        (("set", "default", "concurrent=1.5"), "whole number"),
        (("show",), "the following arguments are required: scope"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    settings: Settings, args: tuple[str, ...], says: str
) -> None:
    done = reelbot(settings, "quota", *args)
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
