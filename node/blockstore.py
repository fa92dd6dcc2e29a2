"""The on-disk block store: append-only pack files and a SQLite index of where each block lies.

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
  the packs alone (node/reporepair.py); packs written before framing start with a block, not the pack
  magic, and are read through the index only.

gc at any moment (``collect``), against writers and readers in this process and in others:
- a writer session holds a shared flock on each pack it writes, from its creation until the session
  closes; ``collect`` flocks each pack exclusively (without waiting) before it looks at the index, and
  drops rows, deletes or compacts only in packs it holds so (a session's own packs, and packs made after
  it looked, are left alone). A lost race on a new pack is seen by the writer (the file it locked is no
  longer linked) and it makes another. Locks die with the process: a crashed writer's pack is idle;
- what a session reuses or committed in an earlier session is kept by the caller's lease
  (``node/lease.py``), which a writer given one fills as it goes, flushed before its packs are unlocked;
- a reader never preads a descriptor that may be closed: readers are counted, and a pack's descriptor
  is closed only when no read of it is running (so its number cannot be reused under a read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

from node.errors import NotFoundError, RepoDamagedError, RepoError
from node.fsutil import WRITEBACK_STEP, fsync_dir, full_error, is_full, start_writeback
from node.lease import Lease
from node.quota import Quota
from protocol.cid import CID_PREFIX, check_cid, cid_to_text, verify_block
from protocol.manifest import MAX_CHUNK
from protocol.seal import TAG_LEN

MAX_BLOCK = MAX_CHUNK + TAG_LEN
LOCATE_BATCH = 500  # CIDs per index query in locate() (SQLite allows 32,766 parameters, older ones 999)
Location = tuple[int, int, int]  # (pack, offset, length)
PACK_MAX = 1 << 30  # a writer starts a new pack past this size, so gc compacts in bounded pieces
COMPACT_BELOW = 0.5  # gc rewrites a pack whose live bytes fall below this share of its size
PACK_MAGIC = b"SBPACK1\n"  # a framed pack's first bytes (an older pack starts with ciphertext)
FRAME = struct.Struct(">4sI32s")  # before each block: FRAME_MAGIC, u32be(length), sha2-256 digest
FRAME_MAGIC = b"SBF1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    digest BLOB PRIMARY KEY,
    pack INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks (pack);
"""


def damaged_index(_root: Path, exc: sqlite3.Error | str) -> RepoDamagedError:
    """The one line for a block index SQLite cannot read (deleted, truncated, malformed); no path in it."""
    return RepoDamagedError(
        f"the block index (blocks/index.sqlite) is damaged ({exc}): nothing was changed;"
        " 'sealbox repo check' says what, 'sealbox repo repair' rebuilds it from the packs"
    )


def frame(digest: bytes, length: int) -> bytes:
    return FRAME.pack(FRAME_MAGIC, length, digest)


def _full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of disk space (on tmpfs a full disk shows as a shm that cannot grow)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name in ("SQLITE_FULL", "SQLITE_IOERR_SHMSIZE") or "full" in str(exc).lower()


def _digest(cid: bytes) -> bytes:
    return check_cid(cid)[len(CID_PREFIX) :]


def block_digest(cid: bytes) -> bytes:
    """The sha2-256 digest a CID names: what the store indexes and what commit listeners receive."""
    return _digest(cid)


class _Reader:
    """A pack's read descriptor and the reads running on it (both changed under the store's lock)."""

    __slots__ = ("fd", "reads", "retired")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.reads = 0
        self.retired = False  # closed by the last read to end


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


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

    def remove_listener(self, listener: Callable[[list[bytes]], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

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
                raise damaged_index(self.root, "it holds no blocks table: deleted or replaced")
        except sqlite3.Error as exc:
            if _full(exc):
                raise full_error(self.root) from None
            raise damaged_index(self.root, exc) from None
        self._db = db
        return db

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The index under the store's lock, any SQLite failure turned into one line."""
        with self._lock:
            try:
                yield self.db
            except sqlite3.Error as exc:
                raise damaged_index(self.root, exc) from None

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
                "SELECT pack, offset, length FROM blocks WHERE digest = ?", (_digest(cid),)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def has(self, cid: bytes) -> bool:
        return self._locate(cid) is not None

    def locate(self, cids: Iterable[bytes]) -> dict[bytes, Location]:
        """Where each of ``cids`` that the store holds lies (absent ones are left out), asked of the
        index ``LOCATE_BATCH`` at a time: one query per block was ~20% of a get's CPU here, mostly
        SQLite's per-statement work. Pass a location on to :meth:`get`."""
        by_digest = {_digest(cid): cid for cid in cids}
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
            pack, offset, length = where
            if not 0 <= length <= MAX_BLOCK:
                raise RepoError(
                    f"block {cid_to_text(cid)} is larger than any block may be: the index is damaged"
                )
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
        pack, offset, length = where
        if not 0 <= length <= MAX_BLOCK:
            raise RepoError(f"block {cid_to_text(cid)} is larger than any block may be: the index is damaged")
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
            yield CID_PREFIX + digest, length

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
        """Hold every counted writer session to ``limit`` bytes of blocks (node/quota.py); None: no limit."""
        self.quota = None if limit is None else Quota(limit, self._count_bytes)

    def _count_bytes(self) -> int:
        try:
            (used,) = self.db.execute("SELECT coalesce(sum(length), 0) FROM blocks").fetchone()
        except sqlite3.Error as exc:
            raise damaged_index(self.root, exc) from None
        return int(used)

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
        """Drop every block not in ``keep``; delete or compact packs. Returns ``(blocks, bytes freed)``.

        Safe while writer sessions run, here or in other processes: only idle packs (flocked here
        exclusively, see the module's docstring) lose rows or bytes, and rows into a pack that no longer
        exists (left by a crash or an older version) unless kept. ``keep`` is consumed only once the
        idle packs are locked, so a lazy iterable that reads the leases, then the pins, sees every block
        a session ended before the locking and every pin written before the reading.
        """
        if self.quota is not None:
            self.quota.recount()
        idle = self._lock_idle_packs()
        try:
            removed = self._drop_rows(keep, idle)
            freed = 0
            with self._lock:
                live = dict(self.db.execute("SELECT pack, sum(length) FROM blocks GROUP BY pack").fetchall())
            for number, (_fd, size) in idle.items():
                if number not in live:
                    with self._lock:
                        self._retire(number)
                    with contextlib.suppress(FileNotFoundError):
                        self.pack_path(number).unlink()
                    freed += size
                elif live[number] < COMPACT_BELOW * size:
                    freed += size - self._compact(number)
        finally:
            for fd, _size in idle.values():
                os.close(fd)  # and so unlock
        fsync_dir(self.packs)
        return removed, max(0, freed)

    def _lock_idle_packs(self) -> dict[int, tuple[int, int]]:
        """Every pack no writer session holds, flocked exclusively: ``{number: (fd, size)}``."""
        idle: dict[int, tuple[int, int]] = {}
        for path in self.packs.iterdir():
            number = _pack_number(path)
            if number is None:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a writer session holds it
                os.close(fd)
                continue
            idle[number] = (fd, os.fstat(fd).st_size)
        return idle

    def _drop_rows(self, keep: Iterable[bytes], idle: dict[int, tuple[int, int]]) -> int:
        """Delete, in one transaction, the rows not in ``keep`` that lie in ``idle`` packs or in packs
        with no file (no session can be writing one: a session creates its pack before any row)."""
        with self._lock:
            db = self.db
            db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (digest BLOB PRIMARY KEY) WITHOUT ROWID")
            db.execute("CREATE TEMP TABLE IF NOT EXISTS idle (pack INTEGER PRIMARY KEY)")
            db.execute("DELETE FROM keep")
            db.execute("DELETE FROM idle")
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((_digest(c),) for c in keep))
                db.executemany("INSERT INTO idle VALUES (?)", ((n,) for n in idle))
                packs = [row[0] for row in db.execute("SELECT DISTINCT pack FROM blocks")]
                gone = [n for n in packs if n not in idle and not self.pack_path(n).exists()]
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

    def _compact(self, number: int) -> int:
        """Rewrite the live blocks of pack ``number`` (flocked by gc) into a new pack, then delete it.
        Returns the bytes written."""
        with self._lock:
            rows = self.db.execute(
                "SELECT digest FROM blocks WHERE pack = ? ORDER BY offset", (number,)
            ).fetchall()
        written = len(PACK_MAGIC)  # the bytes of the new pack: its header, frames and blocks
        with self.writer(counted=False) as writer:
            for (digest,) in rows:
                cid = CID_PREFIX + digest
                block = self.get(cid)
                writer.put(cid, block, force=True)
                written += FRAME.size + len(block)
            writer.commit(replace=True)
        with self._lock:
            self._retire(number)
        self.pack_path(number).unlink()
        return written

    def _disk_usage(self) -> int:
        return sum(p.stat().st_size for p in self.packs.iterdir() if _pack_number(p) is not None)


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
            _write_all(fd, PACK_MAGIC, 0)
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
        digest = _digest(cid)
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
            _write_all(fd, frame(digest, len(block)), offset - FRAME.size)
            _write_all(fd, block, offset)
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
