"""What ``add`` is given to seal, checked before the repo is locked: a path, or a :class:`Folder` of
several paths that becomes one folder of the sealed tree (``sealbox add A B --as-folder NAME``)."""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from node.files.errors import InputError
from protocol.errors import UnsafeNameError
from protocol.names import check_name, colliding_names


@dataclass(frozen=True)
class Folder:
    """Several paths sealed as the entries of one folder ``name`` that exists nowhere on disk. Each
    entry is named after its path's last component; a symlink given here is followed, as a path given
    to ``add`` is."""

    name: str
    paths: tuple[Path, ...]

    def entries(self) -> list[tuple[str, Path]]:
        """``(entry name, path to read)`` in the order a folder's entries are sealed (by name's bytes),
        or InputError for a missing path, an unsafe name, or two names one file system would merge."""
        try:
            check_name(self.name)
        except UnsafeNameError as exc:
            raise InputError(f"cannot make a folder {self.name!r}: {exc}") from None
        if not self.paths:
            raise InputError("a folder needs at least one path")
        entries = []
        for path in self.paths:
            path, name = checked_input(path)
            entries.append((name, Path(os.path.realpath(path))))
        entries.sort(key=lambda e: os.fsencode(e[0]))
        names = [name for name, _ in entries]
        for a, b in itertools.pairwise(names):
            if a == b:
                raise InputError(f"two of the paths are named {a!r}: a folder holds each name once")
        refuse_colliding_names(Path(self.name), names)
        return entries


def checked_input(path: Path, name: str | None = None) -> tuple[Path, str]:
    """The absolute path to add and its node's name (``name``, else the path's last component), or
    InputError (before the repo is locked)."""
    path = Path(os.path.abspath(path))
    if not os.path.lexists(path):
        raise InputError(f"no such file or directory: {path}")
    name = name or path.name or "root"
    try:
        check_name(name)
    except UnsafeNameError as exc:
        raise InputError(f"cannot add {path}: {exc}") from None
    return path, name


def refuse_colliding_names(path: Path, names: list[str]) -> None:
    """Refuse a folder two of whose entries would be one file on macOS or Windows (``a.txt`` and
    ``A.txt``, or a name composed and decomposed): a decoder refuses such a folder (specs/format.md,
    *Names*), and the adder keeps names as they are rather than rename one."""
    pair = colliding_names(names)
    if pair is not None:
        raise InputError(
            f"cannot add {path}: it holds {pair[0]!r} and {pair[1]!r}, names that differ only in case or "
            "Unicode normalization and would be one file on macOS and Windows: rename one"
        )


def scan_size(path: Path | Folder) -> int:
    """Bytes of regular files under ``path`` (for a progress bar's total)."""
    if isinstance(path, Folder):
        return sum(scan_size(p) for p in path.paths if os.path.lexists(p))
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total
