"""``EditThrottle``: rooms that share one pace, an interval per room, the latest edit per key,
nothing after a final edit, and a slot left free by an edit that sent nothing."""

from __future__ import annotations

import asyncio

from reelbot.chat.throttle import Action, EditThrottle


def edit(shown: list[str], label: str, sent: bool | None = None) -> Action:
    async def action() -> bool | None:
        shown.append(label)
        return sent

    return action


def per_room(group_s: float, private_s: float) -> EditThrottle:
    return EditThrottle(interval_for=lambda room: group_s if room.startswith("-") else private_s)


async def test_keys_in_one_room_share_its_slots_oldest_first() -> None:
    shown: list[str] = []
    throttle = per_room(0.2, 0.01)
    await throttle.run("-1:1", edit(shown, "a1"), room="-1")
    await throttle.run("-1:2", edit(shown, "b1"), room="-1")  # the room's slot is taken
    await throttle.run("-1:1", edit(shown, "a2"), room="-1")  # a1 is shown: a2 waits too
    await throttle.run("-1:3", edit(shown, "c1"), room="-1")
    await throttle.run("-1:3", edit(shown, "c2"), room="-1")  # only the latest state waits
    assert shown == ["a1"]
    await asyncio.sleep(0.3)
    assert shown == ["a1", "b1"]  # one per 0.2 s, in the order they started waiting
    await asyncio.sleep(0.4)
    assert shown == ["a1", "b1", "a2", "c2"]
    await throttle.aclose()


async def test_each_room_gets_its_own_interval_and_does_not_hold_back_another() -> None:
    shown: list[str] = []
    throttle = per_room(10.0, 0.05)
    await throttle.run("5:1", edit(shown, "p1"), room="5")
    await throttle.run("-5:1", edit(shown, "g1"), room="-5")
    await throttle.run("5:1", edit(shown, "p2"), room="5")
    await throttle.run("-5:1", edit(shown, "g2"), room="-5")
    await asyncio.sleep(0.2)
    assert shown == ["p1", "g1", "p2"]  # the group's second edit waits its 10 s
    assert throttle.interval_of("-5") == 10.0 and throttle.interval_of("5") == 0.05
    await throttle.aclose()
    assert "g2" not in shown  # an ordinary waiting edit is dropped at close


async def test_nothing_runs_for_a_key_after_its_final_edit() -> None:
    shown: list[str] = []
    throttle = EditThrottle(0.1)
    await throttle.run("m", edit(shown, "step 1"))
    await throttle.run("m", edit(shown, "done"), final=True)  # waits for the slot
    await throttle.run("m", edit(shown, "step 2"))  # late progress: dropped
    await asyncio.sleep(0.25)
    await throttle.run("m", edit(shown, "step 3"))
    await asyncio.sleep(0.15)
    assert shown == ["step 1", "done"]
    throttle.forget("m")
    await throttle.run("m", edit(shown, "step 4"))
    assert shown == ["step 1", "done"]  # forgetting a key does not reopen it
    await throttle.aclose()


async def test_close_runs_a_waiting_final_edit_and_drops_the_rest() -> None:
    shown: list[str] = []
    throttle = EditThrottle(interval_for=lambda room: 10.0)
    throttle.touch("-1")  # a message was just posted in the room
    await throttle.run("-1:1", edit(shown, "progress"), room="-1")
    await throttle.run("-1:2", edit(shown, "done"), room="-1", final=True)
    assert shown == []
    await throttle.aclose()
    assert shown == ["done"]
    await throttle.run("-1:3", edit(shown, "after close"), room="-1")
    assert shown == ["done"] and not throttle._tasks


async def test_an_edit_that_sent_nothing_leaves_the_slot_free() -> None:
    shown: list[str] = []
    now = [100.0]
    throttle = EditThrottle(3.0, clock=lambda: now[0])
    await throttle.run("m", edit(shown, "same", sent=False))
    await throttle.run("m", edit(shown, "new"))  # not held back by the no-op
    await throttle.run("m", edit(shown, "newer"))  # this one waits: "new" used the slot
    assert shown == ["same", "new"]
    await throttle.aclose()


async def test_touch_makes_the_next_edit_wait() -> None:
    shown: list[str] = []
    throttle = EditThrottle(0.1)
    throttle.touch("m")
    await throttle.run("m", edit(shown, "first"))
    assert shown == []
    await asyncio.sleep(0.2)
    assert shown == ["first"]
    await throttle.aclose()


async def test_the_interval_counts_from_a_slow_edits_answer() -> None:
    # A request slowed on its way (a busy host) must not bring the next edit closer than the
    # interval to it on the platform's side: the slot is counted from the answer.
    now = [0.0]

    async def slow() -> bool | None:
        now[0] += 2.5  # the edit took 2.5 s to be answered
        return None

    throttle = EditThrottle(3.0, clock=lambda: now[0])
    await throttle.run("m", slow)
    assert throttle.wait_s("m") == 3.0  # from t=2.5, not t=0
    await throttle.aclose()
