"""Where jobs meet Redis: submit, work, deliver, report progress, survive crashes.

Modules, each named for what it holds:

- ``submit``      ``JobQueue``: submit (dedup by platform id, global cap → ``Busy``), get,
                  position/ETA, user's jobs, cancel.
- ``records``     ``JobRecord`` (the lifecycle, as JSON in Redis) and ``RecordStore`` (CAS).
- ``worker``      ``GenerationWorker`` and ``serve_generation``: one pipeline thread per process.
- ``gpu``         ``GpuSlot``: which job holds the pipeline thread, when to fetch the next.
- ``liveness``    ``QueueWorker``: arq with wake-on-submit, leased jobs, heartbeats.
- ``delivery``    ``DeliveryConsumer`` (hosted by each platform process), ``enqueue_delivery``.
- ``progress``    ``ProgressEvent``, the throttled ``ProgressPublisher``, ``ProgressSubscription``.
- ``storage``     ``ResultStore`` / ``RedisResultStore``; ``store_input`` for input images.
- ``budgets``     upload byte budgets per platform.
- ``estimates``   moving averages per model, ``queue_position``, job timeouts.
- ``server``      ``RedisServer``: a private Valkey/redis-server with AOF.
- ``service``     ``run_worker`` and ``run_up``: process lifecycles and signals.
- ``ops``         rich tables for ``reelbot jobs``.
- ``connection``, ``serializer``, ``keys``: the Redis client, JSON for arq, key names.
"""
