"""Prometheus metrics: one registry per process, served over HTTP when a port is set.

The counters and histograms live at module level so that a metric increment is one line
wherever the event happens. Queue depth and live workers are read from Redis at scrape time
(a collector), so every process that serves metrics reports the same numbers and an
autoscaler can read any of them. GPU memory is read from torch only when the process has
already imported it: the chat adapters never load torch.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

__all__ = [
    "REGISTRY",
    "GpuMemoryCollector",
    "serve",
]

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's registry (not prometheus-client's global one, which adds process noise)."""

# Seconds: from a 0.1 s tiny image to a 30 min video.
_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

SUBMISSIONS = Counter(
    "reelbot_submissions",
    "Submit calls, duplicates included",
    ["platform", "task"],
    registry=REGISTRY,
)
ADMISSIONS = Counter(
    "reelbot_admissions", "Jobs that entered a queue", ["platform", "task"], registry=REGISTRY
)
REFUSALS = Counter(
    "reelbot_refusals",
    "Submissions refused, by reason (busy, a quota limit, or a user error code)",
    ["platform", "reason"],
    registry=REGISTRY,
)
WAIT_SECONDS = Histogram(
    "reelbot_job_wait_seconds",
    "Seconds from submit to the pipeline call starting",
    ["model", "task"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    "reelbot_job_run_seconds",
    "Seconds of the pipeline call (model loaded)",
    ["model", "task"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
FAILURES = Counter(
    "reelbot_job_failures", "Jobs that ended failed, by error code", ["code"], registry=REGISTRY
)
DELIVERIES = Counter(
    "reelbot_deliveries",
    "Posts made by a platform's delivery consumer",
    ["platform", "kind"],
    registry=REGISTRY,
)
DELIVERY_RETRIES = Counter(
    "reelbot_delivery_retries",
    "Post attempts that will be retried (rate limits, transient errors)",
    ["platform", "reason"],
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "reelbot_worker_heartbeats",
    "Heartbeats written by this process's workers",
    ["queue", "kind"],
    registry=REGISTRY,
)
LAST_HEARTBEAT = Gauge(
    "reelbot_worker_last_heartbeat_timestamp_seconds",
    "When this process's worker last wrote its heartbeat",
    ["queue", "kind"],
    registry=REGISTRY,
)


class GpuMemoryCollector(Collector):
    """CUDA memory allocated and reserved per device, when this process has loaded torch."""

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Nothing when torch is not imported here or no CUDA device is present."""
        torch: Any = sys.modules.get("torch")
        if torch is None:
            return
        try:
            if not torch.cuda.is_available() or not torch.cuda.is_initialized():
                return
            count = torch.cuda.device_count()
            allocated = GaugeMetricFamily(
                "reelbot_gpu_memory_allocated_bytes", "Memory held by tensors", labels=["device"]
            )
            reserved = GaugeMetricFamily(
                "reelbot_gpu_memory_reserved_bytes",
                "Memory held by torch's caching allocator",
                labels=["device"],
            )
            for index in range(count):
                allocated.add_metric([str(index)], float(torch.cuda.memory_allocated(index)))
                reserved.add_metric([str(index)], float(torch.cuda.memory_reserved(index)))
        except Exception as exc:  # a broken driver must not break the scrape
            log.warning("metrics: cannot read GPU memory: %s", exc)
            return
        yield allocated
        yield reserved


_served: dict[str, Any] = {}
_lock = threading.Lock()


def serve(
    port: int | None,
    *,
    host: str = "0.0.0.0",
    collectors: Mapping[str, Callable[[], Collector]] | None = None,
    gpu: bool = False,
) -> int | None:
    """Serve ``/metrics`` on ``port`` (None: off) in a daemon thread; returns the bound port.

    ``collectors`` are made and registered once per name (the caller's readings, such as
    ``store.readings.RedisCollector``). A second call in the same process (``reelbot up`` runs
    several parts) adds its collectors and returns the port already served.
    """
    if port is None:
        return None
    with _lock:
        for name, make in (collectors or {}).items():
            if name not in _served:
                _served[name] = make()
                REGISTRY.register(_served[name])
        if gpu and "gpu" not in _served:
            _served["gpu"] = GpuMemoryCollector()
            REGISTRY.register(_served["gpu"])
        if "port" not in _served:
            server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
            _served["port"] = server.server_port
            log.info("metrics on http://%s:%d/metrics", host, server.server_port)
        bound: int = _served["port"]
        return bound


def observe_since(histogram: Histogram, since: float, *labels: str) -> None:
    """Observe the seconds from the wall-clock time ``since`` to now (never negative)."""
    histogram.labels(*labels).observe(max(0.0, time.time() - since))
