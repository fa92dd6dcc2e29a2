"""DirectWriter: files written in aligned segments by a thread, with O_DIRECT or through the page cache."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from node.files.direct import ALIGN, SEGMENT, DirectWriter


def _write(writer: DirectWriter, path: Path, pieces: list[bytes]) -> bytes:
    """Write ``pieces`` to a new file at ``path`` as get does; returns what the file holds."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = sum(map(len, pieces))
    try:
        writer.start_file(fd, size)
        for piece in pieces:
            writer.append(piece)
        writer.finish_file()
        # a file of a segment or more is written in whole segments, the last one rounded up with zeros
        assert os.fstat(fd).st_size == (size if size < SEGMENT else -(-size // ALIGN) * ALIGN)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return path.read_bytes()


@pytest.mark.parametrize("direct", [True, False])
def test_files_across_segments_come_out_byte_for_byte(tmp_path: Path, direct: bool) -> None:
    # odd piece sizes, so pieces straddle segment boundaries; more segments than the writer has buffers
    data = os.urandom(5 * SEGMENT + 12_345)
    sizes = [1, ALIGN - 1, 300_001, SEGMENT, 3 * SEGMENT]
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at : at + size])
        at += size
    pieces.append(data[at:])
    with contextlib.closing(DirectWriter(direct=direct)) as writer:
        assert _write(writer, tmp_path / "a", pieces) == data
        # the same writer goes on with the next file, as in a directory get
        assert _write(writer, tmp_path / "b", [b"x" * 10, b"y"]) == b"x" * 10 + b"y"
        assert _write(writer, tmp_path / "empty", []) == b""
        assert _write(writer, tmp_path / "exact", [data[:SEGMENT]]) == data[:SEGMENT]
        assert _write(writer, tmp_path / "under", [data[: SEGMENT - 1]]) == data[: SEGMENT - 1]


def test_a_failed_write_is_raised_and_nothing_more_is_written(tmp_path: Path) -> None:
    path = tmp_path / "read-only"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # page-cache writes to it fail with EBADF, in the writer's thread
    writer = DirectWriter(direct=False)
    try:
        writer.start_file(fd, SEGMENT + 1)
        writer.append(os.urandom(SEGMENT + 1))  # one full segment goes to the thread, and fails there
        with pytest.raises(OSError):
            writer.finish_file()
        with pytest.raises(OSError):  # the error stays: the session's output is incomplete
            writer.append(b"more")
    finally:
        os.close(fd)
        writer.close()
    assert path.read_bytes() == b""
