"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pty
import re
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from node.store.errors import RepoError
from node.store.pinfile import MAX_PIN_HEADER, TRAILER, Pin, decode_tail
from node.store.repo import Repo
from protocol.cid import cid_of, cid_to_text, split_cids
from protocol.errors import CidError
from protocol.manifest import Node, encode_node
from protocol.seal import NodeKeys
from protocol.stream import Chunker, IndexBuilder, seal_chunk

SEALBOX = str(Path(sys.executable).parent / "sealbox")
KIB = 1024
SMALL_CHUNK = 16 * KIB


class RunCli(Protocol):
    def __call__(
        self, *args: str | Path, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]: ...


def block_set(repo: Repo) -> set[bytes]:
    """The CIDs of every block stored in ``repo``."""
    return {cid for cid, _size in repo.blocks}


def pack_files(repo: Repo) -> set[str]:
    """The names of the pack files on disk."""
    return {p.name for p in repo.blocks.packs.iterdir()}


def block_region(repo: Repo, cid: bytes) -> tuple[Path, int, int]:
    """Where a stored block's bytes lie on disk: ``(pack file, offset, length)``."""
    where = repo.blocks._locate(cid)
    assert where is not None, "block not stored"
    pack, offset, length = where
    return repo.blocks.pack_path(pack), offset, length


def decode_pin_file(data: bytes, root: bytes | None = None) -> tuple[Pin, list[bytes]]:
    """Decode a whole pin file held in memory: its pin and its block list (each CID checked; for v2 the
    list's checksum too), RepoError only. The repo streams the list instead (Repo.pin_blocks)."""
    tail = data[-(MAX_PIN_HEADER + TRAILER.size) :]
    layout = decode_tail(tail, len(data), root)
    listed = data[: layout.list_len]
    if layout.list_digest is not None and hashlib.sha256(listed).digest() != layout.list_digest:
        root_text = cid_to_text(layout.pin.root)
        raise RepoError(f"pin of {root_text} is damaged: its block list fails its checksum")
    try:
        return layout.pin, split_cids(listed)
    except CidError:
        raise RepoError(f"pin of {cid_to_text(layout.pin.root)} is damaged: it lists a non-CID") from None


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read a MiB at a time (outputs of hundreds of MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_region(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_region(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes of a file in place (a block damaged on disk)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def snapshot(root: Path) -> dict[str, tuple[str, bytes, bool]]:
    """Everything that matters about a tree: relative path -> (kind, content, user-executable)."""
    out: dict[str, tuple[str, bytes, bool]] = {}

    def one(path: Path, rel: str) -> None:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", b"", False)
            for child in sorted(os.listdir(path)):
                one(path / child, f"{rel}/{child}")
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", path.read_bytes(), bool(st.st_mode & stat.S_IXUSR))
        else:
            out[rel] = ("other", b"", False)

    one(root, ".")
    return out


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (relative), to check that nothing appeared or vanished."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- hand-built trees: seal exactly what a test says, bypassing node/files/add.py's checks -------------------


def put_node(repo: Repo, keys: NodeKeys, node: Node) -> bytes:
    """Seal ``node`` as node block of ``keys`` into ``repo``; returns its CID."""
    block = keys.node.seal(0, encode_node(node))
    cid = cid_of(block)
    repo.blocks.put(cid, block)
    return cid


def seal_stream(
    repo: Repo, keys: NodeKeys, data: bytes, cs: int = SMALL_CHUNK
) -> tuple[int, tuple[bytes, ...]]:
    """Seal ``data`` as the stream of ``keys`` into ``repo``; returns the node's ``(level, top)``."""
    chunker = Chunker(cs)
    index = IndexBuilder(keys, cs)
    with repo.blocks.writer() as writer:
        for position, chunk in [*chunker.feed(data), *chunker.finish()]:
            cid, block = seal_chunk(keys.data, position, chunk)
            writer.put(cid, block)
            for index_block in index.add(cid):
                writer.put(*index_block)
        level, top, rest = index.finish()
        for index_block in rest:
            writer.put(*index_block)
        writer.commit()
    return level, top


def seal_file(
    repo: Repo, master: bytes, number: int, data: bytes, name: str | None = None, cs: int = SMALL_CHUNK
) -> bytes:
    keys = NodeKeys(master, number)
    level, top = seal_stream(repo, keys, data, cs)
    return put_node(repo, keys, Node("file", len(data), cs, level, top, False, name))


def seal_dir(
    repo: Repo, master: bytes, number: int, listing: bytes, name: str | None = None, cs: int = SMALL_CHUNK
) -> bytes:
    """Seal a directory whose entry stream is exactly ``listing`` (e.g. ``encode_entry`` output joined)."""
    keys = NodeKeys(master, number)
    level, top = seal_stream(repo, keys, listing, cs)
    return put_node(repo, keys, Node("dir", len(listing), cs, level, top, False, name))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """A command that succeeded, without a traceback; returns its stdout."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """Check the shape of every failure: exit 1, one line on stderr, no traceback. Returns that line."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sealbox: error: ")
    return lines[0]


class LoggedProcess:
    """A subprocess whose log (stderr) a thread reads line by line, so that a test waits for what the
    process says it did (an event), never for a length of time. ``ended`` turns true once every process
    holding the log has let go of it."""

    log_timeout = 30.0  # seconds :meth:`wait_for` waits unless told otherwise

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.ended = False
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """The first log line matching ``pattern``; fails if the log ends or the timeout passes first."""
        timeout = self.log_timeout if timeout is None else timeout
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                if self.ended:
                    pytest.fail(
                        f"the log ended ({self.proc.poll()}) before {pattern!r}: {''.join(self.lines)}"
                    )
                if not self._changed.wait(deadline - time.monotonic()):
                    pytest.fail(f"no {pattern!r} in the log within {timeout} s: {''.join(self.lines)}")

    def wait_ended(self, timeout: float) -> bool:
        """Whether the log ended within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self.ended, timeout=timeout)


def start_on_pty(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start a command with stderr on a pseudo-terminal of 24x100 (a fresh pty is 0x0, where progress
    bars have no room to draw); returns the process and the terminal's leader end (close it)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    return proc, leader


def drain_pty(leader: int) -> bytes:
    """Everything the process still draws on the terminal, until it closes it: the reads block on the
    process, not on a timer."""
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal
            return out
        if not chunk:
            return out
        out += chunk


def run_on_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, bytes]:
    """Run a command with stderr on a pseudo-terminal (:func:`start_on_pty`) to its end; returns its
    exit code, its stdout, and everything it drew on the terminal."""
    proc, leader = start_on_pty(args, env)
    try:
        drawn = drain_pty(leader)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), drawn


def peer_id_of(secret: bytes) -> str:
    """The peer id (base58, ``12D3KooW...``) of an identity file's bytes."""
    from libp2p.peer.id import ID  # imports libp2p: only for the tests that need it

    from node.net.host import load_identity

    return ID.from_pubkey(load_identity(secret).public_key).to_base58()


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (the scripts are not a package), once per process."""
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
