"""``storage_limit`` (REPO/config.toml), enforced as blocks are written, not only when an add or fetch starts.

The daemon (and the temporary node of a ``get`` without one) gives the block store a :class:`Quota`; every
counted writer session charges each block it is about to write, and the one that would take the store
past the limit fails with :class:`StorageLimitError` before writing it. The session then unwinds as any
failed session does: nothing it left uncommitted is kept, no pin is written. What counts: the bytes of
blocks the index holds (what ``status`` shows as stored), plus what this process's writers hold
uncommitted; frames and pack headers (40 bytes a block) are not counted. Other processes' writes are
seen when a session opens with no other one open (the index is counted again then), and after gc.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from node.store.errors import StorageLimitError


class Quota:
    """At most ``limit`` bytes of blocks; ``count()`` says how many the index holds now."""

    def __init__(self, limit: int, count: Callable[[], int]) -> None:
        self.limit = limit
        self._count = count
        self._lock = threading.Lock()
        self._used: int | None = None  # bytes indexed, as last counted (None: count again)
        self._charged = 0  # bytes writers charged and have neither committed nor dropped
        self._sessions = 0

    def session(self, opened: bool) -> None:
        with self._lock:
            self._sessions += 1 if opened else -1
            if opened and self._sessions == 1:
                self._used = None  # another process may have added or collected since: count again

    def recount(self) -> None:
        with self._lock:
            self._used = None

    def charge(self, size: int) -> None:
        """Take ``size`` bytes, or raise StorageLimitError (one line, with the limit) if they do not fit."""
        with self._lock:
            if self._used is None:
                self._used = self._count()
            if self._used + self._charged + size > self.limit:
                raise StorageLimitError(
                    f"storage limit reached: the repo may hold {self.limit} bytes of blocks (storage_limit"
                    f" in config.toml) and holds {self._used}; this needs more, so nothing of it was kept:"
                    " 'sealbox rm' and 'gc' free room, or raise the limit"
                )
            self._charged += size

    def settle(self, committed: int, dropped: int) -> None:
        """A writer committed ``committed`` of the bytes it was charged and dropped ``dropped``."""
        with self._lock:
            self._charged = max(0, self._charged - committed - dropped)
            if self._used is not None:
                self._used += committed
