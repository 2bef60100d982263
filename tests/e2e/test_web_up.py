"""The web chat through ``reelbot up`` as ``make demo`` runs it: real queue, worker, tiny models."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from telegram_emulator import TOKEN, TelegramEmulator, User

from conftest import WebUp

pytestmark = pytest.mark.timeout(240)

JOB_WAIT_S = 120.0
CAROL = User(333, "Carol", "carol")


class Page:
    """One browser's worth of the chat over plain HTTP: a client id, its events, its commands."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.client = secrets.token_hex(8)
        self.events: list[dict[str, Any]] = []
        self._new = asyncio.Event()
        self._open = asyncio.Event()

    async def listen(self) -> None:
        """Read the server-sent events into ``events``."""
        async with self.http.stream(
            "GET", "/api/events", params={"client": self.client}, timeout=None
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                self._open.set()
                if line.startswith("data: "):
                    self.events.append(json.loads(line.removeprefix("data: ")))
                    self._new.set()

    async def send(self, text: str = "", **fields: str) -> httpx.Response:
        """POST a command (or a button's action) as the page does."""
        data = {"msg": secrets.token_hex(8), "text": text, **fields}
        return await self.http.post(
            "/api/command", data=data, headers={"X-Reelbot-Client": self.client}
        )

    async def wait(self, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event of ``job_id`` that satisfies ``done``."""
        async with asyncio.timeout(JOB_WAIT_S):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if event.get("job_id") == job_id and done(event):
                        return event
                seen = len(self.events)
                self._new.clear()
                await self._new.wait()


@contextlib.asynccontextmanager
async def page(url: str) -> AsyncIterator[Page]:
    """A page connected to the event stream."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        p = Page(http)
        task = asyncio.create_task(p.listen())
        try:
            async with asyncio.timeout(10):
                await p._open.wait()
            yield p
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _delivered(event: dict[str, Any]) -> bool:
    return event.get("status") == "delivered" and event.get("media") is not None


async def test_demo_answers_imagine_with_an_image(web_up: WebUp) -> None:
    async with page(web_up.url) as p:
        home = await p.http.get("/")
        assert home.status_code == 200 and "reelbot" in home.text

        answer = await p.send("/imagine a red fox --seed 7")
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["type"] == "job" and job["status"] == "queued"
        assert job["seed"] == 7 and job["actions"] == ["cancel"]
        assert "position" in job and "eta_s" in job

        result = await p.wait(job["job_id"], _delivered)
        running = [e for e in p.events if e["job_id"] == job["job_id"] and e["status"] == "running"]
        assert any(e["step"] > 0 and e["total"] > 0 for e in running), p.events
        assert result["actions"] == [
            "upscale",
            "vary_subtle",
            "vary_strong",
            "reroll",
            "animate",
            *("zoom_2", "zoom_15", "pan_left", "pan_right", "pan_up", "pan_down"),
            "edit",  # Edit region: the page's own editor
            "info",
        ]
        assert "--seed 7" in result["summary"]

        media = await p.http.get(result["media"]["url"])
        assert media.status_code == 200
        assert media.headers["content-type"] == result["media"]["mime"]
        image = Image.open(io.BytesIO(media.content))
        image.load()
        assert image.size == (result["media"]["width"], result["media"]["height"])

        # A retried POST (the same message id) finds the job, never a second one.
        again = await p.http.post(
            "/api/command",
            data={"msg": "retry-0001", "text": "/imagine a cat"},
            headers={"X-Reelbot-Client": p.client},
        )
        twice = await p.http.post(
            "/api/command",
            data={"msg": "retry-0001", "text": "/imagine a cat"},
            headers={"X-Reelbot-Client": p.client},
        )
        assert again.json()["job_id"] == twice.json()["job_id"]
        await p.wait(again.json()["job_id"], _delivered)

        history = (await p.http.get("/api/history", params={"client": p.client})).json()["jobs"]
        assert [j["job_id"] for j in history][-2:] == [job["job_id"], again.json()["job_id"]]
        assert all(j["media"] for j in history)


async def test_video_and_buttons(web_up: WebUp) -> None:
    async with page(web_up.url) as p:
        video = (await p.send("/video waves --seed 3")).json()
        assert video["type"] == "job", video
        done = await p.wait(video["job_id"], _delivered)
        assert done["media"]["kind"] == "video"
        assert done["actions"] == ["reroll", "extend", "smooth", "upscale", "info"]
        clip = await p.http.get(done["media"]["url"])
        assert clip.headers["content-type"] == "video/mp4"
        assert clip.content[4:8] == b"ftyp"
        # Browsers read videos in ranges.
        part = await p.http.get(done["media"]["url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        assert part.headers["content-range"] == f"bytes 0-99/{len(clip.content)}"

        image = (await p.send("/imagine a lighthouse --seed 11")).json()
        await p.wait(image["job_id"], _delivered)
        reroll = (await p.send(action="reroll", job=image["job_id"])).json()
        assert reroll["type"] == "job" and reroll["job_id"] != image["job_id"]
        assert reroll["prompt"] == "a lighthouse" and reroll["seed"] != 11
        variations = (await p.send(action="variations", job=image["job_id"])).json()
        assert variations["task"] == "remix"
        animate = (await p.send(action="animate", job=image["job_id"])).json()
        assert animate["task"] == "animate"
        for job in (reroll, variations, animate):
            await p.wait(job["job_id"], _delivered)


async def test_errors_and_text_commands_answer_inline(web_up: WebUp) -> None:
    async with page(web_up.url) as p:
        bad = await p.send("/imagine a fox --seed banana")
        assert bad.status_code == 400
        assert bad.json()["type"] == "error" and "--seed" in bad.json()["message"]
        unknown = await p.send("/imagin a fox")
        assert unknown.status_code == 400 and "/imagine" in unknown.json()["message"]
        remix = await p.send("/remix make it winter")
        assert remix.status_code == 400 and "image" in remix.json()["message"]
        plain = await p.send("a fox")
        assert plain.status_code == 400 and "/imagine" in plain.json()["message"]
        not_an_image = await p.http.post(
            "/api/command",
            data={"msg": "upload-0001", "text": "/remix winter"},
            files={"image": ("x.png", b"not an image", "image/png")},
            headers={"X-Reelbot-Client": p.client},
        )
        assert not_an_image.status_code == 400, not_an_image.text
        assert not_an_image.json()["code"] == "invalid_image"

        texts = (
            ("/help", "/imagine"),
            ("/models", "tiny-zimage"),
            ("/jobs", ""),
            ("/quota", "Credits left today"),
        )
        for command, needle in texts:
            answer = await p.send(command)
            assert answer.status_code == 200 and answer.json()["type"] == "text"
            assert needle in answer.json()["text"]
        admin = await p.send("/admin status")
        assert admin.status_code == 400 and "REELBOT_OWNER_IDS" in admin.json()["message"]
        nothing = await p.send("/cancel")
        assert nothing.status_code == 400 and "no queued or running" in nothing.json()["message"]
        # Without the page's header a cross-site form post is refused.
        forged = await p.http.post("/api/command", data={"msg": "forged-001", "text": "/help"})
        assert forged.status_code == 400


async def test_remix_with_an_upload(web_up: WebUp) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), "orange").save(buf, "PNG")
    async with page(web_up.url) as p:
        answer = await p.http.post(
            "/api/command",
            data={"msg": "upload-0002", "text": "/remix make it winter --seed 5"},
            files={"image": ("fox.png", buf.getvalue(), "image/png")},
            headers={"X-Reelbot-Client": p.client},
        )
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["task"] == "remix"
        done = await p.wait(job["job_id"], _delivered)
        media = await p.http.get(done["media"]["url"])
        Image.open(io.BytesIO(media.content)).load()


async def test_up_runs_telegram_beside_the_web_chat(
    telegram_emu: TelegramEmulator, tmp_path: Path, discord_data_dir: Path
) -> None:
    emu = telegram_emu
    home = tmp_path / "data"
    home.mkdir()
    (home / "tiny").symlink_to(discord_data_dir / "tiny", target_is_directory=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(home),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_WEB_PORT": str(port),
        "REELBOT_TELEGRAM_TOKEN": TOKEN,
        "REELBOT_TELEGRAM_API_URL": emu.root,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reelbot.cli", "up", env=env, stdout=out, stderr=out
        )
    try:
        await emu.wait_for(lambda: emu.calls_of("getUpdates"), within=60, what="polling")
        chat = emu.private_chat(CAROL)
        emu.user_text(chat, CAROL, "/imagine a tin robot --seed 3")
        await emu.wait_for(lambda: emu.calls_of("sendPhoto", chat.id), within=60, what="photo")
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/")).status_code == 200
        text = log.read_text()
        assert "reelbot.bots.telegram.service:run_up" in text
        assert "reelbot.bots.web.service:run_up" in text
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cancel_button_takes_a_waiting_job_out(web_up: WebUp) -> None:
    async with page(web_up.url) as p:
        jobs = [
            (await p.send(f"/video slow waves {i} --steps 8 --duration 4")).json() for i in range(3)
        ]
        last = jobs[-1]
        assert last["actions"] == ["cancel"] and last["position"] >= 1, last
        cancelled = await p.send(action="cancel", job=last["job_id"])
        assert cancelled.status_code == 200, cancelled.text
        # The words every platform says (reelbot.chat.texts.CANCEL_TEXT): a waiting job is gone.
        assert cancelled.json()["notice"] == "Cancelled; the credits are back."
        assert cancelled.json()["status"] == "cancelled"
        await p.wait(last["job_id"], lambda e: e["status"] == "cancelled")
        for job in jobs[:-1]:
            await p.wait(job["job_id"], _delivered)
        again = await p.send(action="cancel", job=last["job_id"])
        assert again.json()["notice"] == "That job has finished already."


async def test_up_keeps_the_worker_and_web_chat_while_telegram_setup_fails(
    telegram_emu: TelegramEmulator, tmp_path: Path, discord_data_dir: Path
) -> None:
    """Telegram answering 500 to ``setMyCommands`` takes nothing down: not the worker, not the
    web chat, not even the Telegram bot, which answers while the menu call is retried."""
    emu = telegram_emu
    emu.fail("setMyCommands", 500, 10_000, "Internal Server Error")
    home = tmp_path / "data"
    home.mkdir()
    (home / "tiny").symlink_to(discord_data_dir / "tiny", target_is_directory=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELBOT_")} | {
        "REELBOT_MODELS": "tiny",
        "REELBOT_DATA_DIR": str(home),
        "REELBOT_DEVICE": "cpu",
        "REELBOT_WEB_PORT": str(port),
        "REELBOT_TELEGRAM_TOKEN": TOKEN,
        "REELBOT_TELEGRAM_API_URL": emu.root,
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reelbot.cli", "up", env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}/"

    async def chat_answers() -> bool:
        assert proc.returncode is None, f"reelbot up exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(url)).status_code == 200
        return False

    try:
        async with asyncio.timeout(150):
            while not await chat_answers():  # noqa: ASYNC110 (polls a subprocess over HTTP)
                await asyncio.sleep(0.2)
        await emu.wait_for(
            lambda: (
                proc.returncode is not None
                or len([c for c in emu.calls if c.method == "setMyCommands"]) >= 2
            ),
            within=30,
            what="a second try of setMyCommands",
        )
        assert proc.returncode is None, f"reelbot up exited:\n{log.read_text()[-3000:]}"
        async with page(url) as p:
            job = (await p.send("/imagine a lighthouse --seed 4")).json()
            assert job["type"] == "job", job
            await p.wait(job["job_id"], _delivered)
        # The Telegram bot itself is up too and answers while its menu keeps failing.
        chat = emu.private_chat(CAROL)
        update = emu.user_text(chat, CAROL, "/help")
        await emu.wait_for(
            lambda: [
                m
                for m in emu.bot_messages(chat.id)
                if m.get("reply_to_message", {}).get("message_id")
                == update["message"]["message_id"]
            ],
            within=30,
            what="the /help answer",
        )
        assert not emu.commands
        assert await chat_answers()
        assert "setMyCommands" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, log.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
