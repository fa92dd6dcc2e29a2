"""The worker threads of add and get: a pool that leaves no queued work behind when its body ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor


@contextlib.contextmanager
def worker_pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    """A ``ThreadPoolExecutor`` that, however its body ends, drops the tasks not yet started and waits
    for the running ones: after an error (or Ctrl-C) the chunks queued ahead are not read, sealed or
    opened for nothing. A body that consumed every result has nothing left to drop."""
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            yield pool
        finally:
            pool.shutdown(cancel_futures=True)
