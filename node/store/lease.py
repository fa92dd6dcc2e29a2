"""Leases: what an operation still running (a fetch) has stored or relies on, kept from gc until it pins.

A fetch stores blocks over several rounds and pins the root only at the end; until then no pin lists
its blocks. While a writer session is open its packs are protected by a shared flock (see
``PackWriter``); a lease protects the rest: blocks committed in earlier rounds, and blocks the store
held already and the fetch reuses. Layout::

    REPO/leases/<random>.lease   raw 36-byte CIDs back to back, appended as the operation goes

The holder keeps an exclusive flock on its lease file for the lease's life. ``gc`` keeps every CID of
a lease it cannot flock (a live one), and deletes a lease it can (its holder ended or died: the kernel
drops the flock with the process, so a crash never leaves blocks leased forever).

What this relies on: a CID is appended (``os.write`` on the file, visible at once to every process on
the machine through the page cache) before the protection it takes over ends, i.e. before the writer
session's packs are unlocked (``PackWriter.close`` flushes its lease first). ``gc`` locks idle packs
first, then reads the leases, then the pins; the holder writes its pin before it drops the lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from node.store.fsutil import full_error, is_full, open_if_present
from protocol.cid import CID_LEN, check_cid
from protocol.errors import CidError

SUFFIX = ".lease"
_FLUSH_AT = 64 * CID_LEN  # bytes buffered before a write (a flush also comes at every commit and close)


def _open_locked(directory: Path) -> tuple[Path, int]:
    """A new lease file, flocked exclusively and still linked (gc may take or delete an unlocked file
    between our create and our flock: then we make another)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    while True:
        path = directory / f"{secrets.token_hex(16)}{SUFFIX}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            if is_full(exc):
                raise full_error(directory.parent) from None
            raise
        try:  # never waiting (this may run in the trio thread): a file gc holds is one it deletes
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink > 0:
                return path, fd
        except BlockingIOError:
            pass
        os.close(fd)


class Lease:
    """One operation's lease (a context manager; thread-safe). ``add`` the CIDs to keep; ``close``
    ends the lease once the operation has pinned what it wanted, or given up."""

    def __init__(self, directory: Path) -> None:
        self.path, self._fd = _open_locked(directory)
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()
        self._buffer = bytearray()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add(self, cids: Iterable[bytes]) -> None:
        """Keep ``cids`` (raw CIDs) from gc; buffered until ``flush`` or a full buffer."""
        with self._lock:
            for cid in cids:
                if cid not in self._seen:
                    self._seen.add(cid)
                    self._buffer += cid
            if len(self._buffer) >= _FLUSH_AT:
                self._flush()

    def flush(self) -> None:
        """Write what ``add`` buffered: from here on a gc that reads this lease keeps it."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._fd < 0 or not self._buffer:
            return
        view = memoryview(bytes(self._buffer))
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            if is_full(exc):
                raise full_error(self.path.parent.parent) from None
            raise
        self._buffer.clear()

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = -1
            self._buffer.clear()


def leased(directory: Path) -> Iterator[bytes]:
    """Every CID a live lease in ``directory`` holds (for gc); stale leases (no holder) are deleted."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return
    for path in entries:
        if not path.name.endswith(SUFFIX):
            continue
        fd = open_if_present(path)
        if fd is None:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: live
                data = _read_all(fd)
                for start in range(0, len(data) - CID_LEN + 1, CID_LEN):
                    with contextlib.suppress(CidError):  # a damaged record: nothing to keep
                        yield check_cid(data[start : start + CID_LEN])
            else:  # nobody holds it; unlinked while we hold the lock, so no holder can take it after
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
