"""Status messages (throttled, latest wins, no no-op edits) and the error handler's replies."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest
from telegram import Update
from telegram.error import BadRequest

from reelbot.bots.telegram.app import on_error
from reelbot.bots.telegram.render import keyboard
from reelbot.bots.telegram.status import StatusBoard
from reelbot.chat.replies import Button
from reelbot.errors import InvalidOption, QuotaExceeded


class FakeBot:
    """Records edits; answers like Telegram to an edit that changes nothing."""

    def __init__(self) -> None:
        self.edits: list[tuple[int, int, str]] = []
        self.shown: dict[tuple[int, int], str] = {}

    async def edit_message_text(
        self, text: str, *, chat_id: int, message_id: int, **_: Any
    ) -> None:
        if self.shown.get((chat_id, message_id)) == text:
            raise BadRequest("Message is not modified")
        self.shown[(chat_id, message_id)] = text
        self.edits.append((chat_id, message_id, text))


def cancel_keyboard(job_id: str) -> Any:
    return keyboard((Button("cancel", job_id, "Cancel"),))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_identical_states_are_never_sent_twice() -> None:
    bot, clock = FakeBot(), Clock()
    board = StatusBoard(bot, private_interval=1.0, clock=clock)  # type: ignore[arg-type]
    board.remember(5, 1, "queued", cancel_keyboard("te1"))
    clock.now += 5
    await board.show(5, 1, "queued", cancel_keyboard("te1"))
    assert bot.edits == []  # already shown when sent
    clock.now += 5
    await board.show(5, 1, "step 1/2", cancel_keyboard("te1"))
    clock.now += 5
    await board.show(5, 1, "step 1/2", cancel_keyboard("te1"))
    assert [e[2] for e in bot.edits] == ["step 1/2"]


async def test_group_edits_wait_for_the_chat_slot_and_keep_only_the_latest() -> None:
    bot = FakeBot()
    board = StatusBoard(bot, private_interval=0.05, group_interval=0.3)  # type: ignore[arg-type]
    board.remember(-100, 7, "queued", None)
    for step in range(1, 6):
        await board.show(-100, 7, f"step {step}/5", None)
    assert bot.edits == []  # inside the 0.3 s slot that the status message itself opened
    await asyncio.sleep(0.5)
    assert [e[2] for e in bot.edits] == ["step 5/5"]
    await board.close()


async def test_a_final_state_waits_for_its_slot_and_late_progress_is_dropped() -> None:
    bot = FakeBot()
    board = StatusBoard(bot, group_interval=0.3)  # type: ignore[arg-type]
    board.remember(-100, 7, "queued", None)
    await board.show(-100, 7, "step 1/5", None)
    await board.show(-100, 7, "done", None, final=True)
    await board.show(-100, 7, "step 2/5", None)
    assert bot.edits == []
    await asyncio.sleep(0.5)
    await board.show(-100, 7, "step 3/5", None)
    await asyncio.sleep(0.5)
    assert [e[2] for e in bot.edits] == ["done"]
    await board.close()


async def test_close_sends_a_waiting_final_state() -> None:
    bot = FakeBot()
    board = StatusBoard(bot, group_interval=10.0)  # type: ignore[arg-type]
    board.remember(-100, 7, "queued", None)
    await board.show(-100, 7, "step 1/5", None)
    await board.show(-100, 8, "done", None, final=True)
    await board.close()
    assert [e[1:] for e in bot.edits] == [(8, "done")]


async def test_several_status_messages_in_one_chat_share_its_slots() -> None:
    bot = FakeBot()
    board = StatusBoard(bot, group_interval=0.2)  # type: ignore[arg-type]
    board.remember(-100, 1, "q", None)
    board.remember(-100, 2, "q", None)
    await board.show(-100, 1, "a", None)
    await board.show(-100, 2, "b", None)
    await asyncio.sleep(0.1)
    assert bot.edits == []
    await asyncio.sleep(0.55)
    assert sorted(e[2] for e in bot.edits) == ["a", "b"]
    await board.close()


async def test_private_chats_get_faster_edits_than_groups() -> None:
    bot, clock = FakeBot(), Clock()
    board = StatusBoard(bot, private_interval=1.0, group_interval=3.0, clock=clock)  # type: ignore[arg-type]
    board.remember(5, 1, "q", None)
    board.remember(-5, 1, "q", None)
    clock.now += 1.5
    await board.show(5, 1, "step 1", None)
    await board.show(-5, 1, "step 1", None)
    assert [(e[0], e[2]) for e in bot.edits] == [(5, "step 1")]
    await board.close()


class Replies:
    """Stands in for a message: records replies."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def reply_text(self, text: str, **_: Any) -> None:
        self.texts.append(text)


class FakeUpdate(Update):
    """An Update whose effective message records replies."""

    def __init__(self, replies: Replies) -> None:
        super().__init__(update_id=1)
        self._replies = replies

    @property
    def effective_message(self) -> Any:
        return self._replies


class Context:
    def __init__(self, error: BaseException) -> None:
        self.error = error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidOption("--steps 99 is out of range: use 1 to 8.", option="steps"), "--steps 99"),
        (QuotaExceeded("You have used today's 50 credits.", retry_after=60), "50 credits"),
    ],
)
async def test_user_errors_are_shown_as_written(error: Exception, expected: str) -> None:
    replies = Replies()
    await on_error(FakeUpdate(replies), Context(error))  # type: ignore[arg-type]
    assert len(replies.texts) == 1 and expected in replies.texts[0]


async def test_anything_else_gets_a_reference_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replies = Replies()
    with caplog.at_level(logging.ERROR):
        await on_error(FakeUpdate(replies), Context(KeyError("secret detail")))  # type: ignore[arg-type]
    (text,) = replies.texts
    assert text.startswith("Something went wrong (ref ") and "secret" not in text
    ref = text.split("ref ")[1].split(")")[0]
    assert any(ref in r.getMessage() for r in caplog.records)


class BrokenReplies(Replies):
    async def reply_text(self, text: str, **_: Any) -> None:
        raise RuntimeError("the reply itself failed")


async def test_a_failing_error_reply_does_not_raise_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        await on_error(FakeUpdate(BrokenReplies()), Context(KeyError("x")))  # type: ignore[arg-type]
    assert "could not send the error reply" in caplog.text


class FlakyBot(FakeBot):
    """Fails one delayed edit with something that is not a Telegram error."""

    fail = True

    async def edit_message_text(self, text: str, **kw: Any) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("boom")
        await super().edit_message_text(text, **kw)


async def test_a_failing_delayed_edit_is_logged_with_its_job_and_the_board_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = FlakyBot()
    board = StatusBoard(bot, group_interval=0.1)  # type: ignore[arg-type]
    board.remember(-100, 7, "queued", None)
    with caplog.at_level(logging.WARNING):
        await board.show(-100, 7, "step 1/5", None, job_id="te42")
        await asyncio.sleep(0.3)
        gc.collect()  # a task that died unretrieved would complain here
        await board.show(-100, 7, "step 2/5", None, job_id="te42")
        await asyncio.sleep(0.3)
    assert [e[2] for e in bot.edits] == ["step 2/5"]
    assert "te42" in caplog.text and "never retrieved" not in caplog.text
    await board.close()
