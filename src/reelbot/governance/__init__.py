"""What server admins and operators govern: quotas, the content-policy store, the audit log and
the ``/admin`` words.

- ``quotas``      ``QuotaBook``: atomic reserve/refund, scopes, the fair order.
- ``policy``      ``PolicyStore``: per-server content policy in Redis.
- ``audit``       the append-only audit log.
- ``admin``       ``run_admin``: ``/admin quota …``, ``audit``, ``status`` as words.
"""
