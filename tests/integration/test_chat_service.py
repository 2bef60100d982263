"""ChatService against a Redis that does not answer: the user hears "temporarily unavailable"
within the service's deadline instead of waiting out every retry of every call."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelbot.catalog import Catalog
from reelbot.chat import service as chat_service
from reelbot.chat.replies import reply_for
from reelbot.chat.service import ChatService, Context
from reelbot.errors import BackendUnavailable
from reelbot.jobs import Requester
from reelbot.store.connection import connect

from .conftest import make_settings


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers, like a hung Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_silent_redis_is_answered_as_unavailable_in_time(
    silent_port: int, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_service, "ANSWER_WITHIN_S", 1.0)
    url = f"redis://127.0.0.1:{silent_port}/0"
    redis = connect(url)
    settings = make_settings(url, tmp_path)
    chat = ChatService(redis, settings, catalog, platform="memo")
    ctx = Context(Requester(platform="memo", user_id="ann"), channel_id="room")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as caught:
            await chat.jobs_text(ctx)
        assert time.monotonic() - started < 5
        assert "temporarily unavailable" in reply_for(caught.value)
    finally:
        await asyncio.wait_for(redis.aclose(close_connection_pool=True), 5)
