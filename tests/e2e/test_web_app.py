"""The web chat's guards, in process: access token, Host check, bind and exposure warnings."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from reelbot.bots.web.app import COOKIE, build_app
from reelbot.bots.web.chat import WebChat
from reelbot.bots.web.service import announce, bind, is_loopback, run_up
from reelbot.catalog import load_catalog
from reelbot.cli import main
from reelbot.config import Settings
from reelbot.errors import ConfigError
from reelbot.runtime.http import Hub
from reelbot.store.connection import connect

TOKEN = "s3cret-token"


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(redis_url="redis://127.0.0.1:9/0", models="tiny", data_dir=tmp_path, **values)


async def _client(
    tmp_path: Path, *, token: str | None, loopback: bool, public_host: str | None = None
) -> httpx.AsyncClient:
    # Nothing listens on port 9: a request that gets past the guards fails fast with a 503.
    redis = connect("redis://127.0.0.1:9/0", retries=0)
    chat = WebChat(redis, _settings(tmp_path), load_catalog("tiny"))
    app = build_app(chat, Hub(), token=token, loopback=loopback, public_host=public_host)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with an access token."""
    async with await _client(tmp_path, token=TOKEN, loopback=False) as client:
        yield client


async def test_a_token_guards_every_route(guarded: httpx.AsyncClient) -> None:
    page = await guarded.get("/")
    assert page.status_code == 401 and "?token=" in page.text
    assert (await guarded.get("/?token=wrong")).status_code == 401
    for path in ("/api/history?client=abcdefgh12", "/media/we0123", "/api/events?client=x"):
        assert (await guarded.get(path)).status_code == 401, path
    command = await guarded.post(
        "/api/command",
        data={"msg": "m0000001", "text": "/help"},
        headers={"X-Reelbot-Client": "c" * 12},
    )
    assert command.status_code == 401

    entry = await guarded.get(f"/?token={TOKEN}")
    assert entry.status_code == 303 and entry.headers["location"] == "/"
    assert entry.cookies[COOKIE] == TOKEN
    guarded.cookies.set(COOKIE, TOKEN)
    assert (await guarded.get("/")).status_code == 200
    guarded.cookies.clear()
    bearer = {"Authorization": f"Bearer {TOKEN}", "X-Reelbot-Client": "c" * 12}
    answer = await guarded.post(
        "/api/command", data={"msg": "m0000002", "text": "/help"}, headers=bearer
    )
    assert answer.status_code == 200 and "/imagine" in answer.json()["text"]


async def test_loopback_refuses_a_foreign_host_header(tmp_path: Path) -> None:
    async with await _client(tmp_path, token=None, loopback=True) as client:
        assert (await client.get("/")).status_code == 200
        rebound = await client.get("/", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


async def test_behind_a_proxy_on_loopback_the_public_url_host_is_let_in(tmp_path: Path) -> None:
    # A TLS proxy in front of 127.0.0.1 (Caddy, Traefik) passes the name people opened: the
    # Edit region links point there (REELBOT_PUBLIC_URL), and the Host check let none of them in.
    async with await _client(
        tmp_path, token=None, loopback=True, public_host="reelbot.example.com"
    ) as client:
        assert (await client.get("/", headers={"Host": "reelbot.example.com"})).status_code == 200
        with_port = await client.get("/", headers={"Host": "reelbot.example.com:443"})
        assert with_port.status_code == 200
        rebound = await client.get("/", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


async def test_an_unreachable_queue_is_a_clear_503(tmp_path: Path) -> None:
    async with await _client(tmp_path, token=None, loopback=True) as client:
        answer = await client.post(
            "/api/command",
            data={"msg": "m0000003", "text": "/imagine a fox"},
            headers={"X-Reelbot-Client": "c" * 12},
        )
        assert answer.status_code == 503
        # The one wording of a Redis outage on every platform (reelbot.chat.replies).
        assert "temporarily unavailable" in answer.json()["message"]
        assert answer.json()["code"] == "unavailable"


def test_exposed_without_a_token_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with caplog.at_level(logging.WARNING, logger="reelbot.bots.web.service"):
            announce(_settings(tmp_path, web_host="0.0.0.0"), sock)
        assert "REELBOT_WEB_TOKEN" in caplog.text and "other machines" in caplog.text
        assert "chat at http://127.0.0.1:" in capsys.readouterr().err

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="reelbot.bots.web.service"):
            announce(_settings(tmp_path, web_host="0.0.0.0", web_token=SecretStr(TOKEN)), sock)
            announce(_settings(tmp_path), sock)
        assert caplog.text == ""
        assert TOKEN not in capsys.readouterr().err


def test_a_taken_port_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            ConfigError, match=rf"REELBOT_WEB_PORT: cannot listen on 127.0.0.1:{port}"
        ):
            bind("127.0.0.1", port)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_up_goes_on_without_the_page_when_its_port_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = _settings(tmp_path, web_port=taken.getsockname()[1])
        with caplog.at_level(logging.ERROR, logger="reelbot.bots.web.service"):
            async with asyncio.timeout(5):
                await run_up(settings, asyncio.Event())
    assert "web chat is not running: REELBOT_WEB_PORT" in caplog.text


def test_reelbot_web_on_a_taken_port_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("REELBOT_")]:
        monkeypatch.delenv(key)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("REELBOT_WEB_PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("REELBOT_DATA_DIR", str(tmp_path))
        assert main(["web"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reelbot: REELBOT_WEB_PORT: cannot listen")


async def test_a_malformed_form_is_a_400(tmp_path: Path) -> None:
    async with await _client(tmp_path, token=None, loopback=True) as client:
        fields = {"msg": "m0000004", "text": "/help"} | {f"f{i}": "x" for i in range(20)}
        answer = await client.post(
            "/api/command", data=fields, headers={"X-Reelbot-Client": "c" * 12}
        )
        assert answer.status_code == 400 and answer.json()["type"] == "error"
        assert "fields" in answer.json()["message"].lower(), answer.json()
