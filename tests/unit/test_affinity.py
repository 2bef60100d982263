"""The model-affinity chooser: resident models first, and the bound on what that costs others."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reelbot.worker.affinity import LOAD_GRACE_S, Waiting, choose


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
