"""The on-disk block store: one file per block, named by its CID, sharded by the digest's first byte.

Invariants: a block is stored only after its bytes hash to its CID; a block file appears under its final
name only once complete and fsynced (temp file + fsync + rename); reads are capped and re-verified.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from node.errors import NotFoundError, RepoError
from node.fsutil import fsync_dir, full_error, is_full, temp_name
from protocol.cid import CID_LEN, CID_PREFIX, TEXT_LEN, check_cid, cid_from_text, cid_to_text, verify_block
from protocol.errors import CidError
from protocol.manifest import MAX_CHUNK
from protocol.seal import TAG_LEN

MAX_BLOCK = MAX_CHUNK + TAG_LEN


class BlockStore:
    """Blocks under ``root/``; temp files under ``tmp/`` on the same file system."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def path_of(self, cid: bytes) -> Path:
        return self.root / cid[len(CID_PREFIX)].__format__("02x") / cid_to_text(cid)

    def has(self, cid: bytes) -> bool:
        return self.path_of(cid).is_file()

    def get(self, cid: bytes, *, verify: bool = True) -> bytes:
        """The block's bytes; NotFoundError if absent, CorruptBlockError if they do not match ``cid``.

        ``verify=False`` is for callers that hand the bytes to ``protocol.stream``, which verifies them.
        """
        check_cid(cid)
        try:
            with open(self.path_of(cid), "rb") as f:
                data = f.read(MAX_BLOCK + 1)
        except FileNotFoundError:
            raise NotFoundError(f"block {cid_to_text(cid)} is not in the repo") from None
        if len(data) > MAX_BLOCK:
            raise RepoError(f"block {cid_to_text(cid)} in the repo is larger than any block may be")
        if verify:
            verify_block(cid, data)
        return data

    def put(self, cid: bytes, block: bytes) -> bool:
        """Store ``block`` under ``cid`` durably. Returns False if it was already there.

        The directory entry is made durable by :meth:`sync`, which the caller runs before it commits
        anything (a pin) that refers to the block.
        """
        check_cid(cid)
        if len(block) > MAX_BLOCK:
            raise RepoError("refusing to store a block larger than the maximum block size")
        verify_block(cid, block)
        path = self.path_of(cid)
        if path.is_file():
            return False
        tmp = self.tmp / temp_name("block-")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                path.parent.mkdir(exist_ok=True)
                os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if is_full(exc):
                raise full_error(self.root) from None
            raise
        return True

    def sync(self, cids: Iterator[bytes] | list[bytes] | None = None) -> None:
        """fsync the shard directories (of ``cids``, or all of them) so renamed blocks survive a crash."""
        if cids is None:
            shards = {p for p in self.root.iterdir() if p.is_dir()}
        else:
            shards = {self.path_of(c).parent for c in cids}
        for shard in shards:
            fsync_dir(shard)

    def delete(self, cid: bytes) -> int:
        """Remove a block; returns the bytes freed (0 if it was not there)."""
        path = self.path_of(cid)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """Every stored block as ``(cid, size)``; files that are not blocks are skipped."""
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            with os.scandir(shard) as entries:
                for entry in entries:
                    if len(entry.name) != TEXT_LEN or not entry.is_file():
                        continue
                    try:
                        cid = cid_from_text(entry.name)
                    except CidError:
                        continue
                    if len(cid) == CID_LEN:
                        yield cid, entry.stat().st_size
