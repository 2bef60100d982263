"""The job queue client and the delivery consumer.

- ``submit``      ``JobQueue``: submit (dedup by platform id, global cap → ``Busy``), get,
                  position/ETA, user's jobs, cancel.
- ``delivery``    ``DeliveryConsumer`` (hosted by each platform process), ``enqueue_delivery``.
- ``budgets``     upload byte budgets per platform.
- ``ops``         rich tables for ``reelbot jobs``.
"""
