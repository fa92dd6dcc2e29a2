"""``get``: turn a share link back into the exact file or tree, from the local repo.

Blocks come from the repo, which checked each against its CID when it stored it: data blocks are
opened without hashing them again (``verified=True``; AES-GCM still refuses any change). Output is built
under a temp name beside the destination and renamed into place only when complete and fsynced, so an
interrupted or refused get leaves nothing half-written. Names come from the (untrusted)
manifest and are checked by ``protocol.names``; nothing is ever written outside the destination.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from node.files.direct import DirectWriter
from node.files.errors import DestinationError
from node.files.fingerprint import DirDigest, FileDigest, add_digest, chunk_digest
from node.files.pool import worker_pool
from node.store.blockstore import BlockStore, Location
from node.store.errors import NotFoundError
from node.store.fsutil import fsync_dir, full_error, is_full, temp_name
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError, ManifestError
from protocol.link import ShareLink
from protocol.manifest import EntryDecoder, Node, open_node
from protocol.seal import NodeKeys
from protocol.stream import iter_leaves, open_content

Progress = Callable[[int], None]
IN_FLIGHT = 8
LOCATE_AHEAD = 64  # leaves whose places in the repo are looked up in one query
MAX_DEPTH = 255
MAX_NODES = 10_000_000


@dataclass(frozen=True)
class GetResult:
    path: Path
    kind: str
    size: int
    files: int


def _ignore(_: int) -> None:
    pass


class _Getter:
    def __init__(
        self,
        store: BlockStore,
        key: bytes,
        pool: ThreadPoolExecutor,
        out: DirectWriter | None = None,  # for write_file; digest() writes nothing
        progress: Progress = _ignore,
    ) -> None:
        self.store = store
        self.out = out
        self.key = key
        self.pool = pool
        self.progress = progress
        self.numbers: set[int] = {0}
        self.size = 0
        self.files = 0

    def fetch(self, cid: bytes, where: Location | None = None) -> bytes:
        return self.store.get(cid, verify=False, where=where)

    def _leaves(self, node: Node, keys: NodeKeys) -> Iterator[tuple[int, bytes, Location | None]]:
        """``iter_leaves``, with each leaf's place in the repo looked up LOCATE_AHEAD leaves at a time."""
        leaves = iter_leaves(node, keys, self.fetch)
        while batch := list(itertools.islice(leaves, LOCATE_AHEAD)):
            where = self.store.locate(cid for _, cid in batch)
            for position, cid in batch:
                yield position, cid, where.get(cid)

    def open_node(self, number: int, cid: bytes, *, root: bool) -> tuple[Node, NodeKeys]:
        return open_node(self.key, number, cid, self.fetch(cid), root=root)

    def stream(self, node: Node, keys: NodeKeys) -> Iterator[bytes]:
        """The node's plaintext in order, padding removed and checked to be zeros: each chunk is read
        and opened in a worker thread, at most IN_FLIGHT at once."""
        pending: deque[Future[bytes]] = deque()

        def opened(position: int, cid: bytes, where: Location | None) -> bytes:
            return open_content(keys.data, node, position, cid, self.fetch(cid, where), verified=True)

        for position, cid, where in self._leaves(node, keys):
            pending.append(self.pool.submit(opened, position, cid, where))
            if len(pending) >= IN_FLIGHT:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def write_file(self, node: Node, keys: NodeKeys, path: Path) -> None:
        assert self.out is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if node.size:
                # reserve the space first: a full disk fails now, not after minutes of work
                os.posix_fallocate(fd, 0, node.size)
            self.out.start_file(fd, node.size)
            try:
                for content in self.stream(node, keys):
                    self.out.append(content)
                    self.progress(len(content))
            finally:
                self.out.finish_file()  # before the descriptor closes, even on error
            os.ftruncate(fd, node.size)  # the last piece was written rounded up
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = _umask()
        os.chmod(path, (0o777 if node.executable else 0o666) & ~umask)
        self.size += node.size
        self.files += 1

    def children(self, node: Node, keys: NodeKeys, depth: int) -> Iterator[tuple[str, Node, NodeKeys]]:
        """A directory's entries in order, each as ``(name, node, keys)``; refuses a tree nested too
        deeply or with too many nodes, and a node number used twice."""
        if depth > MAX_DEPTH:
            raise ManifestError("directory tree is nested too deeply")
        decoder = EntryDecoder()
        for data in self.stream(node, keys):
            for entry in decoder.feed(data):
                if entry.number in self.numbers or len(self.numbers) >= MAX_NODES:
                    raise ManifestError("manifest reuses a node number or holds too many entries")
                self.numbers.add(entry.number)
                yield (entry.name, *self.open_node(entry.number, entry.cid, root=False))
        decoder.finish()

    def write_dir(self, node: Node, keys: NodeKeys, path: Path, depth: int) -> None:
        os.mkdir(path, 0o700)
        for name, child, child_keys in self.children(node, keys, depth):
            try:
                if child.kind == "file":
                    self.write_file(child, child_keys, path / name)
                else:
                    self.write_dir(child, child_keys, path / name, depth + 1)
            except FileExistsError:
                raise DestinationError(
                    f"two entries map to the same name {name[:64]!r} on this file system"
                ) from None
        fsync_dir(path)
        os.chmod(path, 0o777 & ~_umask())

    def digest(self, node: Node, keys: NodeKeys, depth: int = 0) -> bytes:
        """The digest ``add`` makes of the content (node/files/fingerprint.py), made from the blocks."""
        if node.kind == "file":
            chunks = FileDigest()
            for content in self.stream(node, keys):
                chunks.add(chunk_digest(content))
            return chunks.finish(node.size, node.executable)
        entries = DirDigest()
        for name, child, child_keys in self.children(node, keys, depth):
            entries.add(name, self.digest(child, child_keys, depth + 1))
        return entries.finish()


def added_digest(repo: Repo, root: bytes, key: bytes) -> bytes:
    """The add digest (node/files/fingerprint.py) of a root this repo holds, made from its stored blocks: for
    an add that was made without one. The caller holds the repo's lock."""
    with worker_pool(_workers(), "open") as pool:
        getter = _Getter(repo.blocks, key, pool)
        node, keys = getter.open_node(0, root, root=True)
        assert node.name is not None  # decode_node(root=True) checks it
        return add_digest(getter.digest(node, keys), node.name, node.chunk_size)


def _workers() -> int:
    """Threads that read and open blocks: two per core (reads wait on the disk), eight at most."""
    return min(8, 2 * (os.cpu_count() or 1))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def resolve_destination(dest: Path | None, name: str) -> Path:
    """Where the output goes: DEST itself, DEST/name if DEST is a directory, or ./name without DEST."""
    if dest is None:
        final = Path.cwd() / name
    elif dest.is_dir():
        final = dest / name
    else:
        final = dest
    if os.path.lexists(final):
        raise DestinationError(f"{final} already exists: choose another destination with -o")
    if not final.parent.is_dir():
        raise DestinationError(f"{final.parent} is not a directory")
    return final


def get_link(
    repo: Repo,
    link: ShareLink,
    dest: Path | None,
    *,
    progress: Progress = _ignore,
    workers: int | None = None,
) -> GetResult:
    """Rebuild the file or tree ``link`` names from blocks in ``repo`` at ``dest``."""

    with (
        repo.lock(),
        worker_pool(workers or _workers(), "open") as pool,
        contextlib.closing(DirectWriter()) as out,
    ):
        getter = _Getter(repo.blocks, link.key, pool, out, progress)
        try:
            node, keys = getter.open_node(0, link.root, root=True)
        except NotFoundError:
            raise NotFoundError(f"{cid_to_text(link.root)} is not in this repo") from None
        assert node.name is not None  # decode_node(root=True) checks it
        final = resolve_destination(dest, node.name)
        tmp = final.parent / temp_name("sealbox-get-")
        try:
            if node.kind == "file":
                getter.write_file(node, keys, tmp)
            else:
                getter.write_dir(node, keys, tmp, 0)
            if link.size is not None and link.size != getter.size:
                raise LinkError("the link's size does not match the content: the link is wrong")
            _rename_no_replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            if is_full(exc):
                raise full_error(final.parent) from None
            raise DestinationError(f"cannot write {final}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
        return GetResult(final, node.kind, getter.size, getter.files)


def _rename_no_replace(src: Path, dst: Path) -> None:
    if src.is_dir():
        if os.path.lexists(dst):
            raise DestinationError(f"{dst} already exists: choose another destination with -o")
        os.rename(src, dst)
    else:
        os.link(src, dst)  # fails if dst exists: never replaces a file that appeared meanwhile
        src.unlink()
