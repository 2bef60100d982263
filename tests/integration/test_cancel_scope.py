"""Who may cancel whose job: its owner; a server admin in their own server; owners anywhere."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Task
from reelbot.errors import JobNotFound
from reelbot.governance import audit
from reelbot.jobs import GenerationRequest, JobStatus, ReplyAddress, Requester
from reelbot.queue.submit import JobQueue

pytestmark = pytest.mark.timeout(60)


def member(platform: str, user: str, server: str | None, **rights: bool) -> Requester:
    """Someone on a platform, in a server (None: a direct chat), as the adapters build them."""
    return Requester(platform=platform, user_id=user, server_id=server, display_name=user, **rights)


async def submit(queue: JobQueue, who: Requester, source_id: str) -> str:
    """A queued job of ``who`` (no worker runs, so it waits)."""
    request = GenerationRequest(
        task=Task.IMAGINE,
        text="a lighthouse",
        requester=who,
        reply=ReplyAddress(platform=who.platform, channel_id="c1"),
        source_id=source_id,
    )
    return (await queue.submit(request)).record.id


async def test_a_server_admin_cancels_only_in_their_own_server(
    queue: JobQueue, redis: ArqRedis
) -> None:
    author = member("discord", "111", "g1")
    job = await submit(queue, author, "scope-1")
    # Adapters set is_admin for a server's admins (and, today, for owners): it is not a pass to
    # every server's jobs.
    elsewhere = member("discord", "222", "g2", is_admin=True)
    same_id_other_platform = member("telegram", "333", "g1", is_admin=True)
    in_a_direct_chat = member("discord", "444", None, is_admin=True)
    for stranger in (elsewhere, same_id_other_platform, in_a_direct_chat):
        with pytest.raises(JobNotFound):
            await queue.cancel(job, requester=stranger)
        assert (await queue.records.require(job)).status == JobStatus.QUEUED, stranger
    assert await audit.entries(redis) == []

    g1_admin = member("discord", "555", "g1", is_admin=True)
    outcome, record = await queue.cancel(job, requester=g1_admin)
    assert (outcome, record.status) == ("removed", JobStatus.CANCELLED)
    (entry,) = await audit.entries(redis)
    assert entry.action == "job cancel" and entry.actor == "discord:user:555 (555)"
    assert (entry.origin, entry.scope) == ("discord:server:g1", "discord:server:g1")
    assert job in entry.before and "discord:user:111" in entry.before
    assert entry.after == "removed"


async def test_owners_cancel_anywhere_and_are_audited(queue: JobQueue, redis: ArqRedis) -> None:
    job = await submit(queue, member("discord", "111", "g1"), "scope-2")
    owner = member("telegram", "900", None, is_admin=True, is_owner=True)
    outcome, _ = await queue.cancel(job, requester=owner)
    assert outcome == "removed"
    (entry,) = await audit.entries(redis)
    assert entry.actor == "telegram:user:900 (900)" and entry.origin == "telegram:direct"
    assert entry.scope == "discord:server:g1" and job in entry.before


async def test_cancelling_your_own_job_is_not_audited(queue: JobQueue, redis: ArqRedis) -> None:
    author = member("telegram", "111", "-100")
    job = await submit(queue, author, "scope-3")
    with pytest.raises(JobNotFound):
        await queue.cancel(job, requester=member("telegram", "222", "-100"))
    outcome, _ = await queue.cancel(job, requester=author)
    assert outcome == "removed"
    # An admin cancelling their own job is no one else's business either.
    admin = member("telegram", "777", "-100", is_admin=True)
    mine = await submit(queue, admin, "scope-4")
    assert (await queue.cancel(mine, requester=admin))[0] == "removed"
    assert await audit.entries(redis) == []
