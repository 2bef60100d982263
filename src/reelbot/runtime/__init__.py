"""Process lifecycles: ``reelbot worker``, ``reelbot up``, the embedded server, health checks.

- ``lifecycle``   ``run_worker`` and ``run_up``: process lifecycles and signals.
- ``server``      ``RedisServer``: a private Valkey/redis-server with AOF.
- ``health``      ``reelbot health``.
"""
