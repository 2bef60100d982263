"""The GPU worker: claiming (and batching) jobs, the pipeline slot, outcomes, encode and deliver.

- ``worker``      ``GenerationWorker`` and ``serve_generation``: one pipeline thread per process.
- ``claiming``    ``claim_batch``: jobs that can share one pipeline call.
- ``slot``        ``GpuSlot``: which job holds the pipeline thread, when to fetch the next.
"""
