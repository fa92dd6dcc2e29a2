"""Integrity checks of a repo's metadata: the block index and the pins (``sealbox repo check``).

gc deletes what no pin lists, so it trusts two kinds of metadata: the index (where each block lies)
and the pins' block lists. Either may be damaged by a disk or another process. :func:`check_before_gc`
runs before gc deletes anything, and refuses with one line when:

- SQLite's ``quick_check`` fails, the index has no blocks table, or its two b-trees disagree on the
  number of rows (the pack index is what gc groups by: a truncated one made gc delete every pack);
- a row points at a missing pack, past a pack's end, or (framed packs) where no frame of that block is;
- a pin cannot be read, its list fails its checksum (version 2), or it lists a block the index lacks
  (a root is pinned only once all its blocks are indexed, so this is damage in one or the other; it is
  also what finds a flipped bit in a version-1 list, which has no checksum).

Repair is node/store/reporepair.py (``sealbox repo repair``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node.errors import NodeError
from node.store.blockstore import (
    FRAME,
    FRAME_MAGIC,
    PACK_MAGIC,
    BlockStore,
)
from node.store.errors import RepoDamagedError, RepoError
from protocol.cid import cid_digest, cid_from_digest, cid_from_text, cid_to_text
from protocol.errors import CidError, ProtocolError

if TYPE_CHECKING:
    from node.store.repo import Pin, Repo


@dataclass
class Report:
    """What a check or repair found (``problems``: what is wrong now) and did (``done``)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)


# -- the index ------------------------------------------------------------------------------------------


def connect_index(store: BlockStore) -> sqlite3.Connection:
    return sqlite3.connect(store.root / "index.sqlite", timeout=60, isolation_level=None)


def index_problems(store: BlockStore, *, full: bool = False) -> list[str]:
    """What is wrong with the index, as one line each (empty: nothing found)."""
    try:
        db = connect_index(store)
    except sqlite3.Error as exc:
        return [f"the block index cannot be opened ({exc})"]
    try:
        return _check_index(db, store, full=full)
    except sqlite3.Error as exc:
        return [f"the block index cannot be read ({exc})"]
    finally:
        db.close()


def _check_index(db: sqlite3.Connection, store: BlockStore, *, full: bool) -> list[str]:
    result = db.execute("PRAGMA integrity_check(5)" if full else "PRAGMA quick_check(5)").fetchall()
    if [r[0] for r in result] != ["ok"]:
        first = " ".join(str(result[0][0]).replace("*** in database main ***", "").split())
        return [f"the block index fails SQLite's integrity check ({first[:120]})"]
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'blocks'").fetchone():
        return ["the block index holds no blocks table (deleted or replaced)"]
    # one statement, so one snapshot: a writer committing between two counts is not damage
    by_digest, by_pack = db.execute(
        "SELECT (SELECT count(*) FROM blocks NOT INDEXED),"
        " (SELECT count(*) FROM blocks INDEXED BY blocks_by_pack)"
    ).fetchone()
    if by_digest != by_pack:
        return [f"the block index's two b-trees disagree ({by_digest} rows by digest, {by_pack} by pack)"]
    problems = []
    rows = db.execute("SELECT pack, count(*), max(offset + length), min(offset) FROM blocks GROUP BY pack")
    framed: set[int] = set()
    for pack, count, end, first in rows:
        path = store.pack_path(pack)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(len(PACK_MAGIC))
        except FileNotFoundError:
            problems.append(f"{count} indexed block(s) lie in pack {pack}, which is missing")
            continue
        if end > size:
            problems.append(f"indexed blocks lie past the end of pack {pack} ({end} > {size} bytes)")
        elif head == PACK_MAGIC:
            if first < len(PACK_MAGIC) + FRAME.size:
                problems.append(f"an indexed block lies over the header of pack {pack}")
            else:
                framed.add(pack)
    if problems:
        return problems
    return _frame_problems(db, store, framed)


def _frame_problems(db: sqlite3.Connection, store: BlockStore, framed: set[int]) -> list[str]:
    """Every row into a framed pack must point just past a frame holding its digest and length."""
    bad = 0
    example = ""
    fds: dict[int, int] = {}
    try:
        for digest, pack, offset, length in db.execute("SELECT digest, pack, offset, length FROM blocks"):
            if pack not in framed:
                continue
            fd = fds.get(pack)
            if fd is None:
                fd = fds[pack] = os.open(store.pack_path(pack), os.O_RDONLY)
            if os.pread(fd, FRAME.size, offset - FRAME.size) != FRAME.pack(FRAME_MAGIC, length, digest):
                bad += 1
                example = example or f"{cid_to_text(cid_from_digest(digest))} in pack {pack}"
    finally:
        for fd in fds.values():
            os.close(fd)
    if bad:
        return [f"{bad} index row(s) point where the pack holds another block or none (e.g. {example})"]
    return []


# -- the pins -------------------------------------------------------------------------------------------


@dataclass
class PinState:
    root: bytes
    pin: Pin | None  # None: the header cannot be read
    problem: str | None = None
    missing: int = 0  # listed blocks the index lacks
    version: int = 2


def pin_states(repo: Repo) -> Iterator[PinState | str]:
    """Each pin file's state, or a line for a file that is not named after a root."""
    for path in sorted(repo.pins_dir.glob("*.pin")):
        try:
            root = cid_from_text(path.name[: -len(".pin")])
        except CidError:
            yield f"pins/{path.name[:80]!r} is not named after a root"
            continue
        try:
            layout = repo.pin_layout(root)
        except RepoError as exc:
            yield PinState(root, None, str(exc))
            continue
        except FileNotFoundError:
            continue
        state = PinState(root, layout.pin, version=layout.version)
        try:
            state.missing = _count_missing(repo, root)
        except RepoError as exc:
            state.problem = str(exc)
        yield state


def _count_missing(repo: Repo, root: bytes) -> int:
    """How many blocks the pin of ``root`` lists that the index lacks (RepoError: its list is damaged),
    counted by SQLite from a temporary table: 3x faster here than asking ``locate`` in batches."""
    try:
        db = connect_index(repo.blocks)
    except sqlite3.Error as exc:
        raise RepoDamagedError(f"the block index cannot be opened ({exc})") from None
    try:
        db.execute("CREATE TEMP TABLE listed (digest BLOB PRIMARY KEY) WITHOUT ROWID")
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO listed VALUES (?)", ((cid_digest(c),) for c in repo.pin_blocks(root))
        )
        db.execute("COMMIT")
        (missing,) = db.execute(
            "SELECT count(*) FROM listed"
            " WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE blocks.digest = listed.digest)"
        ).fetchone()
        return int(missing)
    except sqlite3.Error as exc:
        raise RepoDamagedError(f"the block index cannot be read ({exc})") from None
    finally:
        db.close()


def pin_problems(repo: Repo) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    notes: list[str] = []
    for state in pin_states(repo):
        if isinstance(state, str):
            notes.append(f"{state}: ignored")
        elif state.problem is not None:
            problems.append(state.problem)
        elif state.missing:
            problems.append(
                f"pin of {cid_to_text(state.root)} lists {state.missing} block(s) the index lacks"
            )
        elif state.version == 1:
            notes.append(f"pin of {cid_to_text(state.root)} has no checksum (version 1): repair adds one")
    return problems, notes


def summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def check_before_gc(repo: Repo) -> None:
    """Raise RepoDamagedError (one line) unless the index and every pin pass their checks. The caller
    holds the repo's exclusive lock."""
    problems = index_problems(repo.blocks)
    if not problems:
        try:
            problems, _notes = pin_problems(repo)
        except RepoDamagedError as exc:
            problems = [str(exc)]
    if problems:
        raise RepoDamagedError(
            f"gc refused, nothing was deleted: {summary(problems)};"
            " run 'sealbox repo check', then 'sealbox repo repair'"
        )


def check(repo: Repo, *, deep: bool = False) -> Report:
    """Everything :func:`check_before_gc` checks (with SQLite's full integrity check), and with ``deep``
    every indexed block read back and hashed."""
    report = Report(problems=index_problems(repo.blocks, full=True))
    if not report.problems:
        problems, report.notes = pin_problems(repo)
        report.problems += problems
        if deep:
            report.problems += _hash_every_block(repo.blocks)
    return report


def _hash_every_block(store: BlockStore) -> list[str]:
    bad = 0
    for cid, _length in store:
        try:
            store.get(cid)
        except (ProtocolError, NodeError):
            bad += 1
    return [f"{bad} stored block(s) do not match their id (damaged on disk)"] if bad else []
