"""The on-disk block store: append-only pack files and a SQLite index of where each block lies.
This module is the index and the reading side; a writer session is node/store/pack_writer.py, gc's
collect and compaction node/store/pack_gc.py.

Layout under ``REPO/blocks``::

    packs/<n>.pack     "SBPACK1\n", then framed blocks back to back, written by one writer session each
    index.sqlite       table blocks(digest, pack, offset, length), WAL mode, synchronous=FULL

Why packs: on ext4 here, a file per 256 KiB block writes at ~190 MB/s (file creation and metadata),
while one appended file writes at 540-760 MB/s; sealing runs at ~900 MB/s on one core.

Invariants:
- a block is stored only after its bytes hash to its CID, and is verified again on every read;
- a writer session's blocks become visible all at once, when :meth:`PackWriter.commit` has fsynced its
  packs and committed their index rows in one transaction; an interrupted session leaves no index row,
  and its pack bytes are removed when the session closes (or by ``gc`` after a crash);
- every read is capped by the maximum block size;
- every block in a pack is framed (``FRAME``: magic, length, digest), so the index can be rebuilt from
  the packs alone (node/store/reporepair.py); packs written before framing start with a block, not the pack
  magic, and are read through the index only.

gc at any moment (``collect``), against writers and readers in this process and in others:
- a writer session holds a shared flock on each pack it writes, from its creation until the session
  closes; ``collect`` flocks each pack exclusively (without waiting) before it looks at the index, and
  drops rows, deletes or compacts only in packs it holds so (a session's own packs, and packs made after
  it looked, are left alone). A lost race on a new pack is seen by the writer (the file it locked is no
  longer linked) and it makes another. Locks die with the process: a crashed writer's pack is idle;
- what a session reuses or committed in an earlier session is kept by the caller's lease
  (``node/store/lease.py``), which a writer given one fills as it goes, flushed before its packs are unlocked;
- a reader never preads a descriptor that may be closed: readers are counted, and a pack's descriptor
  is closed only when no read of it is running (so its number cannot be reused under a read).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from node.store import pack_gc
from node.store.errors import NotFoundError, RepoDamagedError, RepoError
from node.store.fsutil import full_error
from node.store.lease import Lease
from node.store.pack_writer import FRAME as FRAME
from node.store.pack_writer import FRAME_MAGIC as FRAME_MAGIC
from node.store.pack_writer import MAX_BLOCK as MAX_BLOCK
from node.store.pack_writer import PACK_MAGIC as PACK_MAGIC
from node.store.pack_writer import PackWriter as PackWriter
from node.store.pack_writer import _pack_number as _pack_number
from node.store.quota import Quota
from protocol.cid import cid_digest, cid_from_digest, cid_to_text, verify_block

# node/net/block_server.py's name for the digest a commit listener is given; the definition is cid_digest
block_digest = cid_digest

LOCATE_BATCH = 500  # CIDs per index query in locate() (SQLite allows 32,766 parameters, older ones 999)
Location = tuple[int, int, int]  # (pack, offset, length)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    digest BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack);
"""


def damaged_index(exc: sqlite3.Error | str) -> RepoDamagedError:
    """The one line for a block index SQLite cannot read (deleted, truncated, malformed); no path in it."""
    return RepoDamagedError(
        f"the block index (blocks/index.sqlite) is damaged ({exc}): nothing was changed;"
        " 'sealbox repo check' says what, 'sealbox repo repair' rebuilds it from the packs"
    )


def _full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of disk space (on tmpfs a full disk shows as a shm that cannot grow)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE") or "full" in str(exc).lower()


def _checked(cid: bytes, where: Location) -> Location:
    """``where``, refused if its length is more than any block's (the read is capped by it)."""
    if not 0 <= where[2] <= MAX_BLOCK:
        raise RepoError(f"block {cid_to_text(cid)} is larger than any block may be: the index is damaged")
    return where


class _Reader:
    """A pack's read descriptor and the reads running on it (both changed under the store's lock)."""

    __slots__ = ("fd", "reads", "retired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reads = 0
        self.retired = False  # closed by the last read to end


class BlockStore:
    """Blocks under ``root``. Safe to use from several threads and several processes at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.packs = root / "packs"
        self._lock = threading.Lock()
        self._readers: dict[int, _Reader] = {}
        self._db: sqlite3.Connection | None = None
        self._listeners: list[Callable[[list[bytes]], None]] = []
        self.quota: Quota | None = None  # storage_limit, see set_limit

    def add_listener(self, listener: Callable[[list[bytes]], None]) -> None:
        """Call ``listener(digests)`` after each commit with the sha2-256 digests of the blocks it made
        visible, in the committing thread: the listener must be quick and thread-safe."""
        self._listeners.append(listener)

    # -- set-up -------------------------------------------------------------------------------

    def create(self) -> None:
        self.packs.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._connect(new=True).executescript(_SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        return self._db if self._db is not None else self._connect(new=False)

    def _connect(self, *, new: bool) -> sqlite3.Connection:
        """Open the index; unless ``new``, refuse one without the blocks table (a deleted index file
        reopens as an empty database) in one line rather than "no such table" at the first query."""
        try:
            db = sqlite3.connect(
                self.root / "index.sqlite", timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if not new and not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'blocks'").fetchone():
                db.close()
                raise damaged_index("it holds no blocks table: deleted or replaced")
        except sqlite3.Error as exc:
            if _full(exc):
                raise full_error(self.root) from None
            raise damaged_index(exc) from None
        self._db = db
        return db

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The index under the store's lock, any SQLite failure turned into one line."""
        with self._lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise damaged_index(exc) from None

    def close(self) -> None:
        with self._lock:
            for number in list(self._readers):
                self._retire(number)
            if self._db is not None:
                self._db.close()
                self._db = None

    def pack_path(self, number: int) -> Path:
        return self.packs / f"{number}.pack"

    # -- reading ------------------------------------------------------------------------------

    def _locate(self, cid: bytes) -> Location | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT pack, offset, length FROM blocks WHERE digest = ?", (cid_digest(cid),)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def has(self, cid: bytes) -> bool:
        return self._locate(cid) is not None

    def locate(self, cids: Iterable[bytes]) -> dict[bytes, Location]:
        """Where each of ``cids`` that the store holds lies (absent ones are left out), asked of the
        index ``LOCATE_BATCH`` at a time: one query per block was ~20% of a get's CPU here, mostly
        SQLite's per-statement work. Pass a location on to :meth:`get`."""
        by_digest = {cid_digest(cid): cid for cid in cids}
        digests = list(by_digest)
        found: dict[bytes, Location] = {}
        for start in range(0, len(digests), LOCATE_BATCH):
            part = digests[start : start + LOCATE_BATCH]
            marks = ",".join("?" * len(part))  # only placeholders go into the text; digests are bound
            query = f"SELECT digest, pack, offset, length FROM blocks WHERE digest IN ({marks})"  # noqa: S608
            with self._reading() as db:
                rows = db.execute(query, part).fetchall()
            for digest, pack, offset, length in rows:
                found[by_digest[digest]] = (pack, offset, length)
        return found

    def _reader(self, pack: int) -> _Reader | None:
        """The pack's cached reader, counted as in use (hand it back with :meth:`_done`); None if the
        pack is gone."""
        with self._lock:
            reader = self._readers.get(pack)
            if reader is None:
                try:
                    fd = os.open(self.pack_path(pack), os.O_RDONLY)
                except FileNotFoundError:
                    return None
                reader = self._readers[pack] = _Reader(fd)
            reader.reads += 1
            return reader

    def _done(self, reader: _Reader) -> None:
        with self._lock:
            reader.reads -= 1
            if reader.retired and not reader.reads:
                os.close(reader.fd)

    def _retire(self, pack: int) -> None:
        """Forget the pack's reader (the caller holds ``_lock``); its descriptor is closed now, or by
        the last read still running on it."""
        reader = self._readers.pop(pack, None)
        if reader is not None:
            reader.retired = True
            if not reader.reads:
                os.close(reader.fd)

    def get(self, cid: bytes, *, verify: bool = True, where: Location | None = None) -> bytes:
        """The block's bytes; NotFoundError if absent, CorruptBlockError if they do not match ``cid``.

        ``verify=False`` is for callers that hand the bytes to ``protocol.stream``, which verifies them
        (data blocks by their AES-GCM tag: every block was checked against its CID when it was stored).
        ``where``: the block's location from :meth:`locate`, which saves looking it up again.

        A pack gone since the lookup (gc compacted it: its blocks' rows point at the new pack before the
        old one is deleted) sends the read to where the index says the block lies now.
        """
        if where is None:
            where = self._locate(cid)
        pack = -1
        for _attempt in range(4):
            if where is None:
                raise NotFoundError(f"block {cid_to_text(cid)} is not in the repo")
            pack, offset, length = _checked(cid, where)
            reader = self._reader(pack)
            if reader is not None:
                try:
                    data = os.pread(reader.fd, length, offset)
                finally:
                    self._done(reader)
                if verify or len(data) != length:
                    verify_block(cid, data)
                return data
            moved = self._locate(cid)
            if moved == where:
                break
            where = moved
        raise RepoError(f"pack {pack} is missing from the repo")

    def read_back(self, cid: bytes) -> bytes:
        """The block's bytes, read from a pack still linked in the repo and hashed against ``cid``:
        for a caller about to rely on the block for good (pinning). A descriptor cached before another
        process deleted the pack would still read the old bytes; this does not trust it."""
        where = self._locate(cid)
        if where is None:
            raise NotFoundError(f"block {cid_to_text(cid)} is not in the repo")
        pack, offset, length = _checked(cid, where)
        reader = self._reader(pack)
        if reader is None:
            raise NotFoundError(f"block {cid_to_text(cid)} lies in a pack deleted from the repo")
        try:
            if os.fstat(reader.fd).st_nlink == 0:
                with self._lock:
                    if self._readers.get(pack) is reader:
                        self._retire(pack)
                raise NotFoundError(f"block {cid_to_text(cid)} lies in a pack deleted from the repo")
            data = os.pread(reader.fd, length, offset)
        finally:
            self._done(reader)
        verify_block(cid, data)
        return data

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """Every stored block as ``(cid, length)``."""
        with self._reading() as db:
            rows = db.execute("SELECT digest, length FROM blocks ORDER BY digest").fetchall()
        for digest, length in rows:
            yield cid_from_digest(digest), length

    def stats(self) -> tuple[int, int]:
        """``(blocks, bytes)`` stored."""
        with self._reading() as db:
            count, total = db.execute("SELECT count(*), coalesce(sum(length), 0) FROM blocks").fetchone()
        return int(count), int(total)

    # -- writing ------------------------------------------------------------------------------

    def writer(self, lease: Lease | None = None, *, counted: bool = True) -> PackWriter:
        """A new writer session; with ``lease``, every block it stores or finds stored is leased.
        ``counted=False`` (gc's compaction, which only moves blocks) is not held to the storage limit."""
        return PackWriter(self, lease, counted=counted)

    def set_limit(self, limit: int | None) -> None:
        """Hold every counted writer session to ``limit`` bytes of blocks (node/store/quota.py);
        None: no limit."""
        self.quota = None if limit is None else Quota(limit, lambda: self.stats()[1])

    def put(self, cid: bytes, block: bytes) -> bool:
        """Verify and store one block in a session of its own. Returns False if it was already there."""
        with self.writer() as writer:
            added = writer.put(cid, block)
            writer.commit()
        return added

    def _index(self, rows: list[tuple[bytes, int, int, int]], *, replace: bool) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(f"{verb} INTO blocks VALUES (?, ?, ?, ?)", rows)
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")
                if _full(exc):
                    raise full_error(self.root) from None
                raise RepoError(f"cannot update the block index: {exc}") from None
        if rows:
            digests = [row[0] for row in rows]
            for listener in list(self._listeners):
                listener(digests)

    # -- garbage collection (the caller holds the repo's exclusive lock) ----------------------------

    def collect(self, keep: Iterable[bytes]) -> tuple[int, int]:
        """Drop every block not in ``keep``; delete or compact idle packs. Returns ``(blocks, bytes
        freed)``. The work, and what ``keep`` may be: node/store/pack_gc.py."""
        return pack_gc.collect(self, keep)
