"""The metrics module: collectors that fail quietly, an endpoint that is off unless asked."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from reelbot import metrics
from reelbot.runtime.server import free_port
from reelbot.store.readings import RedisCollector


def test_an_unreachable_redis_gives_no_series_rather_than_zeros() -> None:
    collector = RedisCollector(
        f"redis://127.0.0.1:{free_port()}/0", ["reelbot:image"], timeout_s=0.5
    )
    assert list(collector.collect()) == []


def test_gpu_memory_is_absent_without_cuda() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert list(metrics.GpuMemoryCollector().collect()) == []


def test_the_endpoint_is_off_without_a_port_and_serves_the_registry_with_one() -> None:
    assert metrics.serve(None) is None
    metrics.FAILURES.labels("timeout").inc()
    port = metrics.serve(0, host="127.0.0.1")
    assert port is not None and port > 0
    assert metrics.serve(0, host="127.0.0.1") == port  # one endpoint per process
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'reelbot_job_failures_total{code="timeout"}' in body
