"""Atomic, durable file writes: temp file in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from node.errors import RepoFullError

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_full(exc: OSError) -> bool:
    return exc.errno in _FULL


def full_error(what: Path | str) -> RepoFullError:
    return RepoFullError(f"no space left on the disk holding {what}: nothing was changed")


def temp_name(prefix: str = "") -> str:
    return f".{prefix}{secrets.token_hex(8)}.tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, tmp_dir: Path | None = None, sync_dir: bool = True
) -> None:
    """Make ``path`` hold exactly ``data``, or leave it as it was. Raises RepoFullError on a full disk."""
    tmp = (tmp_dir or path.parent) / temp_name()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_full(exc):
            raise full_error(path.parent) from None
        raise
    if sync_dir:
        fsync_dir(path.parent)
