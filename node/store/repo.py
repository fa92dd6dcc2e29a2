"""The local repo: layout, lock, pins and garbage collection.

Layout (specs/format.md, "Local repo"; the modules named are in node/store/)::

    REPO/version            "sealbox-repo 1"
    REPO/secret             32 random bytes (0600): keys the add fingerprints
    REPO/lock               flock: shared while adding or getting, exclusive while collecting garbage
    REPO/blocks/            the block store: packs/<n>.pack and index.sqlite (blockstore.py)
    REPO/pins/<root>.pin    one pin per root: its block list and a small header
    REPO/adds/<fp>          fingerprint of an added file or tree -> its root (for idempotent adds)
    REPO/tmp/               temp files, removed by gc
    REPO/leases/<r>.lease   what a running fetch holds until it pins, flocked while alive (lease.py)

gc at any moment: it takes the exclusive lock, so adds (which hold the shared lock throughout), unpins
and the moment a fetch pins (node/store/pin_tree.py's ``pin_fetched`` holds the shared lock) never overlap
it; a fetch holds no lock while it fetches, and is protected by its writer sessions' pack locks and its
lease instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from node.store import repocheck
from node.store.blockstore import BlockStore
from node.store.errors import NotFoundError, RepoError, RepoFullError
from node.store.fsutil import discard_on_error, fsync_dir, full_error, is_full, temp_name, write_atomic
from node.store.lease import Lease, leased
from node.store.pinfile import MAX_PIN_HEADER, TRAILER, PinLayout, decode_tail, encode_header
from node.store.pinfile import Pin as Pin  # re-exported: callers import Pin from here
from protocol.cid import CID_LEN, check_cid, cid_from_text, cid_to_text
from protocol.errors import CidError

REPO_VERSION = "sealbox-repo 1"


def default_repo_path() -> Path:
    env = os.environ.get("SEALBOX_REPO")
    return Path(env) if env else Path.home() / ".sealbox"


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.blocks = BlockStore(path / "blocks")
        self.pins_dir = path / "pins"
        self.adds_dir = path / "adds"
        self.tmp = path / "tmp"
        self.leases_dir = path / "leases"  # made by the first lease (older repos lack it)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> Repo:
        """Open the repo at ``path``, creating it (mode 0700) if ``create`` and it does not exist."""
        repo = cls(path)
        version_file = path / "version"
        try:
            version = version_file.read_text().strip()
        except FileNotFoundError:
            if not create:
                raise RepoError(f"no sealbox repo at {path}") from None
            repo._init()
            return repo
        except (NotADirectoryError, PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
            raise RepoError(f"cannot open repo at {path}: {exc.__class__.__name__}") from None
        if version != REPO_VERSION:
            raise RepoError(f"{path} is not a sealbox repo this version can open ({version[:40]!r})")
        return repo

    def _init(self) -> None:
        try:
            if self.path.exists() and any(self.path.iterdir()):
                raise RepoError(f"{self.path} exists, is not empty, and is not a sealbox repo")
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.path, 0o700)  # an empty folder made beforehand too: the repo is the user's own
            for sub in ("blocks", "pins", "adds", "tmp"):
                (self.path / sub).mkdir(mode=0o700, exist_ok=True)
            self.blocks.create()
            write_atomic(self.path / "secret", os.urandom(32), mode=0o600)
            write_atomic(self.path / "version", (REPO_VERSION + "\n").encode(), mode=0o644)
        except NotADirectoryError:
            raise RepoError(f"cannot create repo at {self.path}: a parent is not a directory") from None
        except PermissionError:
            raise RepoError(f"cannot create repo at {self.path}: permission denied") from None
        except OSError as exc:
            if is_full(exc):
                raise full_error(self.path) from None
            raise

    # -- locking ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Shared for add/get/rm (they only add), exclusive for gc (it deletes)."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def lease(self) -> Lease:
        """A new lease (``node/store/lease.py``): what it holds survives gc until it is closed."""
        return Lease(self.leases_dir)

    # -- pins -----------------------------------------------------------------------------------

    def _pin_path(self, root: bytes) -> Path:
        return self.pins_dir / (cid_to_text(root) + ".pin")

    def write_pin(self, pin: Pin, block_list: Path) -> None:
        """Commit a pin: append the header to ``block_list`` (raw CIDs, fsynced by the caller) and rename.

        The rename is the commit point: before it the root is not pinned, after it every block it
        lists is durably in the store.
        """
        with discard_on_error(block_list, self.path):
            with open(block_list, "r+b") as f:
                digest = hashlib.sha256()
                while data := f.read(1 << 20):  # the list as the disk holds it (36 bytes a block)
                    digest.update(data)
                f.seek(0, os.SEEK_END)
                f.write(encode_header(pin, digest.digest()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(block_list, self._pin_path(pin.root))
        fsync_dir(self.pins_dir)

    def rename_pin(self, pin: Pin, name: str | None) -> Pin:
        """Give a pin a new display name (rewrites the pin atomically)."""
        return self._rewrite_pin(dataclasses.replace(pin, name=name))

    def set_key(self, pin: Pin, key: bytes) -> Pin:
        """Keep the key of a root fetched before without it (rewrites the pin atomically)."""
        return self._rewrite_pin(dataclasses.replace(pin, key=key))

    def set_fingerprint(self, pin: Pin, fingerprint: bytes) -> Pin:
        """Record the fingerprint of an add made without one (rewrites the pin atomically). On a full
        disk the pin is left as it was, and the fingerprint is made again the next time it is needed."""
        with contextlib.suppress(RepoFullError):
            pin = self._rewrite_pin(dataclasses.replace(pin, fingerprint=fingerprint))
            self.record_added(fingerprint, pin.root)
        return pin

    def _rewrite_pin(self, new: Pin) -> Pin:
        """Replace the pin of ``new.root`` with ``new``, keeping its block list (checked as it is copied:
        a damaged list is never given a fresh checksum)."""
        tmp = self.new_block_list()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as dst:
                for cid in self.pin_blocks(new.root):
                    dst.write(cid)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.write_pin(new, tmp)
        return new

    def new_block_list(self) -> Path:
        return self.tmp / temp_name("pin-")

    def read_pin(self, root: bytes) -> Pin:
        return self.pin_layout(root).pin

    def pin_layout(self, root: bytes) -> PinLayout:
        """The pin of ``root`` with its list's length and checksum (see node/store/pinfile.py)."""
        try:
            with open(self._pin_path(root), "rb") as f:
                return self._read_layout(f, root)
        except FileNotFoundError:
            raise NotFoundError(f"{cid_to_text(root)} is not pinned in this repo") from None

    def _read_layout(self, f: BinaryIO, root: bytes) -> PinLayout:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - MAX_PIN_HEADER - TRAILER.size))
        try:
            return decode_tail(f.read(MAX_PIN_HEADER + TRAILER.size), size, root)
        except RepoError as exc:
            why = str(exc).removeprefix("pin is damaged: ")
            raise RepoError(f"pin of {cid_to_text(root)} is damaged ({why})") from None

    def _read_header(self, f: BinaryIO, root: bytes) -> Pin:
        return self._read_layout(f, root).pin

    def pins(self, *, on_damaged: Callable[[str], None] | None = None) -> list[Pin]:
        """Every pin, oldest first. Damaged pin files are skipped (gc keeps their blocks) and, if
        ``on_damaged`` is given, named to it: one line each, naming the file, never its contents."""
        out = []
        for path in self.pins_dir.glob("*.pin"):
            try:
                root = cid_from_text(path.name[: -len(".pin")])
            except CidError:
                if on_damaged is not None:
                    on_damaged(f"pins/{path.name[:80]!r} is not named after a root: skipped")
                continue
            try:
                with open(path, "rb") as f:
                    out.append(self._read_header(f, root))
            except RepoError as exc:
                if on_damaged is not None:
                    on_damaged(f"{exc}: skipped ('sealbox repo check' says more)")
            except FileNotFoundError:
                continue
            except OSError as exc:
                if on_damaged is not None:
                    on_damaged(f"pin of {cid_to_text(root)} cannot be read ({exc.strerror}): skipped")
        return sorted(out, key=lambda p: (p.added, p.root))

    def pin_blocks(self, root: bytes) -> Iterator[bytes]:
        """The CIDs a pin holds, streamed from its block list; a v2 list is checked against its checksum
        as it is read, and RepoError raised at its end if it fails (so gc never acts on a damaged list)."""
        with open(self._pin_path(root), "rb") as f:
            layout = self._read_layout(f, root)
            f.seek(0)
            digest = hashlib.sha256()
            damaged = RepoError(f"pin of {cid_to_text(root)} is damaged (its block list fails its checksum)")
            for _ in range(layout.pin.blocks):
                cid = f.read(CID_LEN)
                digest.update(cid)
                try:
                    yield check_cid(cid)
                except CidError:
                    raise damaged from None
            if layout.list_digest is not None and digest.digest() != layout.list_digest:
                raise damaged

    def unpin(self, root: bytes) -> Pin:
        """Remove the pin of ``root``. A damaged pin is removed too (the user asked for that root to go;
        gc refuses to run while it is there): what is returned then holds only its root."""
        try:
            pin = self.read_pin(root)
        except NotFoundError:
            raise
        except RepoError:
            pin = Pin(root, "file", 0, 0, 0, 0.0)
        self._pin_path(root).unlink()
        if pin.fingerprint is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.adds_dir / pin.fingerprint.hex()).unlink()
        fsync_dir(self.pins_dir)
        return pin

    # -- idempotent adds ----------------------------------------------------------------------------

    def fingerprint(self, digest: bytes) -> bytes:
        """Key an add's plaintext digest (node/files/fingerprint.py) with the repo secret, so the adds index
        reveals nothing by itself.

        "v3": chunks are hashed without their padding (v2 hashed them padded, v1 with SHA-256). A record
        of an add made before that no longer matches: adding that content again makes a new root once,
        and records it."""
        secret = (self.path / "secret").read_bytes()
        return hmac.new(secret, b"sealbox add fingerprint v3\x00" + digest, hashlib.sha256).digest()

    def find_added(self, fingerprint: bytes) -> Pin | None:
        """The pin of an earlier add of the same content, if it is still pinned."""
        try:
            root = cid_from_text((self.adds_dir / fingerprint.hex()).read_text().strip())
            pin = self.read_pin(root)
        except (FileNotFoundError, CidError, NotFoundError, RepoError):
            return None
        return pin if pin.fingerprint == fingerprint and pin.key is not None else None

    def record_added(self, fingerprint: bytes, root: bytes) -> None:
        write_atomic(self.adds_dir / fingerprint.hex(), cid_to_text(root).encode(), tmp_dir=self.tmp)

    # -- garbage collection ---------------------------------------------------------------------------

    def _live_blocks(self) -> Iterator[bytes]:
        for path in self.pins_dir.glob("*.pin"):
            try:
                root = cid_from_text(path.name[: -len(".pin")])
            except CidError:
                continue
            try:
                yield from self.pin_blocks(root)
            except RepoError as exc:
                raise RepoError(
                    f"{exc}: gc will not guess what it keeps; 'sealbox rm' that root first"
                ) from None

    def _kept(self) -> Iterator[bytes]:
        """What gc keeps, read lazily in this order (``BlockStore.collect`` relies on it): the live
        leases, then the pins (a fetch writes its pin before it ends its lease)."""
        yield from leased(self.leases_dir)
        yield from self._live_blocks()

    def gc(self) -> tuple[int, int]:
        """Remove every block no pin or live lease holds, stale leases and temp files. Returns
        ``(blocks, bytes)`` freed. Safe while fetches run in this process or others (see above).
        Refuses (RepoDamagedError, nothing deleted) if the index or a pin fails
        node/store/repocheck.py's checks."""
        with self.lock(exclusive=True):
            repocheck.check_before_gc(self)
            removed, freed = self.blocks.collect(self._kept())
            for stale in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    freed += stale.stat().st_size
                    stale.unlink()
            for entry in self.adds_dir.iterdir():
                with contextlib.suppress(FileNotFoundError, CidError, ValueError):
                    if not self._pin_path(cid_from_text(entry.read_text().strip())).exists():
                        entry.unlink()
            return removed, freed

    def close(self) -> None:
        self.blocks.close()


def now() -> float:
    return round(time.time(), 3)
