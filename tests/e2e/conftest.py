"""End-to-end fixtures: the platform emulators, the real adapters and the real worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

# --- discord ---
from discord_emulator import DiscordEmulator


@pytest.fixture
async def discord_emu() -> AsyncIterator[DiscordEmulator]:
    """A fresh local Discord (REST + gateway) on a free port."""
    async with DiscordEmulator() as emu:
        yield emu


import os  # noqa: E402 (imports kept in the discord section)
from collections.abc import Iterator as _Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


@pytest.fixture(scope="session")
def discord_redis_url(tmp_path_factory: pytest.TempPathFactory) -> _Iterator[str]:
    """A private Valkey (or redis-server) for the Discord end-to-end tests."""
    from reelbot.runtime.server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("discord-redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def discord_data_dir() -> Path:
    """Where the tiny models are built once and reused (shared with the integration tests)."""
    repo = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("REELBOT_TEST_DATA_DIR") or repo / ".data" / "test")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def discord_runner(discord_data_dir: Path) -> Any:
    """The real generation engine on the CPU with the tiny models loaded, for in-process workers."""
    from reelbot.catalog import load_catalog
    from reelbot.generation.runner import Runner

    runner = Runner(load_catalog("tiny"), data_dir=discord_data_dir, device="cpu")
    for name in ("tiny-zimage", "tiny-wan"):
        runner.preload(name)
    return runner


# --- telegram ---
from collections.abc import Iterator  # noqa: E402 (imports kept in the telegram section)

from telegram_emulator import TelegramEmulator  # noqa: E402


@pytest.fixture
async def telegram_emu() -> AsyncIterator[TelegramEmulator]:
    """A fresh local Telegram Bot API server on a free port."""
    async with TelegramEmulator() as emu:
        yield emu


@pytest.fixture(scope="session")
def telegram_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Valkey (or redis-server) for the Telegram end-to-end tests."""
    from reelbot.runtime.server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("telegram-redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


# --- web ---
import re as _re  # noqa: E402 (imports kept in the web section)
import signal as _signal  # noqa: E402
import socket as _socket  # noqa: E402
import subprocess as _subprocess  # noqa: E402
import sys as _sys  # noqa: E402
import time as _time  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402

import httpx as _httpx  # noqa: E402

WEB_START_S = 150.0
"""A cold start builds the tiny models first (seconds on a laptop, longer on a busy CI box)."""


@_dataclass
class WebUp:
    """A running ``reelbot up`` subprocess: where its chat is, and its log."""

    url: str
    log: Path
    proc: _subprocess.Popen[bytes]
    started_s: float


def _free_port() -> int:
    with _socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def web_up(tmp_path_factory: pytest.TempPathFactory, discord_data_dir: Path) -> _Iterator[WebUp]:
    """``reelbot up`` as ``make demo`` runs it: tiny models, no Redis URL (the private server)."""
    home = tmp_path_factory.mktemp("web-up")
    (home / "data").mkdir()
    # Reuse the tiny models built for the other tests; the private server's data stays here.
    (discord_data_dir / "tiny").mkdir(exist_ok=True)
    (home / "data" / "tiny").symlink_to(discord_data_dir / "tiny", target_is_directory=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(home / "data"),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_WEB_PORT": str(port),
    }
    log = home / "up.log"
    started = _time.monotonic()
    with log.open("wb") as out:
        proc = _subprocess.Popen(
            [_sys.executable, "-m", "reelbot.cli", "up"],
            env=env,
            stdout=out,
            stderr=_subprocess.STDOUT,
        )
    try:
        url = _wait_for_chat(proc, log, port)
        yield WebUp(url=url, log=log, proc=proc, started_s=_time.monotonic() - started)
    finally:
        if proc.poll() is None:
            proc.send_signal(_signal.SIGTERM)
            try:
                proc.wait(30)
            except _subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_for_chat(proc: _subprocess.Popen[bytes], log: Path, port: int) -> str:
    """The chat's URL once the page answers (jobs wait in the queue until the worker is up)."""
    deadline = _time.monotonic() + WEB_START_S
    url = None
    while _time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if proc.poll() is not None:
            raise AssertionError(f"reelbot up exited early ({proc.returncode}):\n{text[-3000:]}")
        match = _re.search(r"reelbot web: chat at (http://\S+/)", text)
        if match:
            url = match.group(1)
            try:
                if _httpx.get(url, timeout=2).status_code == 200:
                    assert url.endswith(f":{port}/"), url
                    return url
            except _httpx.HTTPError:
                pass
        _time.sleep(0.2)
    raise AssertionError(f"the web chat did not come up on port {port}:\n{text[-3000:]}")
