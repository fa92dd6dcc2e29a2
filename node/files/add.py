"""``add``: seal a file or a directory tree into the repo, pin it and make its share link.

The main thread reads the input and feeds the pure chunker and index builder; worker threads seal, hash
and durably store the chunks (AES-GCM, SHA-256, BLAKE3 and file writes release the GIL). Memory stays
bounded: a few chunks in flight per stream plus one index path, whatever the input size.

Idempotent adds need a digest of the plaintext besides the CIDs (which change with the fresh key): see
node/files/fingerprint.py for how it is made, and why only an add that may repeat an earlier one makes it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from node.errors import NodeError
from node.files.errors import InputError
from node.files.fingerprint import DirDigest, FileDigest, add_digest, chunk_digest
from node.files.get import added_digest
from node.files.inputs import Folder, checked_input, refuse_colliding_names, scan_size
from node.files.pool import worker_pool
from node.store.blockstore import PackWriter
from node.store.errors import RepoFullError
from node.store.fsutil import full_error, is_full
from node.store.repo import Pin, Repo, now
from protocol.cid import cid_of
from protocol.errors import ProtocolError, UnsafeNameError
from protocol.link import ShareLink
from protocol.manifest import DEFAULT_CHUNK, Entry, Node, check_chunk_size, encode_entry, encode_node
from protocol.names import check_name
from protocol.seal import NodeKeys, StreamKey, new_key
from protocol.stream import Chunker, IndexBuilder, content_length, seal_chunk
from protocol.walk import MAX_DEPTH

Progress = Callable[[int], None]
Warn = Callable[[str], None]
IN_FLIGHT = 8


@dataclass(frozen=True)
class AddResult:
    link: ShareLink
    pin: Pin
    new_blocks: int
    existing: bool  # the same content was already added: its link is returned, nothing new stored


def _ignore(_: int) -> None:
    pass


class _Adder:
    def __init__(
        self,
        repo: Repo,
        writer: PackWriter,
        pool: ThreadPoolExecutor,
        chunk_size: int,
        progress: Progress,
        warn: Warn,
        hashing: bool,
    ):
        self.repo = repo
        self.hashing = hashing  # make the plaintext digest (node/files/fingerprint.py)
        self.writer = writer
        self.pool = pool
        self.cs = chunk_size
        self.key = new_key()
        self.progress = progress
        self.warn = warn
        self.next_number = 0
        self.list_path = repo.new_block_list()
        # the pin holds the key: owner-only, like the whole repo
        fd = os.open(self.list_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.list_file: BinaryIO = os.fdopen(fd, "wb")
        self.blocks = 0
        self.stored = 0
        self.total_size = 0

    # -- storing -----------------------------------------------------------------------------

    def _seal_put(
        self, key: StreamKey, position: int, chunk: bytes, content: int | None
    ) -> tuple[bytes, int, bytes]:
        """In a worker: seal and store one chunk; with ``content`` (how many of its bytes are not
        padding), also hash those for the add's digest."""
        cid, block = seal_chunk(key, position, chunk)
        self._put_only(cid, block)
        digest = b"" if content is None else chunk_digest(memoryview(chunk)[:content])
        return cid, len(block), digest

    def _put_only(self, cid: bytes, block: bytes) -> None:
        # the CID was computed from these very bytes by seal_chunk / cid_of just before, and the block
        # was sealed under this add's fresh key: the store cannot hold it already
        self.writer.put(cid, block, verify=False, force=True)

    def _record(self, cid: bytes, size: int) -> None:
        self.list_file.write(cid)
        self.blocks += 1
        self.stored += size

    def _put(self, cid: bytes, block: bytes) -> None:
        self._put_only(cid, block)
        self._record(cid, len(block))

    def _stream(
        self, keys: NodeKeys, pieces: Callable[[], bytes], digest: FileDigest | None = None, size: int = 0
    ) -> tuple[int, int, tuple[bytes, ...]]:
        """Seal one stream read by ``pieces()`` (b"" at the end); returns ``(size, level, top)``.

        With ``digest``, the stream is a file of ``size`` bytes: each chunk's content is hashed in the
        workers (so it costs the main thread nothing) and fed to ``digest`` in order.
        """
        chunker = Chunker(self.cs)
        index = IndexBuilder(keys, self.cs)
        pending: deque[Future[tuple[bytes, int, bytes]]] = deque()

        def seal(position: int, chunk: bytes) -> None:
            content = None if digest is None else content_length(size, self.cs, position)
            pending.append(self.pool.submit(self._seal_put, keys.data, position, chunk, content))
            while len(pending) > IN_FLIGHT:
                drain()

        def drain() -> None:
            cid, stored, chunk = pending.popleft().result()
            if digest is not None:
                digest.add(chunk)
            self._record(cid, stored)
            for block in index.add(cid):
                self._put(*block)

        while data := pieces():
            for position, chunk in chunker.feed(data):
                seal(position, chunk)
        for position, chunk in chunker.finish():
            seal(position, chunk)
        while pending:
            drain()
        level, top, blocks = index.finish()
        for block in blocks:
            self._put(*block)
        return chunker.size, level, top

    def _node(self, keys: NodeKeys, node: Node) -> bytes:
        block = keys.node.seal(0, encode_node(node))
        cid = cid_of(block)
        self._put(cid, block)
        return cid

    # -- walking -----------------------------------------------------------------------------

    def add(self, path: Path | Folder, name: str | None, depth: int = 0) -> tuple[bytes, bytes | None, str]:
        """Seal ``path``; returns ``(node cid, plaintext digest or None if not hashing, kind)``."""
        if isinstance(path, Folder):
            return self._add_entries(path.entries(), NodeKeys(self.key, self._number()), name, depth)
        if depth > MAX_DEPTH:  # the decoders' rule (protocol/walk.py): no node deeper than MAX_DEPTH
            raise InputError(f"{path} is nested too deeply")
        keys = NodeKeys(self.key, self._number())
        try:
            st = os.stat(path) if depth == 0 else os.lstat(path)
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            return self._add_dir(path, keys, name, depth)
        if stat.S_ISREG(st.st_mode):
            return self._add_file(path, keys, name, st)
        raise InputError(f"cannot add {path}: not a regular file or directory")

    def _number(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number

    def _add_file(
        self, path: Path, keys: NodeKeys, name: str | None, st: os.stat_result
    ) -> tuple[bytes, bytes | None, str]:
        try:
            f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        with f:
            # read ahead harder: a 1 GiB file not in the page cache was added 5-28% faster (three
            # pairs); where the file is cached it changes nothing
            with contextlib.suppress(OSError, AttributeError):  # AttributeError: no posix_fadvise here
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)

            def pieces() -> bytes:
                try:
                    data = f.read(self.cs)
                except OSError as exc:
                    raise InputError(f"cannot read {path}: {exc.strerror}") from None
                self.progress(len(data))
                return data

            digest = FileDigest() if self.hashing else None
            size, level, top = self._stream(keys, pieces, digest, st.st_size)
        if size != st.st_size or os.stat(path).st_mtime_ns != st.st_mtime_ns:
            raise InputError(f"{path} changed while it was being added: try again")
        executable = bool(st.st_mode & stat.S_IXUSR)
        self.total_size += size
        cid = self._node(keys, Node("file", size, self.cs, level, top, executable, name))
        return cid, None if digest is None else digest.finish(size, executable), "file"

    def _add_dir(
        self, path: Path, keys: NodeKeys, name: str | None, depth: int
    ) -> tuple[bytes, bytes | None, str]:
        try:
            with os.scandir(path) as it:
                children = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        kept = []
        for child in children:
            if not (child.is_dir(follow_symlinks=False) or child.is_file(follow_symlinks=False)):
                self.warn(f"skipping {'symlink' if child.is_symlink() else 'special file'} {child.path}")
                continue
            try:
                check_name(child.name)
            except UnsafeNameError as exc:
                raise InputError(f"cannot add {child.path}: {exc}") from None
            kept.append((child.name, Path(child.path)))
        refuse_colliding_names(path, [child_name for child_name, _ in kept])
        return self._add_entries(kept, keys, name, depth)

    def _add_entries(
        self, children: list[tuple[str, Path]], keys: NodeKeys, name: str | None, depth: int
    ) -> tuple[bytes, bytes | None, str]:
        """A directory node of ``children`` (``(name, path)``, in order, names checked)."""
        digest = DirDigest()
        entries = iter(children)

        def pieces() -> bytes:
            for child_name, child_path in entries:
                number = self.next_number
                cid, child_digest, _kind = self.add(child_path, None, depth + 1)
                if child_digest is not None:
                    digest.add(child_name, child_digest)
                return encode_entry(Entry(child_name, number, cid))
            return b""

        # the entry stream holds child CIDs, which change with the key: the digest is built from
        # names and child digests instead
        size, level, top = self._stream(keys, pieces)
        cid = self._node(keys, Node("dir", size, self.cs, level, top, False, name))
        return cid, digest.finish() if self.hashing else None, "dir"


def _alike(repo: Repo, path: Path | Folder) -> list[Pin]:
    """Earlier adds of the same kind and total size as ``path``: only those can hold the same content."""
    try:
        st = None if isinstance(path, Folder) else os.stat(path)
    except OSError:
        return []  # the add reports it
    kind = "file" if st is not None and stat.S_ISREG(st.st_mode) else "dir"
    size = st.st_size if st is not None and kind == "file" else scan_size(path)
    return [pin for pin in repo.pins() if pin.key is not None and pin.kind == kind and pin.size == size]


def _same_as(repo: Repo, alike: list[Pin], fingerprint: bytes) -> Pin | None:
    """The earlier add among ``alike`` with this fingerprint, making (and recording) the fingerprints of
    those added without one from their stored blocks."""
    for pin in alike:
        if pin.fingerprint is None and pin.key is not None:
            try:
                digest = added_digest(repo, pin.root, pin.key)
            except (NodeError, ProtocolError):
                continue  # e.g. a damaged block: that root cannot stand in for this add
            pin = repo.set_fingerprint(pin, repo.fingerprint(digest))
        if pin.fingerprint == fingerprint:
            return pin
    return None


def _close_list(adder: _Adder) -> None:
    """Make the block list durable before the pin that names it is written."""
    adder.list_file.flush()
    os.fsync(adder.list_file.fileno())
    adder.list_file.close()


def _drop_list(adder: _Adder) -> None:
    """Remove the block list of an add that did not end in a pin."""
    with contextlib.suppress(OSError):  # flushing the block list fails on a full disk
        adder.list_file.close()
    with contextlib.suppress(FileNotFoundError):
        adder.list_path.unlink()


def _existing(repo: Repo, earlier: Pin, key: bytes, display_name: str | None, with_size: bool) -> AddResult:
    """The same content was added before (under ``key``): its link, renamed if asked; this session's
    packs are dropped."""
    pin = earlier
    if display_name is not None and display_name != earlier.name:
        pin = repo.rename_pin(earlier, display_name)
    link = ShareLink(pin.root, key, display_name, pin.size if with_size else None)
    return AddResult(link, pin, 0, True)


FRAMES_PER_LEVEL = 8  # Python frames the adder's recursion takes per directory level (4 measured)


def _room_to_recurse() -> None:
    """Make Python's recursion limit (1000 by default) room enough for a tree of ``MAX_DEPTH`` levels
    on top of whatever called us. Raised for the process and never lowered (a lower limit could trip
    another thread's add)."""
    need = 1000 + FRAMES_PER_LEVEL * MAX_DEPTH
    if sys.getrecursionlimit() < need:
        sys.setrecursionlimit(need)


def add_path(
    repo: Repo,
    path: Path | Folder,
    *,
    entry_name: str | None = None,
    display_name: str | None = None,
    with_size: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress = _ignore,
    warn: Warn | None = None,
    workers: int | None = None,
) -> AddResult:
    """Seal ``path`` (a file, a directory tree, or a :class:`Folder` of several) into ``repo``, pin it
    and return its link. ``entry_name`` names the root's node instead of the path's last component."""
    check_chunk_size(chunk_size)
    _room_to_recurse()
    if isinstance(path, Folder):
        path.entries()  # the paths' checks, before the repo is locked
        name = entry_name or path.name
    else:
        path, name = checked_input(path, entry_name)
    # one sealing thread per core: with two per core (and the reading thread) on 2 cores, a 1 GiB add
    # was 5-20% slower in each of five back-to-back pairs; the threads only contend for the cores
    workers = workers or min(8, os.cpu_count() or 1)
    with repo.lock(), repo.blocks.writer() as writer:
        adder: _Adder | None = None
        committed = False
        try:
            alike = _alike(repo, path)
            with worker_pool(workers, "seal") as pool:
                adder = _Adder(
                    repo, writer, pool, chunk_size, progress, warn or (lambda _msg: None), bool(alike)
                )
                root, digest, kind = adder.add(path, name)
            _close_list(adder)
            fingerprint = None
            if digest is not None:
                fingerprint = repo.fingerprint(add_digest(digest, name, chunk_size))
                earlier = repo.find_added(fingerprint) or _same_as(repo, alike, fingerprint)
                if earlier is not None and earlier.key is not None:
                    return _existing(repo, earlier, earlier.key, display_name, with_size)
            writer.commit()
            size, key = adder.total_size, adder.key
            pin = Pin(root, kind, size, adder.blocks, adder.stored, now(), display_name, key, fingerprint)
            repo.write_pin(pin, adder.list_path)
            committed = True
            # the add is done; without this record (e.g. on a full disk) a later add of the same content
            # makes a new root instead of returning this one
            if fingerprint is not None:
                with contextlib.suppress(RepoFullError):
                    repo.record_added(fingerprint, root)
            link = ShareLink(root, key, display_name, size if with_size else None)
            return AddResult(link, pin, writer.written, False)
        except OSError as exc:
            if is_full(exc):  # e.g. writing the block list
                raise full_error(repo.path) from None
            raise
        finally:
            if adder is not None and not committed:
                _drop_list(adder)


MAX_ADD_PATHS = 4096  # paths in one folder made of several (an API request's cap)


def add_paths(
    repo: Repo, paths: list[Path], *, as_folder: str | None = None, **options: Any
) -> list[AddResult]:
    """One root per path, or with ``as_folder`` one root: a folder of that name holding every path.
    ``options`` are :func:`add_path`'s."""
    if as_folder is not None:
        return [add_path(repo, Folder(as_folder, tuple(paths)), **options)]
    return [add_path(repo, path, **options) for path in paths]
