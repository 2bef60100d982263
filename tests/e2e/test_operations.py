"""Operations end to end: ``reelbot up`` with every adapter, scraped metrics, clean logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from discord_emulator import DiscordEmulator
from telegram_emulator import TOKEN as TELEGRAM_TOKEN
from telegram_emulator import TelegramEmulator, User

pytestmark = pytest.mark.timeout(240)

DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.emuDiscordSecret.0123456789abcdef"
WEB_TOKEN = "web-secret-token-4f1c2a9e"
DANA = User(444, "Dana", "dana")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
async def discord_emu_secret() -> object:
    """A Discord emulator that expects a token shaped like a real one."""
    async with DiscordEmulator(bot_token=DISCORD_TOKEN) as emu:
        yield emu


async def test_up_metrics_move_and_logs_hold_no_tokens(
    telegram_emu: TelegramEmulator,
    discord_emu_secret: DiscordEmulator,
    tmp_path: Path,
    discord_data_dir: Path,
) -> None:
    home = tmp_path / "data"
    home.mkdir()
    (home / "tiny").symlink_to(discord_data_dir / "tiny", target_is_directory=True)
    web_port, metrics_port = _free_port(), _free_port()
    discord = discord_emu_secret
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(home),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_WEB_PORT": str(web_port),
        "REELBOT_WEB_TOKEN": WEB_TOKEN,
        "REELBOT_METRICS_PORT": str(metrics_port),
        "REELBOT_METRICS_HOST": "127.0.0.1",
        "REELBOT_LOG_FORMAT": "json",
        # DEBUG: the libraries' own request logs (with URLs) are in, for the filter to catch.
        "REELBOT_LOG_LEVEL": "DEBUG",
        "REELBOT_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "REELBOT_TELEGRAM_API_URL": telegram_emu.root,
        "REELBOT_DISCORD_TOKEN": DISCORD_TOKEN,
        "REELBOT_DISCORD_API_URL": discord.api_url,
        "REELBOT_DISCORD_GATEWAY_URL": discord.gateway_url,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reelbot.cli", "up", env=env, stdout=out, stderr=out
        )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            before = await _scrape(http, metrics_url, proc, log)
            assert _sample(before, "reelbot_queue_depth", queue="reelbot:image") == 0
            await telegram_emu.wait_for(
                lambda: telegram_emu.calls_of("getUpdates"), within=60, what="polling"
            )
            await discord.wait_for(lambda: discord.connected, within=60)

            chat = telegram_emu.private_chat(DANA)
            telegram_emu.user_text(chat, DANA, "/imagine a tin robot --seed 3")
            await discord.slash("imagine", {"prompt": "a red fox --seed 7"})
            web = f"http://127.0.0.1:{web_port}"
            bearer = {
                "Authorization": f"Bearer {WEB_TOKEN}",
                "X-Reelbot-Client": "0123456789abcdef",
            }
            answer = await http.post(
                f"{web}/api/command",
                data={"msg": "ops-0001", "text": "/video waves --seed 2"},
                headers=bearer,
            )
            assert answer.status_code == 200, answer.text
            refused = await http.post(
                f"{web}/api/command",
                data={"msg": "ops-0002", "text": "/imagine a fox --steps 999"},
                headers=bearer,
            )
            assert refused.status_code == 400

            await telegram_emu.wait_for(
                lambda: telegram_emu.calls_of("sendPhoto", chat.id), within=60, what="photo"
            )
            after = await _until_delivered(http, metrics_url, proc, log, count=3)

        for platform in ("telegram", "discord", "web"):
            assert _sample(after, "reelbot_admissions_total", platform=platform) >= 1, after
            assert _sample(after, "reelbot_deliveries_total", platform=platform) >= 1, after
        assert _sample(after, "reelbot_submissions_total") >= 4
        assert _sample(after, "reelbot_refusals_total", platform="web") >= 1
        assert _sample(after, "reelbot_job_run_seconds_count", task="imagine") >= 2
        assert _sample(after, "reelbot_job_wait_seconds_count", task="video") >= 1
        assert _sample(after, "reelbot_worker_heartbeats_total") > _sample(
            before, "reelbot_worker_heartbeats_total"
        )
        assert _sample(after, "reelbot_workers_live", queue="reelbot:image") >= 1
        assert 'reelbot_queue_depth{queue="reelbot:deliver:web"}' in after

        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, log.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    text = log.read_text()
    for secret in (TELEGRAM_TOKEN, DISCORD_TOKEN, WEB_TOKEN):
        assert secret not in text, f"a secret reached the log: {secret[:6]}…"
    # The Telegram token's secret half alone must not appear either.
    assert TELEGRAM_TOKEN.split(":", 1)[1] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert len(lines) > 10
    # The filter had work to do: the HTTP client's request lines name the Bot API paths.
    assert any("[redacted]" in line["msg"] for line in lines), text[-3000:]
    # Lines about a job carry its id as a field, not only inside the message.
    assert any(line.get("job_id") and line["job_id"] in line["msg"] for line in lines)


def _tail(log: Path) -> str:
    """The end of the process's log, for a failure message."""
    return log.read_text()[-3000:]


async def _scrape(http: httpx.AsyncClient, url: str, proc: object, log: Path) -> str:
    """The metrics page, once the endpoint is up."""
    async with asyncio.timeout(60):
        while True:
            try:
                response = await http.get(url)
                if response.status_code == 200 and "reelbot_queue_depth" in response.text:
                    return response.text
            except httpx.TransportError:
                pass
            assert getattr(proc, "returncode", None) is None, _tail(log)
            await asyncio.sleep(0.2)


async def _until_delivered(
    http: httpx.AsyncClient, url: str, proc: object, log: Path, *, count: int
) -> str:
    """The metrics page once ``count`` results have been posted."""
    async with asyncio.timeout(90):
        while True:
            text = await _scrape(http, url, proc, log)
            if _sample(text, "reelbot_deliveries_total", kind="result") >= count:
                return text
            await asyncio.sleep(0.3)
