"""gc's side of the block store: drop unkept rows, delete or compact idle packs.

The caller holds the repo's exclusive lock. How this stays safe against writer sessions and readers, here
and in other processes (flocks on packs, counted readers): node/store/blockstore.py's docstring.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from node.store.fsutil import fsync_dir, open_if_present
from node.store.pack_writer import FRAME, PACK_MAGIC, _pack_number
from protocol.cid import cid_digest, cid_from_digest

if TYPE_CHECKING:
    from node.store.blockstore import BlockStore

COMPACT_BELOW = 0.5  # gc rewrites a pack whose live bytes fall below this share of its size


def collect(store: BlockStore, keep: Iterable[bytes]) -> tuple[int, int]:
    """Drop every block not in ``keep``; delete or compact packs. Returns ``(blocks, bytes freed)``.

    Safe while writer sessions run, here or in other processes: only idle packs (flocked here
    exclusively, see node/store/blockstore.py's docstring) lose rows or bytes, and so do rows into a
    pack that no longer exists (left by a crash or an older version), unless kept. ``keep`` is
    consumed only once the idle packs are locked, so a lazy iterable that reads the leases, then the
    pins, sees every block a session ended before the locking and every pin written before the reading.
    """
    idle = _lock_idle_packs(store)
    try:
        removed = _drop_rows(store, keep, idle)
        freed = 0
        with store._lock:
            live = dict(store.db.execute("SELECT pack, sum(length) FROM blocks GROUP BY pack").fetchall())
        for number, (_fd, size) in idle.items():
            if number not in live:
                with store._lock:
                    store._retire(number)
                with contextlib.suppress(FileNotFoundError):
                    store.pack_path(number).unlink()
                freed += size
            elif live[number] < COMPACT_BELOW * size:
                freed += size - _compact(store, number)
    finally:
        for fd, _size in idle.values():
            os.close(fd)  # and so unlock
    fsync_dir(store.packs)
    if store.quota is not None:  # the limit's next charge counts what is left, not what was
        store.quota.recount()
    return removed, max(0, freed)


def _lock_idle_packs(store: BlockStore) -> dict[int, tuple[int, int]]:
    """Every pack no writer session holds, flocked exclusively: ``{number: (fd, size)}``."""
    idle: dict[int, tuple[int, int]] = {}
    for path in store.packs.iterdir():
        number = _pack_number(path)
        if number is None:
            continue
        fd = open_if_present(path)
        if fd is None:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a writer session holds it
            os.close(fd)
            continue
        idle[number] = (fd, os.fstat(fd).st_size)
    return idle


def _drop_rows(store: BlockStore, keep: Iterable[bytes], idle: dict[int, tuple[int, int]]) -> int:
    """Delete, in one transaction, the rows not in ``keep`` that lie in ``idle`` packs or in packs
    with no file (no session can be writing one: a session creates its pack before any row)."""
    with store._lock:
        db = store.db
        db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (digest BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("CREATE TEMP TABLE IF NOT EXISTS idle (pack INTEGER PRIMARY KEY)")
        db.execute("DELETE FROM keep")
        db.execute("DELETE FROM idle")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((cid_digest(c),) for c in keep))
            db.executemany("INSERT INTO idle VALUES (?)", ((n,) for n in idle))
            packs = [row[0] for row in db.execute("SELECT DISTINCT pack FROM blocks")]
            gone = [n for n in packs if n not in idle and not store.pack_path(n).exists()]
            db.executemany("INSERT OR IGNORE INTO idle VALUES (?)", ((n,) for n in gone))
            where = "pack IN (SELECT pack FROM idle) AND digest NOT IN (SELECT digest FROM keep)"
            removed = db.execute(f"SELECT count(*) FROM blocks WHERE {where}").fetchone()  # noqa: S608
            db.execute(f"DELETE FROM blocks WHERE {where}")  # noqa: S608
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("DELETE FROM keep")
        db.execute("DELETE FROM idle")
    return int(removed[0])


def _compact(store: BlockStore, number: int) -> int:
    """Rewrite the live blocks of pack ``number`` (flocked by gc) into a new pack, then delete it.
    Returns the bytes written."""
    with store._lock:
        rows = store.db.execute(
            "SELECT digest FROM blocks WHERE pack = ? ORDER BY offset", (number,)
        ).fetchall()
    written = len(PACK_MAGIC)  # the bytes of the new pack: its header, frames and blocks
    with store.writer(counted=False) as writer:
        for (digest,) in rows:
            cid = cid_from_digest(digest)
            block = store.get(cid)
            writer.put(cid, block, force=True)
            written += FRAME.size + len(block)
        writer.commit(replace=True)
    with store._lock:
        store._retire(number)
    store.pack_path(number).unlink()
    return written
