"""``sealbox repo repair``: mend what node/store/repocheck.py finds, where it can be mended.

:func:`repair` rebuilds the index from the packs when it fails a check: every frame of a framed pack is
hashed and indexed if it matches its digest (damaged spans are skipped by looking for the next frame
magic); a pack written before framing can only be re-indexed from the rows the old index still yields,
each checked by hashing, and from the one-block gaps between them. Then each pin whose list is damaged
is rebuilt by walking its tree, where the repo holds its key (roots it added); a fetched root's list
cannot be rebuilt without its link, and a pin whose header is damaged cannot be repaired at all: the
report says so, and gc stays refused until the user removes it (``sealbox rm ROOT`` removes a damaged
pin). The old index is kept beside the new one as ``index.damaged.sqlite``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from node.errors import NodeError
from node.store.blockstore import (
    _SCHEMA,
    FRAME,
    FRAME_MAGIC,
    MAX_BLOCK,
    PACK_MAGIC,
    BlockStore,
    _pack_number,
)
from node.store.errors import RepoError
from node.store.fsutil import fsync_dir
from node.store.repocheck import (
    PinState,
    Report,
    connect_index,
    index_problems,
    pin_problems,
    pin_states,
    summary,
)
from node.store.tree_walk import Frontier
from protocol.cid import cid_to_text
from protocol.errors import ProtocolError
from protocol.link import ShareLink

if TYPE_CHECKING:
    from node.store.repo import Repo

DAEMON_LOCK = "daemon.lock"  # node/daemon/main.py's LOCK_NAME (that module imports libp2p)


@contextlib.contextmanager
def _no_daemon(repo: Repo) -> Iterator[None]:
    """Hold the daemon's lock for the block: no daemon may hold the index open while it is replaced."""
    fd = os.open(repo.path / DAEMON_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RepoError("a daemon runs on this repo: stop it before 'sealbox repo repair'") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _no_writer(store: BlockStore) -> Iterator[None]:
    """Flock every pack exclusively for the block, as gc does: a writer session (a fetch holds no repo
    lock while it runs) holds its packs shared, and the index must not be replaced under it."""
    fds = []
    try:
        for path in sorted(store.packs.iterdir()):
            if _pack_number(path) is None:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RepoError(
                    "a fetch is writing to this repo: let it end before 'sealbox repo repair'"
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)


def repair(repo: Repo) -> Report:
    """Rebuild the index if it fails its checks, then each pin whose list is damaged (see the module's
    docstring); report what was done and what is still wrong."""
    report = Report()
    with _no_daemon(repo), repo.lock(exclusive=True), _no_writer(repo.blocks):
        problems = index_problems(repo.blocks, full=True)
        if not problems:
            with contextlib.suppress(RepoError):
                problems = [p for p in pin_problems(repo)[0] if "the index lacks" in p]
        if problems:
            report.notes.append(f"index: {summary(problems)}")
            _rebuild_index(repo.blocks, report)
        for state in pin_states(repo):
            if isinstance(state, str):
                report.notes.append(f"{state}: ignored")
            else:
                _repair_pin(repo, state, report)
    return report


def _old_rows(store: BlockStore) -> dict[int, list[tuple[bytes, int, int]]]:
    """What the old index still yields, by pack (as much as SQLite reads before it fails)."""
    out: dict[int, list[tuple[bytes, int, int]]] = {}
    with contextlib.suppress(sqlite3.Error):
        db = connect_index(store)
        try:
            for digest, pack, offset, length in db.execute(
                "SELECT digest, pack, offset, length FROM blocks NOT INDEXED"
            ):
                out.setdefault(pack, []).append((bytes(digest), offset, length))
        except sqlite3.Error:
            pass
        finally:
            db.close()
    return out


def _scan_framed(path: Path) -> tuple[list[tuple[bytes, int, int]], int]:
    """Every frame of a framed pack whose block hashes to its digest, and how many damaged spans were
    skipped (found again at the next frame magic; an unfinished write at the end counts as one)."""
    found: list[tuple[bytes, int, int]] = []
    skipped = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= len(PACK_MAGIC):
            return found, 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos = len(PACK_MAGIC)
            while pos + FRAME.size <= size:
                magic, length, digest = FRAME.unpack_from(mm, pos)
                start = pos + FRAME.size
                end = start + length
                whole = magic == FRAME_MAGIC and length <= MAX_BLOCK and end <= size
                if whole and hashlib.sha256(mm[start:end]).digest() == digest:
                    found.append((digest, start, length))
                    pos = end
                    continue
                skipped += 1
                pos = mm.find(FRAME_MAGIC, pos + 1)
                if pos < 0:
                    break
    return found, skipped


Rows = list[tuple[bytes, int, int]]  # (digest, offset, length) in one pack


def _verified_rows(store: BlockStore, pack: int, rows: Rows) -> tuple[Rows, int]:
    """The rows of an unframed pack whose bytes hash to their digest, and then each gap between them
    (and after the last) that is one block long at most, indexed under its own hash: a row the index
    lost between two it kept is found again so. A gap holding several blocks hashes to no CID any pin
    lists, so its row is only unreferenced, and gc drops it. Returns the rows and how many gaps."""
    good = []
    with open(store.pack_path(pack), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for digest, offset, length in rows:
            if 0 <= length <= MAX_BLOCK and 0 <= offset <= size - length:
                f.seek(offset)
                if hashlib.sha256(f.read(length)).digest() == digest:
                    good.append((digest, offset, length))
        good.sort(key=lambda row: row[1])
        gaps = []
        end = 0
        for _digest, offset, length in [*good, (b"", size, 0)]:
            if 0 < offset - end <= MAX_BLOCK:
                f.seek(end)
                gaps.append((hashlib.sha256(f.read(offset - end)).digest(), end, offset - end))
            end = max(end, offset + length)
    return good + gaps, len(gaps)


def _rebuild_index(store: BlockStore, report: Report) -> None:
    old = _old_rows(store)
    rows: dict[bytes, tuple[int, int, int]] = {}
    for path in sorted(store.packs.iterdir()):
        pack = _pack_number(path)
        if pack is None:
            continue
        with open(path, "rb") as f:
            framed = f.read(len(PACK_MAGIC)) == PACK_MAGIC
        if framed:
            found, skipped = _scan_framed(path)
            if skipped:
                report.notes.append(f"pack {pack}: {skipped} damaged or unfinished span(s) skipped")
        else:
            listed = old.get(pack, [])
            if not listed:
                report.problems.append(
                    f"pack {pack} predates framing and the old index names none of its blocks: they"
                    " cannot be found (the pack is kept)"
                )
                continue
            found, gaps = _verified_rows(store, pack, listed)
            report.notes.append(
                f"pack {pack} predates framing: {len(found) - gaps} of its blocks found through the old"
                f" index ({len(listed) + gaps - len(found)} rows did not check), {gaps} in the gaps between"
            )
        for digest, offset, length in found:
            rows.setdefault(digest, (pack, offset, length))
    new = store.root / "index.rebuild.sqlite"
    for stale in (new, new.with_name(new.name + "-journal")):
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(new, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        db.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?)", ((d, *where) for d, where in rows.items()))
        db.execute("COMMIT")
    finally:
        db.close()
    with open(new, "rb") as f:
        os.fsync(f.fileno())
    store.close()
    current = store.root / "index.sqlite"
    aside = store.root / "index.damaged.sqlite"
    for suffix in ("-wal", "-shm", ""):  # the WAL first: it must never be applied to the new index
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{current}{suffix}", f"{aside}{suffix}")
    os.replace(new, current)
    fsync_dir(store.root)
    report.done.append(f"index rebuilt from the packs: {len(rows)} blocks (the old one kept as {aside.name})")


def _repair_pin(repo: Repo, state: PinState, report: Report) -> None:
    root = cid_to_text(state.root)
    pin = state.pin
    if pin is None:
        report.problems.append(
            f"{state.problem}: cannot be repaired (its header is lost); 'sealbox rm {root}' lets gc run"
            " (its blocks then go at the next gc; 'sealbox get' its link again if you hold it)"
        )
        return
    if state.problem is None and not state.missing:
        if state.version == 1:
            repo._rewrite_pin(pin)
            report.done.append(f"pin of {root}: checksum added (version 2)")
        return
    why = state.problem or f"pin of {root} lists {state.missing} block(s) the index lacks"
    if pin.key is None:
        report.problems.append(
            f"{why}: cannot be rebuilt, this repo does not hold its key; 'sealbox rm {root}' then"
            " 'sealbox get' its link again"
        )
        return
    try:
        listed, stored = _tree_blocks(repo.blocks, pin.root, pin.key)
    except (ProtocolError, NodeError) as exc:
        report.problems.append(f"{why}: cannot be rebuilt, its tree cannot be walked ({exc})")
        return
    path = repo.new_block_list()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(listed))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    repo.write_pin(replace(pin, blocks=len(listed), stored=stored), path)
    report.done.append(f"pin of {root}: block list rebuilt from its tree ({len(listed)} blocks)")


def _tree_blocks(store: BlockStore, root: bytes, key: bytes) -> tuple[list[bytes], int]:
    """Every block of the tree under ``root`` (opened with ``key``) and their total length, by the walk a
    fetch makes (node/store/tree_walk.py); RepoError if one is not stored, a ProtocolError if one does
    not open."""
    walked: dict[bytes, None] = {}
    frontier = Frontier(store, ShareLink(root, key), lambda cids: walked.update(dict.fromkeys(cids)))
    absent = frontier.round(sys.maxsize)  # the whole tree in one round: nothing is fetched here
    if absent:
        raise RepoError(f"{len(absent)} of its blocks are not stored (e.g. {cid_to_text(absent[0])})")
    where = store.locate(walked)
    return list(walked), sum(length for _pack, _offset, length in where.values())
