"""File system helpers of the store, used by the layers above it too.

- atomic, durable file writes (:func:`write_atomic`): temp file in the same directory, fsync, rename,
  fsync the directory; a full disk reported as one error (:func:`full_error`);
- :func:`write_all`, the one loop that writes a whole buffer at an offset (``pwrite`` may write less);
- :func:`start_writeback`: long writes ask the kernel to start flushing as they go;
- :class:`FileWatch`: wait for a file to be written to (inotify) instead of polling it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import select
from collections.abc import Iterator, Sequence
from pathlib import Path

from node.store.errors import RepoFullError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_full(exc: OSError) -> bool:
    return exc.errno in _FULL


def full_error(what: Path | str) -> RepoFullError:
    return RepoFullError(f"no space left on the disk holding {what}: nothing was changed")


def temp_name(prefix: str = "") -> str:
    return f".{prefix}{secrets.token_hex(8)}.tmp"


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` to ``fd`` at ``offset``: ``pwrite`` may write less than it is given."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def open_if_present(path: Path) -> int | None:
    """A read-only descriptor of ``path``; None if it is gone (another process may delete a file between
    the listing of its directory and the open)."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def discard_on_error(tmp: Path, where: Path) -> Iterator[None]:
    """Remove the temp file ``tmp`` if the body fails, and report a full disk as RepoFullError."""
    try:
        yield
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_full(exc):
            raise full_error(where) from None
        raise


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, tmp_dir: Path | None = None, sync_dir: bool = True
) -> None:
    """Make ``path`` hold exactly ``data``, or leave it as it was. Raises RepoFullError on a full disk."""
    tmp = (tmp_dir or path.parent) / temp_name()
    with discard_on_error(tmp, path.parent):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


# Long writes ask for writeback every this many bytes. 4 MiB is the disk's largest request here
# (/sys/block/*/queue/max_sectors_kb): a 1 GiB add with 4 MiB steps ran at 0.52-0.60 x the crypto limit in
# six runs, against 0.44-0.46 with 32 MiB steps in the same interleaved rounds (1, 2 and 8 MiB did worse).
WRITEBACK_STEP = 4 << 20


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting (Linux ``sync_file_range``).

    Long writes call this as they go, so the final fsync finds little left to flush and the disk works
    while the CPU seals. Where the call is missing it does nothing: the fsync still makes data durable.
    """
    if _libc is not None:
        _libc.sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_IN_MODIFY = 0x002
_IN_CLOSE_WRITE = 0x008
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


class FileWatch:
    """Wakes up when any of some files is written to (Linux inotify): wait on a log file's growth as
    an event instead of re-reading it on a timer. Create it before the first read, so that no write
    between that read and :meth:`wait` is missed."""

    def __init__(self, paths: list[Path]) -> None:
        if _libc is None:
            raise OSError("inotify is not available here")
        self._fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        for path in paths:
            if _libc.inotify_add_watch(self._fd, os.fsencode(path), _IN_MODIFY | _IN_CLOSE_WRITE) < 0:
                os.close(self._fd)
                raise OSError(ctypes.get_errno(), f"cannot watch {path}")

    def wait(self, timeout: float, also: Sequence[int] = ()) -> bool:
        """Block until a watched file is written to (or one of the file descriptors ``also``, such as
        a process's pidfd, becomes readable), at most ``timeout`` seconds; False if nothing happened."""
        readable, _, _ = select.select([self._fd, *also], [], [], max(0.0, timeout))
        if not readable:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 65536):
                pass
        return True

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
