"""Hypothesis drives the web chat's HTTP API with hostile forms, on a real Valkey.

Whatever a page (or anything else on the machine) posts, the answer is JSON with words for the
user and a 2xx/4xx/503 status: never a 500, never a crash, never a job for a malformed request.
No worker runs: the jobs accepted wait in the queue.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from integration.conftest import make_settings
from reelbot.bots.web.app import build_app
from reelbot.bots.web.chat import WebChat
from reelbot.catalog import load_catalog
from reelbot.runtime.http import Hub
from reelbot.runtime.server import RedisServer
from reelbot.store.connection import connect
from reliability.background import Background
from reliability.hostile import HOSTILE_TEXT

from .conftest import SOAK

EXAMPLES = 400 if SOAK else int(os.environ.get("REELBOT_FUZZ_EXAMPLES", "40")) * 2

pytestmark = pytest.mark.timeout(120 + EXAMPLES // 2)


@asynccontextmanager
async def web_api(url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The web chat's app in process, on the server at ``url``."""
    redis = connect(url)
    chat = WebChat(redis, make_settings(url, data_dir), load_catalog("tiny"))
    app = build_app(chat, Hub(), token=None, loopback=True)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await redis.aclose(close_connection_pool=True)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path
) -> Iterator[tuple[Background[httpx.AsyncClient], httpx.AsyncClient]]:
    with RedisServer(tmp_path_factory.mktemp("fuzz-web")) as server:
        background = Background(web_api(server.url, tiny_data_dir))
        with background as client:
            yield background, client


VALID_ID = st.from_regex(r"\A[A-Za-z0-9_-]{8,64}\Z")
IDS = st.tuples(st.integers(0, 3), VALID_ID, st.text(max_size=80)).map(
    lambda t: t[2] if t[0] == 0 else t[1]
)
"""Mostly well-formed, so that most forms get past the id check to the command itself."""
COMMAND = st.sampled_from(
    ["/imagine ", "/video ", "/remix ", "/animate ", "/cancel ", "/jobs", "/help", "/x", ""]
)
FILES = st.none() | st.binary(max_size=2048) | st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    client=IDS,
    message=IDS,
    command=COMMAND,
    text=HOSTILE_TEXT,
    action=st.none()
    | st.sampled_from(["reroll", "variations", "animate", "cancel"])
    | st.text(max_size=30),
    job=st.none() | IDS,
    image=FILES,
)
def test_hostile_forms_get_an_answer(
    api: tuple[Background[httpx.AsyncClient], httpx.AsyncClient],
    client: str,
    message: str,
    command: str,
    text: str,
    action: str | None,
    job: str | None,
    image: bytes | None,
) -> None:
    background, http = api
    data: dict[str, Any] = {"msg": message, "text": command + text}
    if action is not None:
        data["action"] = action
    if job is not None:
        data["job"] = job
    files = {"image": ("upload.bin", image, "application/octet-stream")} if image else None

    async def post() -> httpx.Response:
        headers = {"X-Reelbot-Client": client.encode()}  # raw bytes, as a forger may send
        return await http.post("/api/command", data=data, files=files, headers=headers)

    response = background.run(post())
    body = response.json()
    event(f"HTTP {response.status_code} {body.get('code') or body.get('type')}")
    assert response.status_code in {200, 400, 404, 413, 429, 503}, response.text
    if response.status_code == 200:
        assert body["type"] in {"text", "job"} and (body.get("text") or body.get("job_id"))
    else:
        assert body["type"] == "error" and body["message"].strip()
