"""``reelbot health`` against a real server: Redis answering, worker heartbeats present."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from reelbot.runtime.server import RedisServer, free_port
from reelbot.store import keys


def _health(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")}
    env["REELBOT_REDIS_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "reelbot.cli", "health", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def _beat(redis: ArqRedis, worker_id: str, queue: str, host: str) -> None:
    info = {"id": worker_id, "queue": queue, "kind": "generation", "host": host}
    await redis.set(keys.worker(worker_id), json.dumps(info), px=10_000)
    await redis.sadd(keys.WORKERS, worker_id)  # type: ignore[misc]


async def test_health_says_what_is_missing(server: RedisServer, redis: ArqRedis) -> None:
    await redis.flushall()
    url = server.url
    assert _health(url).returncode == 0

    missing = _health(url, "--worker")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "reelbot health: no live worker on reelbot:image"

    await _beat(redis, "elsewhere:1:aa", "reelbot:image", "some-other-host")
    await _beat(redis, "elsewhere:1:bb", "reelbot:video", "some-other-host")
    assert _health(url, "--worker").returncode == 0
    # A pod's probe counts only its own worker.
    local = _health(url, "--worker", "--this-host", "--queue", "image")
    assert local.returncode == 1 and "on this host" in local.stderr
    await _beat(redis, "here:1:cc", "reelbot:image", socket.gethostname())
    assert _health(url, "--worker", "--this-host", "--queue", "image").returncode == 0


@pytest.mark.timeout(30)
def test_health_fails_in_one_line_when_redis_is_away(tmp_path: Path) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port('127.0.0.1')}/0"
    result = _health(url, "--timeout", "1")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("reelbot health: Redis does not answer at redis://:***@127.0.0.1:")
    assert "hunter2-secret" not in result.stderr
