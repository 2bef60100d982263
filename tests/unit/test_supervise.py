"""Supervision: crashed parts restart with back-off, stop ends them, best-effort calls retry."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from reelbot.errors import ConfigError
from reelbot.runtime.supervise import Backoff, BestEffort, supervise

FAST = Backoff(first_s=0.05, max_s=0.2, factor=2.0)


def test_backoff_grows_to_its_ceiling() -> None:
    delays = list(itertools.islice(Backoff(first_s=1, max_s=5, factor=2).delays(), 5))
    assert delays == [1, 2, 4, 5, 5]


async def test_a_crashing_part_is_restarted_with_growing_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    starts: list[float] = []

    async def part() -> str:
        starts.append(time.monotonic())
        if len(starts) <= 3:
            raise RuntimeError(f"boom {len(starts)}")
        return "served"

    with caplog.at_level(logging.ERROR, logger="reelbot.runtime.supervise"):
        assert await supervise("worker", part, asyncio.Event(), backoff=FAST) == "served"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 4
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    assert caplog.text.count("worker crashed; restarting in") == 3
    assert "boom 3" in caplog.text  # the traceback names the error


async def test_the_other_parts_keep_running_while_one_crashes() -> None:
    stop = asyncio.Event()
    ticks = 0
    crashes = 0

    async def steady() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def flaky() -> None:
        nonlocal crashes
        crashes += 1
        raise OSError("telegram said 500")

    both = asyncio.gather(
        supervise("web", steady, stop, backoff=FAST),
        supervise("telegram", flaky, stop, backoff=FAST),
    )
    await asyncio.sleep(0.5)
    assert not both.done()
    before = ticks
    await asyncio.sleep(0.1)
    assert ticks > before and crashes >= 3
    stop.set()
    async with asyncio.timeout(1):
        assert await both == [None, None]


async def test_stop_during_the_back_off_ends_at_once() -> None:
    stop = asyncio.Event()
    runs = 0

    async def part() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("down")

    task = asyncio.create_task(supervise("adapter", part, stop, backoff=Backoff(first_s=30)))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    stop.set()
    async with asyncio.timeout(1):
        assert await task is None
    assert runs == 1 and time.monotonic() - started < 0.5


async def test_a_configuration_error_stops_every_part() -> None:
    stop = asyncio.Event()

    async def misconfigured() -> None:
        raise ConfigError("REELBOT_WEB_PORT: taken")

    async def waits() -> str:
        await stop.wait()
        return "stopped cleanly"

    results = await asyncio.gather(
        supervise("web", misconfigured, stop, fatal=(ConfigError,)),
        supervise("worker", waits, stop, fatal=(ConfigError,)),
        return_exceptions=True,
    )
    assert isinstance(results[0], ConfigError) and results[1] == "stopped cleanly"


async def test_a_steady_run_starts_the_back_off_over() -> None:
    starts: list[float] = []

    async def part() -> None:
        starts.append(time.monotonic())
        if len(starts) == 3:
            await asyncio.sleep(0.25)  # ran "steadily" before this crash
        if len(starts) < 5:
            raise RuntimeError("again")

    await supervise("part", part, asyncio.Event(), backoff=FAST, steady_s=0.2)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.05, 0.1, then (after the steady run) 0.05 again instead of 0.2.
    assert gaps[3] < 0.15


async def test_best_effort_retries_in_the_background_until_it_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    worked = asyncio.Event()

    async def set_menu() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise OSError("500 Internal Server Error")
        worked.set()

    chores = BestEffort(backoff=FAST, attempts=5)
    with caplog.at_level(logging.INFO, logger="reelbot.runtime.supervise"):
        assert await chores.call("setMyCommands", set_menu) is False
        assert calls == 1  # the caller goes on at once
        async with asyncio.timeout(2):
            await worked.wait()
        await asyncio.sleep(0.3)  # and no try after the one that worked
    assert calls == 4
    assert "setMyCommands failed (try 1 of 5)" in caplog.text
    assert "setMyCommands worked on try 4" in caplog.text
    await chores.aclose()


async def test_best_effort_gives_up_after_its_bound_or_on_a_permanent_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries = {"flaky": 0, "bad": 0}

    async def flaky() -> None:
        tries["flaky"] += 1
        raise OSError("502")

    async def bad() -> None:
        tries["bad"] += 1
        raise ValueError("400 Bad Request")

    chores = BestEffort(retry_if=lambda exc: isinstance(exc, OSError), backoff=FAST, attempts=3)
    with caplog.at_level(logging.ERROR, logger="reelbot.runtime.supervise"):
        assert await chores.call("flaky", flaky) is False
        assert await chores.call("bad", bad) is False
        await asyncio.sleep(0.5)
    assert tries == {"flaky": 3, "bad": 1}
    assert "flaky failed 3 times; giving up" in caplog.text
    assert "bad failed and will not be retried" in caplog.text
    await chores.aclose()


async def test_best_effort_close_cancels_waiting_retries() -> None:
    calls = 0

    async def fails() -> None:
        nonlocal calls
        calls += 1
        raise OSError("down")

    chores = BestEffort(backoff=Backoff(first_s=30))
    await chores.call("menu", fails)
    async with asyncio.timeout(1):
        await chores.aclose()
    assert calls == 1
