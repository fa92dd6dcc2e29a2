"""A writer session on the block store: framed blocks appended to packs of its own, indexed at commit.

The pack format lives here too (``PACK_MAGIC``, ``FRAME``); the locking rules a session keeps with gc are
in node/store/blockstore.py's docstring.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from node.store.errors import RepoError
from node.store.fsutil import WRITEBACK_STEP, full_error, is_full, start_writeback, write_all
from node.store.lease import Lease
from protocol.cid import cid_digest, verify_block
from protocol.manifest import MAX_BLOCK as MAX_BLOCK  # (the store re-exports it)

if TYPE_CHECKING:
    from node.store.blockstore import BlockStore

PACK_MAX = 1 << 30  # a writer starts a new pack past this size, so gc compacts in bounded pieces
PACK_MAGIC = b"SBPACK1\n"  # a framed pack's first bytes (an older pack starts with ciphertext)
FRAME = struct.Struct(">4sI32s")  # before each block: FRAME_MAGIC, u32be(length), sha2-256 digest
FRAME_MAGIC = b"SBF1"


def frame(digest: bytes, length: int) -> bytes:
    return FRAME.pack(FRAME_MAGIC, length, digest)


def _pack_number(path: Path) -> int | None:
    stem, dot, ext = path.name.partition(".")
    return int(stem) if dot and ext == "pack" and stem.isdigit() else None


class PackWriter:
    """One writer session: appends blocks to packs of its own; :meth:`commit` makes them visible.

    ``put`` may be called from several threads at once: offsets are reserved under a lock and the
    bytes written with ``pwrite`` outside it. Closing without commit removes what was written.

    Each pack is flocked shared for the whole session, so gc leaves it alone (the store's docstring).
    With a ``lease``, every block ``put`` is given (stored, or found stored) is leased, and the lease
    is flushed at each commit and before the packs are unlocked at close.
    """

    def __init__(self, store: BlockStore, lease: Lease | None = None, *, counted: bool = True) -> None:
        self.store = store
        self.lease = lease
        self._quota = store.quota if counted else None
        self._charged = 0  # bytes charged to the storage limit, not yet committed
        self._closed = False
        self._lock = threading.Lock()
        self._packs: list[tuple[int, int]] = []  # (number, fd) in order of creation
        self._end = 0
        self._committed_end: dict[int, int] = {}
        self._pending: dict[bytes, tuple[int, int, int]] = {}  # written, not yet committed
        self._reserved: set[bytes] = set()  # every digest this session has taken on
        self.written = 0  # blocks this session added
        self._new_pack()
        if self._quota is not None:
            self._quota.session(True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _new_pack(self) -> None:
        # random numbers: never reused, so a cached reader can never open another pack by mistake
        while True:
            number = secrets.randbits(62)
            try:
                fd = os.open(self.store.pack_path(number), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                if is_full(exc):
                    raise full_error(self.store.root) from None
                raise
            # gc may have found the empty file before our lock: then it holds it (and deletes it), or
            # has deleted it already; either way we make another (never waiting: this may run in trio)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink > 0:
                    break
            except BlockingIOError:
                pass
            os.close(fd)
        try:
            write_all(fd, PACK_MAGIC, 0)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.store.pack_path(number).unlink()
            if is_full(exc):
                raise full_error(self.store.root) from None
            raise
        self._packs.append((number, fd))
        self._end = len(PACK_MAGIC)
        self._flushed = 0

    def put(self, cid: bytes, block: bytes, *, verify: bool = True, force: bool = False) -> bool:
        """Append ``block`` unless the store or this session has it already. Returns True if appended.

        ``verify=False`` only where the caller computed ``cid`` from these very bytes (sealing).
        ``force=True`` skips the store's index lookup: for compaction, which rewrites blocks the store
        holds, and for blocks just sealed under a fresh random key, which it cannot hold (the lookup
        was 15% of sealing's time). Commit indexes with INSERT OR IGNORE, so a block the store held
        after all keeps its row and the new copy is only unreferenced bytes, which gc removes.
        """
        digest = cid_digest(cid)
        if len(block) > MAX_BLOCK:
            raise RepoError("refusing to store a block larger than the maximum block size")
        if verify:
            verify_block(cid, block)
        if self.lease is not None:  # before the lookup: a block found stored is leased too
            self.lease.add((cid,))
        if not force and self.store.has(cid):
            return False
        with self._lock:
            if digest in self._reserved:
                return False
            if self._quota is not None:
                self._quota.charge(len(block))
                self._charged += len(block)
            self._reserved.add(digest)
            if self._end + FRAME.size + len(block) > PACK_MAX and self._end > len(PACK_MAGIC):
                self._new_pack()
            number, fd = self._packs[-1]
            offset = self._end + FRAME.size  # where the block lies: its frame comes first
            self._end = offset + len(block)
            step = offset // WRITEBACK_STEP
            flush = step > self._flushed
            if flush:
                self._flushed = step
        try:
            write_all(fd, frame(digest, len(block)), offset - FRAME.size)
            write_all(fd, block, offset)
            if flush:  # start writing the previous step to disk while sealing goes on
                start_writeback(fd, (step - 1) * WRITEBACK_STEP, WRITEBACK_STEP)
        except OSError as exc:
            with self._lock:
                self._reserved.discard(digest)
                if self._quota is not None:
                    self._charged -= len(block)
                    self._quota.settle(0, len(block))
            if is_full(exc):
                raise full_error(self.store.root) from None
            raise
        with self._lock:  # only now may a commit index it: its bytes are all written
            self._pending[digest] = (number, offset, len(block))
        return True

    def commit(self, *, replace: bool = False) -> None:
        """fsync this session's packs, then index, in one transaction, every block whose ``put`` has
        returned. Safe while other threads are putting: blocks still being written wait for the next."""
        with self._lock:
            pending = self._pending
            self._pending = {}
            ends = {
                number: max((o + n for p, o, n in pending.values() if p == number), default=0)
                for number, _ in self._packs
            }
        try:
            for _number, fd in self._packs:
                os.fsync(fd)
        except OSError as exc:
            if is_full(exc):
                raise full_error(self.store.root) from None
            raise
        if self.lease is not None:
            self.lease.flush()
        rows = [(digest, p, o, n) for digest, (p, o, n) in pending.items()]
        self.store._index(rows, replace=replace)
        self.written += len(rows)
        if self._quota is not None:
            size = sum(n for _d, _p, _o, n in rows)
            with self._lock:
                self._charged -= size
            self._quota.settle(size, 0)
        for number, end in ends.items():
            self._committed_end[number] = max(end, self._committed_end.get(number, 0))

    def close(self) -> None:
        """End the session: drop what was not committed (empty packs are removed), then unlock.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.lease is not None:
                self.lease.flush()  # before the unlock: from here on the lease keeps what the packs hold
        finally:
            for number, fd in self._packs:
                end = self._committed_end.get(number, 0)
                path = self.store.pack_path(number)
                with contextlib.suppress(OSError):
                    if end == 0:
                        path.unlink()
                    else:
                        os.ftruncate(fd, end)
                os.close(fd)
            self._packs = []
            self._pending = {}
            if self._quota is not None:
                with self._lock:
                    dropped, self._charged = self._charged, 0
                self._quota.settle(0, dropped)
                self._quota.session(False)
