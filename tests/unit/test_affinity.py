"""The model-affinity chooser: resident models first, and the bound on what that costs others."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reelbot.worker.affinity import LOAD_GRACE_S, RECHECK_S, Peer, Waiting, choose
from reelbot.worker.candidates import peers_from


def jobs(*models: str | None, passed: dict[int, int] | None = None) -> list[Waiting]:
    marks = passed or {}
    return [Waiting(f"j{i}", m, marks.get(i)) for i, m in enumerate(models)]


def ids(waiting: list[Waiting]) -> list[str]:
    return [w.id for w in waiting]


def test_the_resident_model_goes_first_and_the_older_jobs_are_marked_passed() -> None:
    choice = choose(jobs("wan", "wan", "zimage", "wan"), {"zimage"}, now_ms=0, wait_s=30)
    assert ids(choice.take) == ["j2"]
    assert ids(choice.passed) == ["j0", "j1"]


def test_without_a_resident_model_or_with_wait_zero_it_is_arrival_order() -> None:
    waiting = jobs("wan", "zimage", "wan")
    assert ids(choose(waiting, set(), now_ms=0, wait_s=30, slots=2).take) == ["j0", "j1"]
    plain = choose(waiting, {"zimage"}, now_ms=0, wait_s=0)
    assert ids(plain.take) == ["j0"]
    assert plain.passed == []


def test_a_job_passed_over_for_wait_s_is_taken_first() -> None:
    waiting = jobs("wan", "zimage", passed={0: 1_000})
    assert ids(choose(waiting, {"zimage"}, now_ms=30_999, wait_s=30).take) == ["j1"]
    late = choose(waiting, {"zimage"}, now_ms=31_000, wait_s=30)
    assert ids(late.take) == ["j0"]
    assert late.passed == []


def test_overdue_jobs_go_oldest_first_then_resident_then_the_rest() -> None:
    waiting = jobs("a", "b", "c", "b", "c", passed={0: 0, 2: 0, 3: 50_000})
    choice = choose(waiting, {"b"}, now_ms=60_000, wait_s=30, slots=4)
    # j0 and j2 are overdue; j1 and j3 fit the card (j3's mark is recent); j4 waits.
    assert ids(choice.take) == ["j0", "j2", "j1", "j3"]
    assert ids(choice.passed) == []


def test_a_job_of_unknown_model_fits_any_card() -> None:
    assert ids(choose(jobs("wan", None), {"zimage"}, now_ms=0, wait_s=30).take) == ["j1"]


def test_a_new_job_that_needs_a_load_is_left_for_a_worker_with_its_model_for_a_moment() -> None:
    waiting = [Waiting("v", "wan", submitted_ms=10_000)]
    early = choose(waiting, {"zimage"}, now_ms=11_000, wait_s=30)
    assert early.take == [] and early.retry_at_ms == 10_000 + LOAD_GRACE_S * 1000
    assert ids(choose(waiting, {"zimage"}, now_ms=early.retry_at_ms, wait_s=30).take) == ["v"]
    # A job for the loaded model is taken at once, and arrival order never waits.
    assert ids(choose([*waiting, Waiting("i", "zimage")], {"zimage"}, now_ms=0, wait_s=30).take)
    assert ids(choose(waiting, {"zimage"}, now_ms=11_000, wait_s=0).take) == ["v"]


def test_marks_are_set_once() -> None:
    waiting = jobs("wan", "zimage", passed={0: 5_000})
    assert choose(waiting, {"zimage"}, now_ms=6_000, wait_s=30).passed == []


def _serve(arrivals: list[int], models: list[str], service_ms: int, wait_s: float) -> list[int]:
    """One worker, a card that holds one model, every run ``service_ms``: each job's start."""
    start = [0] * len(arrivals)
    marks: dict[int, int] = {}
    waiting: list[int] = []
    arrived, t, loaded = 0, 0, ""
    while arrived < len(arrivals) or waiting:
        if not waiting:
            t = max(t, arrivals[arrived])
        while arrived < len(arrivals) and arrivals[arrived] <= t:
            waiting.append(arrived)
            arrived += 1
        seen = [Waiting(str(i), models[i], marks.get(i), submitted_ms=arrivals[i]) for i in waiting]
        choice = choose(seen, {loaded} - {""}, now_ms=t, wait_s=wait_s)
        if choice.retry_at_ms is not None:  # left for a worker with the model: there is none
            assert not choice.take and choice.retry_at_ms > t
            upcoming = arrivals[arrived] if arrived < len(arrivals) else choice.retry_at_ms
            t = min(choice.retry_at_ms, upcoming)
            continue
        for job in choice.passed:
            marks[int(job.id)] = t
        (taken,) = choice.take
        job = int(taken.id)
        waiting.remove(job)
        start[job] = t
        t += service_ms
        loaded = models[job]
    return start


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 40_000), min_size=1, max_size=40),
    picks=st.lists(st.sampled_from(["zimage", "flux", "wan"]), min_size=40, max_size=40),
    service_ms=st.integers(500, 60_000),
    wait_s=st.floats(0, 120),
)
def test_no_job_waits_more_than_wait_s_grace_and_one_run_longer_than_in_arrival_order(
    gaps: list[int], picks: list[str], service_ms: int, wait_s: float
) -> None:
    arrivals = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    models = picks[: len(arrivals)]
    fifo = _serve(arrivals, models, service_ms, 0)
    affinity = _serve(arrivals, models, service_ms, wait_s)
    for job, (plain, preferred) in enumerate(zip(fifo, affinity, strict=True)):
        assert preferred - plain <= (wait_s + LOAD_GRACE_S) * 1000 + service_ms, f"job {job}"


@given(
    models=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=30),
    marks=st.lists(st.one_of(st.none(), st.integers(0, 100_000)), min_size=30, max_size=30),
    resident=st.sets(st.sampled_from(["a", "b", "c"])),
    slots=st.integers(1, 4),
)
def test_an_overdue_job_is_never_left_behind_a_younger_job(
    models: list[str | None], marks: list[int | None], resident: set[str], slots: int
) -> None:
    waiting = [Waiting(str(i), m, marks[i]) for i, m in enumerate(models)]
    choice = choose(waiting, resident, now_ms=100_000, wait_s=30, slots=slots)
    taken = {int(w.id) for w in choice.take}
    assert len(taken) == min(slots, len(waiting))
    overdue = {
        i for i, mark in enumerate(marks[: len(models)]) if mark is not None and mark <= 70_000
    }
    for job in overdue - taken:
        assert all(other < job for other in taken), "an overdue job was left behind a younger one"
    for job in choice.passed:
        assert job.passed_at_ms is None
        assert int(job.id) < max(taken)
        assert int(job.id) not in taken


# -- peers: another process's worker, as its heartbeat tells -------------------------------------

WAN_FREE_SOON = Peer(frozenset({"wan"}), free_at_ms=40_000)


def test_a_job_that_needs_a_load_is_left_for_a_peer_with_its_model_free_in_time() -> None:
    waiting = [Waiting("v", "wan", submitted_ms=0), Waiting("i", "zimage", submitted_ms=1_000)]
    # Deadline: now (10 s) + wait (30 s) + the 20 s load it would cost here; the peer: 40 s.
    choice = choose(
        waiting, {"zimage"}, now_ms=10_000, wait_s=30, peers=[WAN_FREE_SOON], load_s={"wan": 20}
    )
    assert ids(choice.take) == ["i"]
    assert ids(choice.passed) == ["v"]  # leaving it starts its clock, as passing it over does
    alone = choose(
        waiting[:1], {"zimage"}, now_ms=10_000, wait_s=30, peers=[WAN_FREE_SOON], load_s={"wan": 20}
    )
    assert alone.take == [] and ids(alone.passed) == ["v"]
    assert alone.retry_at_ms == 40_000  # look again when the peer should have taken it


def test_a_peer_busy_past_the_deadline_or_without_the_model_does_not_hold_the_job() -> None:
    waiting = [Waiting("v", "wan", submitted_ms=0)]
    late = Peer(frozenset({"wan"}), free_at_ms=70_001)  # past 10 + 30 + 30 s
    other = Peer(frozenset({"zimage"}), free_at_ms=0)
    unknown = Peer(frozenset({"wan"}), free_at_ms=None)
    for peer in (late, other, unknown):
        choice = choose(
            waiting, {"zimage"}, now_ms=10_000, wait_s=30, peers=[peer], load_s={"wan": 30}
        )
        assert ids(choice.take) == ["v"], peer
    # The load time widens the deadline: without it, a peer free at 45 s is too late.
    at_45 = [Peer(frozenset({"wan"}), free_at_ms=45_000)]
    assert ids(choose(waiting, {"zimage"}, now_ms=10_000, wait_s=30, peers=at_45).take) == ["v"]
    kept = choose(waiting, {"zimage"}, now_ms=10_000, wait_s=30, peers=at_45, load_s={"wan": 20})
    assert kept.take == []


def test_a_job_is_left_only_for_a_peer_that_serves_its_queue() -> None:
    waiting = [Waiting("v", "wan", queue="video", submitted_ms=0)]
    images_only = [Peer(frozenset({"wan"}), 0, frozenset({"image"}))]
    both = [Peer(frozenset({"wan"}), 0, frozenset({"image", "video"}))]
    kwargs = {"now_ms": 0, "wait_s": 30, "grace_s": 0}
    assert ids(choose(waiting, {"zimage"}, peers=images_only, **kwargs).take) == ["v"]  # type: ignore[arg-type]
    assert choose(waiting, {"zimage"}, peers=both, **kwargs).take == []  # type: ignore[arg-type]


def test_with_peer_information_there_is_no_load_grace() -> None:
    waiting = [Waiting("v", "wan", submitted_ms=10_000)]
    choice = choose(waiting, {"zimage"}, now_ms=10_500, wait_s=30, grace_s=0, peers=[])
    assert ids(choice.take) == ["v"]


def test_an_overdue_job_waits_for_the_peer_only_until_its_deadline() -> None:
    # Marked at 0: overdue at 30 s; its deadline is 30 s + the 20 s load it would cost here.
    waiting = [Waiting("v", "wan", passed_at_ms=0), Waiting("i", "zimage")]
    peer = [Peer(frozenset({"wan"}), free_at_ms=45_000)]
    kwargs = {"wait_s": 30, "peers": peer, "load_s": {"wan": 20.0}}
    # The peer starts it at 45 s; loading it here at 31 s would start it at 51 s.
    assert ids(choose(waiting, {"zimage"}, now_ms=31_000, **kwargs).take) == ["i"]  # type: ignore[arg-type]
    # At the deadline (the peer is late): whoever is free takes it, before younger jobs.
    assert ids(choose(waiting, {"zimage"}, now_ms=50_000, **kwargs).take) == ["v"]  # type: ignore[arg-type]


@given(
    models=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=30),
    marks=st.lists(st.one_of(st.none(), st.integers(0, 100_000)), min_size=30, max_size=30),
    resident=st.sets(st.sampled_from(["a", "b", "c"]), min_size=1),
    peers=st.lists(
        st.builds(
            Peer,
            st.frozensets(st.sampled_from(["a", "b", "c"])),
            st.one_of(st.none(), st.integers(0, 200_000)),
        ),
        max_size=3,
    ),
    load_ms=st.integers(0, 40_000),
    slots=st.integers(1, 4),
)
def test_a_job_is_left_only_for_a_peer_that_starts_it_before_its_deadline(
    models: list[str | None],
    marks: list[int | None],
    resident: set[str],
    peers: list[Peer],
    load_ms: int,
    slots: int,
) -> None:
    now, wait_ms = 100_000, 30_000
    waiting = [Waiting(str(i), m, marks[i]) for i, m in enumerate(models)]
    load_s = {m: load_ms / 1000 for m in "abc"}
    choice = choose(
        waiting, resident, now_ms=now, wait_s=30, slots=slots, peers=peers, load_s=load_s
    )
    taken = {int(w.id) for w in choice.take}
    assert len(taken) <= min(slots, len(waiting))
    passed = {int(w.id) for w in choice.passed}

    def deadline(i: int) -> int:
        mark = marks[i]
        return (now if mark is None else mark) + wait_ms + load_ms

    def held_for_a_peer(i: int) -> bool:
        model = models[i]
        return (
            model is not None
            and model not in resident
            and now < deadline(i)
            and any(
                model in p.resident and p.free_at_ms is not None and p.free_at_ms < deadline(i)
                for p in peers
            )
        )

    for i in range(len(models)):
        if i in taken:
            continue
        if len(taken) < slots:
            # Slots to spare: a job not taken is left for a peer, and its clock runs from now
            # on if it had not started.
            assert held_for_a_peer(i), f"job {i} is neither taken nor held for a peer"
            assert marks[i] is not None or i in passed
        elif not held_for_a_peer(i):
            # Not taken for want of slots: every taken job ranks before it.
            overdue = marks[i] is not None and now - marks[i] >= wait_ms  # type: ignore[operator]
            if overdue:
                assert all(j < i for j in taken if not held_for_a_peer(j)), "overdue left behind"
    for job in choice.passed:
        assert job.passed_at_ms is None and int(job.id) not in taken


def test_peers_are_read_from_the_heartbeats_one_per_gpu_not_counting_this_one() -> None:
    here = ("host-a", 1)
    beats = [
        {"queue": "img", "host": "host-a", "pid": 1, "gpu": "mine", "resident": ["zimage"]},
        {"queue": "img", "gpu": "g2", "resident": ["wan"], "free_at": 12.5, "load_s": {"wan": 19}},
        {
            "queue": "vid",
            "gpu": "g2",
            "resident": ["wan"],
            "free_at": 12.5,
            "load_s": {"wan": 21},
            "run_s": {"wan": 58},
        },
        {"queue": "other", "gpu": "g3", "resident": ["flux"], "free_at": 0},
        {"queue": "img", "gpu": "g4", "resident": ["flux"], "free_at": None},
    ]
    peers = peers_from(beats, "mine", {"img", "vid"}, here)
    assert peers.known == [
        Peer(frozenset({"wan"}), 12_500, frozenset({"img", "vid"})),
        Peer(frozenset({"flux"}), None, frozenset({"img"})),
    ]
    assert peers.load_s == {"wan": 21.0} and peers.run_s == {"wan": 58.0} and not peers.blind
    # A worker of another process that does not say what it holds: the load grace applies.
    older = {"queue": "img", "host": "host-b", "pid": 7}
    assert peers_from([*beats, older], "mine", {"img"}, here).blind


# -- run times: what a run here or on a peer keeps the cards busy --------------------------------

RUNS = {"zimage": 2.0, "wan": 60.0}


def test_a_job_nobody_has_the_model_for_is_not_passed_over_for_a_run_past_its_wait() -> None:
    # Both cards hold Wan, the peer is in a video for 50 s more; the image waits behind a video.
    waiting = [Waiting("i", "zimage", submitted_ms=0), Waiting("v", "wan", submitted_ms=1_000)]
    busy = [Peer(frozenset({"wan"}), free_at_ms=60_000)]
    kwargs = {"now_ms": 10_000, "wait_s": 30, "grace_s": 0, "peers": busy, "load_s": {"zimage": 20}}
    # Without run times the video goes first and the image waits its 60 s, then a load.
    assert ids(choose(waiting, {"wan"}, **kwargs).take) == ["v"]  # type: ignore[arg-type]
    # In arrival order it would be loaded now: with run times, it is.
    stranded = choose(waiting, {"wan"}, run_s=RUNS, **kwargs)  # type: ignore[arg-type]
    assert ids(stranded.take) == ["i"] and stranded.passed == []


def test_a_job_is_passed_over_for_a_short_run_or_when_someone_serves_it_in_time() -> None:
    waiting = [Waiting("v", "wan", submitted_ms=0), Waiting("i", "zimage", submitted_ms=1_000)]
    kwargs = {"now_ms": 10_000, "wait_s": 30, "grace_s": 0, "run_s": RUNS}
    # A 2 s image ends long before the video's wait is up: the image goes first.
    peer = [Peer(frozenset({"zimage"}), free_at_ms=100_000)]
    assert ids(choose(waiting, {"zimage"}, peers=peer, **kwargs).take) == ["i"]  # type: ignore[arg-type]
    # A video ahead of an image: a peer free within the image's wait serves it, so it may wait.
    images = [Waiting("i", "zimage", submitted_ms=0), Waiting("v", "wan", submitted_ms=1_000)]
    soon = [Peer(frozenset({"wan"}), free_at_ms=30_000)]
    assert ids(choose(images, {"wan"}, peers=soon, **kwargs).take) == ["v"]  # type: ignore[arg-type]
    # Without peer information nothing is known of the others: the old rule holds.
    assert ids(choose(images, {"wan"}, **kwargs).take) == ["v"]  # type: ignore[arg-type]


def test_past_its_deadline_a_job_still_goes_to_a_peer_that_starts_it_before_a_load_here() -> None:
    # Overdue and past its deadline (marked at 0: 30 s + the 20 s load); the peer holding Wan
    # ends in 5 s, a load here would take 20 s.
    waiting = [Waiting("v", "wan", passed_at_ms=0), Waiting("i", "zimage")]
    peer = [Peer(frozenset({"wan"}), free_at_ms=55_000)]
    kwargs = {"now_ms": 50_000, "wait_s": 30, "peers": peer, "load_s": {"wan": 20.0}}
    assert ids(choose(waiting, {"zimage"}, **kwargs).take) == ["v"]  # type: ignore[arg-type]
    left = choose(waiting, {"zimage"}, run_s=RUNS, **kwargs)  # type: ignore[arg-type]
    assert ids(left.take) == ["i"]
    # A second video, behind the first on that peer (60 s more): a load here starts it sooner.
    queued = [waiting[0], Waiting("w", "wan", 0), waiting[1]]
    assert ids(choose(queued, {"zimage"}, run_s=RUNS, **kwargs).take) == ["w"]  # type: ignore[arg-type]
    # Without run times, whoever is free takes the oldest, as before.
    assert ids(choose(queued, {"zimage"}, **kwargs).take) == ["v"]  # type: ignore[arg-type]


def test_a_left_job_is_looked_at_again_after_a_recheck_not_at_once() -> None:
    waiting = [Waiting("v", "wan", passed_at_ms=0)]
    peer = [Peer(frozenset({"wan"}), free_at_ms=50_100)]
    choice = choose(
        waiting, {"zimage"}, now_ms=50_000, wait_s=30, peers=peer, load_s={"wan": 20}, run_s=RUNS
    )
    assert choice.take == [] and choice.retry_at_ms == 50_000 + RECHECK_S * 1000


def test_a_jobs_run_is_its_cost_times_its_models_seconds_per_credit() -> None:
    # The card holds Wan, whose last call took 60 s; an image nobody holds waits before a video.
    def take(cost: float, per_credit_s: dict[str, float] | None) -> list[str]:
        waiting = [Waiting("i", "zimage"), Waiting("v", "wan", cost=cost)]
        busy = [Peer(frozenset({"wan"}), free_at_ms=60_000)]
        choice = choose(
            waiting,
            {"wan"},
            now_ms=0,
            wait_s=30,
            grace_s=0,
            peers=busy,
            run_s={"wan": 60.0},
            per_credit_s=per_credit_s,
        )
        return ids(choice.take)

    # A short video (1 credit at 10 s a credit) ends within the image's wait: it goes first.
    assert take(1.0, {"wan": 10.0}) == ["v"]
    # A long one (5 credits: 50 s) would outlast it, and so would the last call's 60 s.
    assert take(5.0, {"wan": 10.0}) == ["i"]
    assert take(1.0, None) == ["i"]
