"""A platform process's delivery consumer, alone in a process the tests can SIGKILL.

``python consumer_proc.py URL PLATFORM LOG DELAY_S``: each post waits ``DELAY_S`` (an upload
in flight), then appends ``posted <idempotency key>`` to ``LOG``; ``start <key>`` marks a post
begun.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from reelbot.config import Settings
from reelbot.queue.delivery import Delivery, DeliveryConsumer
from reelbot.store.connection import connect


async def main(url: str, platform: str, log: Path, delay_s: float) -> None:
    settings = Settings(redis_url=url, models="tiny", heartbeat_s=0.5, dead_worker_s=3.0)

    def write(line: str) -> None:
        with log.open("a") as out:
            out.write(line + "\n")

    async def post(delivery: Delivery) -> str:
        write(f"start {delivery.idempotency_key}")
        await asyncio.sleep(delay_s)
        write(f"posted {delivery.idempotency_key}")
        return "m"

    client = connect(url)
    consumer = DeliveryConsumer(client, platform, post, settings=settings)
    write("ready")
    await consumer.async_run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
