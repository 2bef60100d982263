"""Quotas on a real server: atomic reservation, refunds, precedence, reset, cooldown, fair order."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Catalog, Task
from reelbot.config import Settings
from reelbot.errors import QuotaExceeded
from reelbot.governance import quotas
from reelbot.governance.quotas import window
from reelbot.jobs import (
    GenerationRequest,
    JobStatus,
    Options,
    ReplyAddress,
    Requester,
    resolve,
)
from reelbot.queue.submit import JobQueue

from .conftest import Posted, StartWorkers, delivered, make_settings, wait_for_record

pytestmark = pytest.mark.timeout(90)

T0 = 1_800_000_000.0
"""A fixed submit time (2027-01-15 08:00 UTC), so windows and resets are known."""


def unit_catalog(catalog: Catalog) -> Catalog:
    """The tiny catalog with the image model weighted so that one default image costs 1."""
    params = resolve(Task.IMAGINE, "a fox", catalog, has_image=False, default_seed=1)
    spec = catalog.models[params.model]
    scale = (params.width * params.height / (512 * 512)) * (params.steps / spec.steps_default)
    heavier = spec.model_copy(update={"cost_weight": 1 / scale})
    return catalog.model_copy(update={"models": {**catalog.models, "tiny-zimage": heavier}})


def ask(
    source: str,
    *,
    user: str = "u1",
    server: str | None = None,
    roles: tuple[str, ...] = (),
    platform: str = "discord",
    task: Task = Task.IMAGINE,
) -> GenerationRequest:
    """A request from a user, optionally in a server and with roles."""
    return GenerationRequest(
        task=task,
        text=f"a fox {source}",
        options=Options(),
        requester=Requester(platform=platform, user_id=user, server_id=server, role_ids=roles),
        reply=ReplyAddress(platform=platform, channel_id="c1"),
        source_id=source,
    )


@pytest.fixture
def units(redis: ArqRedis, settings: Settings, catalog: Catalog) -> JobQueue:
    """A queue whose image jobs cost exactly one credit each."""
    return JobQueue(redis, settings, unit_catalog(catalog))


async def used(redis: ArqRedis, scope: str, now: float = T0) -> float:
    """Credits a scope has used in the window of ``now``."""
    number, _ = window(now, 0)
    return float(await redis.get(quotas.used_key(scope, number)) or 0)


async def test_200_concurrent_submits_admit_exactly_the_budget(
    units: JobQueue, redis: ArqRedis
) -> None:
    await units.quotas.change(
        "discord:user:u1", {"daily": 50, "concurrent": math.inf}, actor="test"
    )
    results = await asyncio.gather(
        *(units.submit(ask(f"burst-{i}"), with_position=False, now=T0) for i in range(200)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert {r.record.cost for r in admitted} == {1.0}
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(admitted) + len(refused) == 200
    assert sum(r.record.cost for r in admitted) == pytest.approx(50.0)
    assert await used(redis, "discord:user:u1") == pytest.approx(50.0)
    assert await redis.zcard(units.settings.image_queue) == 50
    # A repeated update of an admitted job is the same job, and is not charged again.
    again = await units.submit(ask(admitted[0].record.request.source_id), now=T0)
    assert not again.created
    assert await used(redis, "discord:user:u1") == pytest.approx(50.0)
    assert "0 of 50 left today" in refused[0].user_message


async def test_cancel_and_failure_refund_once(units: JobQueue, redis: ArqRedis) -> None:
    await units.quotas.change("discord:user:u1", {"daily": 3}, actor="test")
    jobs = [await units.submit(ask(f"r-{i}"), now=T0) for i in range(3)]
    with pytest.raises(QuotaExceeded):
        await units.submit(ask("r-over"), now=T0)
    outcome, _ = await units.cancel(jobs[0].record.id)
    assert outcome == "removed"
    assert await used(redis, "discord:user:u1") == pytest.approx(2.0)
    # A worker's failure (or a safety refusal) ends the job through the same transition.
    failed = await units.records.transition(
        jobs[1].record.id, JobStatus.FAILED, error_code="invalid_prompt", error_message="no"
    )
    assert failed is not None
    assert await used(redis, "discord:user:u1") == pytest.approx(1.0)
    # Settling again (a replayed cancel, a second failure path) changes nothing.
    assert not await quotas.settle(redis, jobs[1].record.id, refund=True)
    assert await units.records.transition(jobs[1].record.id, JobStatus.CANCELLED) is None
    assert await used(redis, "discord:user:u1") == pytest.approx(1.0)
    # The refunded credits can be spent again.
    await units.submit(ask("r-again-1"), now=T0)
    await units.submit(ask("r-again-2"), now=T0)
    with pytest.raises(QuotaExceeded):
        await units.submit(ask("r-again-3"), now=T0)


async def test_delivered_jobs_keep_their_charge(
    units: JobQueue,
    redis: ArqRedis,
    settings: Settings,
    consumer: Posted,
    start_workers: StartWorkers,
) -> None:
    await start_workers()
    job = await units.submit(ask("kept", platform="web"))
    await wait_for_record(units.records, job.record.id, delivered)
    now = job.record.created_at
    assert await used(redis, "web:user:u1", now) == pytest.approx(1.0)
    status = await units.quotas.status(job.record.requester, now=now)
    assert status.in_flight == 0
    assert await redis.exists(quotas.reservation_key(job.record.id)) == 0


async def test_role_server_and_user_precedence(units: JobQueue) -> None:
    book = units.quotas
    await book.change("default", {"concurrent": 1, "cooldown": 60}, actor="test")
    await book.change("discord", {"concurrent": 2}, actor="test")
    await book.change("discord:server:g1", {"concurrent": 3, "daily": 500}, actor="test")
    member = Requester(platform="discord", user_id="u1", server_id="g1")
    limits = await book.limits(member)
    assert (limits.concurrent, limits.cooldown, limits.pool) == (3, 60, 500)
    # The server's daily is its pool, not each member's allowance.
    assert limits.daily == units.settings.quota_daily
    await book.change("discord:role:10", {"concurrent": 4, "cooldown": 30}, actor="test")
    await book.change("discord:role:11", {"concurrent": 9, "cooldown": 5}, actor="test")
    with_roles = member.model_copy(update={"role_ids": ("10", "11")})
    limits = await book.limits(with_roles)
    assert (limits.concurrent, limits.cooldown) == (9, 5)
    await book.change("discord:user:u1", {"concurrent": 2}, actor="test")
    assert (await book.limits(with_roles)).concurrent == 2
    # Another server's settings do not leak in; a DM has no pool.
    elsewhere = Requester(platform="discord", user_id="u1", server_id="g2")
    assert (await book.limits(elsewhere)).pool == math.inf
    assert (await book.limits(elsewhere)).concurrent == 2


async def test_server_pool_is_charged_alongside_the_user(units: JobQueue, redis: ArqRedis) -> None:
    await units.quotas.change("discord:server:g1", {"daily": 3}, actor="test")
    for i, user in enumerate(("a", "b", "c")):
        await units.submit(ask(f"pool-{i}", user=user, server="g1"), now=T0)
    with pytest.raises(QuotaExceeded) as caught:
        await units.submit(ask("pool-3", user="d", server="g1"), now=T0)
    assert "server's credits are spent" in caught.value.user_message
    assert await used(redis, "discord:server:g1") == pytest.approx(3.0)
    # The same user elsewhere is not limited by that pool.
    await units.submit(ask("pool-4", user="d", server="g2"), now=T0)


async def test_daily_window_resets_at_the_configured_hour(
    redis: ArqRedis, settings: Settings, catalog: Catalog
) -> None:
    morning = make_settings(settings.effective_redis_url, settings.data_dir, quota_reset_hour=6)
    units = JobQueue(redis, morning, unit_catalog(catalog))
    await units.quotas.change("default", {"daily": 2}, actor="test")
    for i in range(2):
        await units.submit(ask(f"day-{i}"), now=T0)
    with pytest.raises(QuotaExceeded) as caught:
        await units.submit(ask("day-2"), now=T0)
    _, reset_at = window(T0, 6)
    assert reset_at - T0 == 22 * 3600  # 08:00 now, next 06:00 tomorrow
    assert caught.value.retry_after == pytest.approx(22 * 3600)
    assert "0 of 2 left today" in caught.value.user_message
    assert "06:00 UTC (in 22 h" in caught.value.user_message
    with pytest.raises(QuotaExceeded):
        await units.submit(ask("day-3"), now=reset_at - 1)
    after = await units.submit(ask("day-4"), now=reset_at + 1)
    assert after.created


async def test_cooldown_between_submits(units: JobQueue) -> None:
    await units.quotas.change("discord:user:u1", {"cooldown": 30}, actor="test")
    await units.submit(ask("cool-0"), now=T0)
    with pytest.raises(QuotaExceeded) as caught:
        await units.submit(ask("cool-1"), now=T0 + 10)
    assert caught.value.retry_after == pytest.approx(20)
    assert "wait 20 s" in caught.value.user_message
    assert (await units.submit(ask("cool-2"), now=T0 + 31)).created


async def test_concurrent_and_server_queue_limits(units: JobQueue) -> None:
    await units.quotas.change("discord:user:u1", {"concurrent": 2}, actor="test")
    await units.quotas.change("discord:server:g1", {"queue": 3}, actor="test")
    first = await units.submit(ask("c-0", server="g1"), now=T0)
    await units.submit(ask("c-1", server="g1"), now=T0)
    with pytest.raises(QuotaExceeded) as caught:
        await units.submit(ask("c-2", server="g1"), now=T0)
    assert "2 jobs queued or running" in caught.value.user_message
    await units.cancel(first.record.id)
    await units.submit(ask("c-3", server="g1"), now=T0)
    await units.submit(ask("c-4", user="u2", server="g1"), now=T0)
    with pytest.raises(QuotaExceeded) as caught:
        await units.submit(ask("c-5", user="u3", server="g1"), now=T0)
    assert "This server already has 3 jobs" in caught.value.user_message


async def test_fair_order_a_flooding_server_does_not_starve_another(
    units: JobQueue, consumer: Posted, start_workers: StartWorkers
) -> None:
    flood = [
        await units.submit(ask(f"a-{i}", user=f"a{i}", server="A", platform="web"))
        for i in range(10)
    ]
    late = await units.submit(ask("b-0", user="b", server="B", platform="web"))
    assert late.position is not None and late.position.position == 2
    await start_workers()
    done = [await wait_for_record(units.records, s.record.id, delivered) for s in [*flood, late]]
    started = sorted(done, key=lambda r: r.times[JobStatus.RUNNING])
    order = [r.request.source_id for r in started]
    # B's one job runs second, ahead of nine of A's ten.
    assert order.index("b-0") == 1, order


async def test_fair_order_never_makes_a_backlog_wait_on_the_clock(
    redis: ArqRedis, settings: Settings, catalog: Catalog
) -> None:
    """However long one server's backlog, every waiting job is due at once: the fair order
    only orders (a flood used to be spaced into the future and drained one job per spacing)."""
    spaced = make_settings(settings.effective_redis_url, settings.data_dir, fair_spacing_s=60.0)
    jobs = JobQueue(redis, spaced, unit_catalog(catalog))
    flood = [
        await jobs.submit(ask(f"f-{i}", user=f"f{i}", server="F", platform="web"))
        for i in range(40)
    ]
    other = await jobs.submit(ask("g-0", user="g", server="G", platform="web"))
    queue = other.record.queue
    now_ms = int(time.time() * 1000)
    due = [m.decode() for m in await redis.zrangebyscore(queue, "-inf", now_ms)]
    assert len(due) == 41 == await redis.zcard(queue)
    # G's first job goes right after the head; F's keep their order.
    assert due.index(other.record.id) == 1
    assert [d for d in due if d != other.record.id] == [s.record.id for s in flood]
