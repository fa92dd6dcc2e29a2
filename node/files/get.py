"""``get``: turn a share link back into the exact file or tree, from the local repo.

Blocks come from the repo, which checked each against its CID when it stored it: data blocks are
opened without hashing them again (``verified=True``; AES-GCM still refuses any change). Output is built
under a temp name beside the destination and renamed into place only when complete and fsynced, so an
interrupted or refused get leaves nothing half-written. Names come from the (untrusted)
manifest and are checked by ``protocol.names``; nothing is ever written outside the destination.

``path`` narrows a get to one entry inside a shared folder (specs/format.md, "Selecting a path"): only
the folders on the way there and that entry's blocks are read. :func:`stream_link` writes one file to
a stream (``get -o -``) instead of a destination.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from node.files.direct import DirectWriter
from node.files.errors import DestinationError, NoEntryError
from node.files.fingerprint import DirDigest, FileDigest, add_digest, chunk_digest
from node.files.pool import worker_pool
from node.store.blockstore import BlockStore, Location
from node.store.errors import NotFoundError
from node.store.fsutil import fsync_dir, full_error, is_full, temp_name
from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.errors import LinkError
from protocol.link import ShareLink
from protocol.stream import open_content
from protocol.walk import Enter, Exit, Leaves, NodeInfo, TreeWalk

Progress = Callable[[int], None]
IN_FLIGHT = 8
LOCATE_AHEAD = 64  # leaves whose places in the repo are looked up in one query


@dataclass(frozen=True)
class GetResult:
    path: Path
    kind: str
    size: int
    files: int


def _ignore(_: int) -> None:
    pass


Steps = Iterator[Enter | Exit | Leaves]


class _Getter:
    def __init__(
        self,
        store: BlockStore,
        key: bytes,
        pool: ThreadPoolExecutor,
        out: DirectWriter | None = None,  # for write_tree; digest() writes nothing
        progress: Progress = _ignore,
    ) -> None:
        self.store = store
        self.out = out
        self.key = key
        self.pool = pool
        self.progress = progress
        self.size = 0
        self.files = 0

    def fetch(self, cid: bytes, where: Location | None = None) -> bytes:
        return self.store.get(cid, verify=False, where=where)

    def walk(self, root: bytes, path: tuple[str, ...] = ()) -> tuple[NodeInfo, Steps]:
        """The walk of the tree (protocol/walk.py), its metadata read from the repo, up to the Enter of
        the node ``path`` names (the root without one): that node, and the steps that follow it."""
        steps = TreeWalk(self.key, root, select=path).steps(self.fetch)
        try:
            first = next(steps)
        except NotFoundError:
            raise NotFoundError(f"{cid_to_text(root)} is not in this repo") from None
        assert isinstance(first, Enter)
        if not path:
            return first.info, steps
        for step in steps:  # a NotFoundError here: a folder on the way is not fetched yet
            if isinstance(step, Enter) and step.info.depth == len(path):
                return step.info, steps
        shown = "/".join(path)[:200]
        raise NoEntryError(f"no entry {shown!r} in this folder; 'sealbox ls LINK' lists it")

    @staticmethod
    def _runs(steps: Steps) -> Iterator[Leaves]:
        """A file's runs of leaves: the steps up to its Exit (a file holds no other node)."""
        for step in steps:
            if isinstance(step, Exit):
                return
            assert isinstance(step, Leaves)
            yield step

    def stream(self, info: NodeInfo, runs: Iterator[Leaves]) -> Iterator[bytes]:
        """The file's plaintext in order, padding removed and checked to be zeros: each chunk is read
        and opened in a worker thread, at most IN_FLIGHT at once; the leaves' places in the repo are
        looked up LOCATE_AHEAD at a time."""
        pending: deque[Future[bytes]] = deque()
        node, key = info.node, info.keys.data

        def opened(position: int, cid: bytes, where: Location | None) -> bytes:
            return open_content(key, node, position, cid, self.fetch(cid, where), verified=True)

        for run in runs:
            for first in range(0, len(run.cids), LOCATE_AHEAD):
                batch = run.cids[first : first + LOCATE_AHEAD]
                where = self.store.locate(batch)
                for i, cid in enumerate(batch, run.start + first):
                    pending.append(self.pool.submit(opened, i, cid, where.get(cid)))
                    if len(pending) >= IN_FLIGHT:
                        yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def write_file(self, info: NodeInfo, runs: Iterator[Leaves], path: Path) -> None:
        assert self.out is not None
        node = info.node
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            if node.size:
                # reserve the space first: a full disk fails now, not after minutes of work
                os.posix_fallocate(fd, 0, node.size)
            self.out.start_file(fd, node.size)
            try:
                for content in self.stream(info, runs):
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

    def write_tree(self, root: NodeInfo, steps: Steps, path: Path) -> None:
        """Write the tree the walk's steps describe at ``path`` (its root's Enter already taken)."""
        if root.node.kind == "file":
            self.write_file(root, self._runs(steps), path)
            return
        os.mkdir(path, 0o700)
        dirs = [path]
        for step in steps:
            if isinstance(step, Exit):  # a directory's: a file's ends in _runs
                fsync_dir(dirs[-1])
                os.chmod(dirs.pop(), 0o777 & ~_umask())
                if not dirs:  # the top one's: what follows closes the folders above a selected entry
                    return
                continue
            assert isinstance(step, Enter)
            info = step.info
            target = dirs[-1] / info.name
            try:
                if info.node.kind == "file":
                    self.write_file(info, self._runs(steps), target)
                else:
                    os.mkdir(target, 0o700)
                    dirs.append(target)
            except FileExistsError:
                raise DestinationError(
                    f"two entries map to the same name {info.name[:64]!r} on this file system"
                ) from None

    def digest(self, root: NodeInfo, steps: Steps) -> bytes:
        """The digest ``add`` makes of the content (node/files/fingerprint.py), made from the blocks."""
        dirs: list[DirDigest] = []
        step: Enter | Exit | Leaves = Enter(root)
        while True:
            info = step.info
            if isinstance(step, Enter) and info.node.kind == "dir":
                dirs.append(DirDigest())
            else:
                if isinstance(step, Enter):  # a file
                    chunks = FileDigest()
                    for content in self.stream(info, self._runs(steps)):
                        chunks.add(chunk_digest(content))
                    digest = chunks.finish(info.node.size, info.node.executable)
                else:  # a directory's Exit
                    digest = dirs.pop().finish()
                if not dirs:
                    return digest
                dirs[-1].add(info.name, digest)
            step = next(steps)


def added_digest(repo: Repo, root: bytes, key: bytes) -> bytes:
    """The add digest (node/files/fingerprint.py) of a root this repo holds, made from its stored blocks: for
    an add that was made without one. The caller holds the repo's lock."""
    with worker_pool(_workers(), "open") as pool:
        getter = _Getter(repo.blocks, key, pool)
        info, steps = getter.walk(root)
        return add_digest(getter.digest(info, steps), info.name, info.node.chunk_size)


def _workers() -> int:
    """Threads that read and open blocks: two per core (reads wait on the disk), eight at most."""
    return min(8, 2 * (os.cpu_count() or 1))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output(output: str) -> Path:
    """``-o OUTPUT`` as a path, refused at once (before any fetch) when it cannot be written: its folder
    does not exist, or it names a file that does. ``OUTPUT/`` must be an existing folder."""
    dest = Path(output)
    if dest.is_dir():
        return dest
    if output.endswith(os.sep):
        raise DestinationError(f"no such folder: {dest}")
    if os.path.lexists(dest):
        raise DestinationError(f"{dest} already exists: choose another destination with -o")
    _check_folder(dest.parent)
    return dest


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise DestinationError(
            f"{folder} is not a folder" if os.path.lexists(folder) else f"no such folder: {folder}"
        )


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
    _check_folder(final.parent)
    return final


def get_link(
    repo: Repo,
    link: ShareLink,
    dest: Path | None,
    *,
    path: tuple[str, ...] = (),
    progress: Progress = _ignore,
    workers: int | None = None,
) -> GetResult:
    """Rebuild the file or tree ``link`` names (or the entry ``path`` names in it) from blocks in
    ``repo`` at ``dest``. NoEntryError if ``path`` names nothing in the tree."""

    with (
        repo.lock(),
        worker_pool(workers or _workers(), "open") as pool,
        contextlib.closing(DirectWriter()) as out,
    ):
        getter = _Getter(repo.blocks, link.key, pool, out, progress)
        root, steps = getter.walk(link.root, path)
        final = resolve_destination(dest, root.name)
        tmp = final.parent / temp_name("sealbox-get-")
        try:
            getter.write_tree(root, steps, tmp)
            if link.size is not None and not path and link.size != getter.size:
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
        return GetResult(final, root.node.kind, getter.size, getter.files)


def stream_link(
    repo: Repo,
    link: ShareLink,
    out: BinaryIO,
    *,
    path: tuple[str, ...] = (),
    progress: Progress = _ignore,
) -> GetResult:
    """Write the file ``link`` names (or the file ``path`` names in its folder) to ``out``, in order
    (``get -o -``). A folder is refused before a byte is written: it has no single stream."""
    with repo.lock(), worker_pool(_workers(), "open") as pool:
        getter = _Getter(repo.blocks, link.key, pool, progress=progress)
        info, steps = getter.walk(link.root, path)
        if info.node.kind != "file":
            raise DestinationError("a folder cannot go to stdout: give -o DIR")
        _check_held(repo.blocks, getter._runs(getter.walk(link.root, path)[1]))  # a pass over metadata
        if link.size is not None and not path and link.size != info.node.size:
            raise LinkError("the link's size does not match the content: the link is wrong")
        for content in getter.stream(info, getter._runs(steps)):
            out.write(content)
            progress(len(content))
        out.flush()
        return GetResult(Path("-"), "file", info.node.size, 1)


def _check_held(store: BlockStore, runs: Iterator[Leaves]) -> None:
    """NotFoundError unless every leaf of the runs is held: a stream cannot take back what it wrote, so
    a missing block must be found (and fetched) before the first byte goes out."""
    for run in runs:
        for first in range(0, len(run.cids), LOCATE_AHEAD):
            batch = run.cids[first : first + LOCATE_AHEAD]
            if len(store.locate(batch)) < len(set(batch)):
                raise NotFoundError("a block of the file is not in this repo")


def _rename_no_replace(src: Path, dst: Path) -> None:
    if src.is_dir():
        if os.path.lexists(dst):
            raise DestinationError(f"{dst} already exists: choose another destination with -o")
        os.rename(src, dst)
    else:
        os.link(src, dst)  # fails if dst exists: never replaces a file that appeared meanwhile
        src.unlink()
