"""``RedisCollector``: queue depth and live workers per queue, read from Redis when Prometheus
scrapes (``metrics.serve`` registers it for the processes that ask)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from reelbot.store import keys

log = logging.getLogger(__name__)

__all__ = ["RedisCollector"]


class RedisCollector(Collector):
    """Queue depth (ZCARD) and live workers per queue, read from Redis at scrape time."""

    def __init__(self, url: str, queues: Sequence[str], *, timeout_s: float = 2.0) -> None:
        # A plain blocking client: the HTTP server calls collect() in its own thread.
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.queues = list(dict.fromkeys(queues))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """One gauge family per reading; nothing at all when Redis does not answer."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.zcard(queue)
            pipe.smembers(keys.WORKERS)
            *depths, members = pipe.execute()
            ids = sorted(m.decode() for m in members)
            raws: list[Any] = (
                self.client.mget(  # type: ignore[assignment]
                    [keys.worker(i) for i in ids]
                )
                if ids
                else []
            )
        except (redis.RedisError, OSError) as exc:
            # A failed scrape shows as missing series (an alert on absent()), not as zero.
            log.warning("metrics: cannot read Redis: %s", exc)
            return
        depth = GaugeMetricFamily(
            "reelbot_queue_depth", "Jobs waiting or running", labels=["queue"]
        )
        for queue, n in zip(self.queues, depths, strict=True):
            depth.add_metric([queue], float(n))
        yield depth

        live: dict[str, int] = dict.fromkeys(self.queues, 0)
        for raw in raws:
            if raw is not None:
                queue = str(json.loads(raw).get("queue", ""))
                live[queue] = live.get(queue, 0) + 1
        workers = GaugeMetricFamily(
            "reelbot_workers_live", "Workers whose heartbeat has not lapsed", labels=["queue"]
        )
        for queue, n in live.items():
            workers.add_metric([queue], float(n))
        yield workers
