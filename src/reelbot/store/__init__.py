"""Redis: key names, the connection, JSON for arq, job records, results, progress events,
estimates and the leased arq worker.

- ``keys``, ``connection``, ``serializer``: key names, the Redis client, JSON for arq.
- ``records``     ``JobRecord`` (the lifecycle, as JSON in Redis) and ``RecordStore`` (CAS).
- ``results``     ``ResultStore`` / ``RedisResultStore``; ``store_input`` for input images.
- ``progress``    ``ProgressEvent``, the throttled ``ProgressPublisher``, ``ProgressSubscription``.
- ``estimates``   moving averages per model, ``queue_position``, job timeouts.
- ``leases``      ``QueueWorker``: arq with wake-on-submit, leased jobs, heartbeats.
"""
