"""Manifests: the sealed node blocks that describe a file or a directory, and directory entries.

A node block is ``seal(K_node(n), position 0, pad(msgpack(node)))``. See ``specs/format.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgpack

from protocol.cid import CID_LEN, check_cid, verify_block
from protocol.errors import CidError, DecryptError, ManifestError, ManifestVersionError
from protocol.names import FolderNames, check_name
from protocol.padding import padded_size
from protocol.seal import MAX_LEVEL as MAX_LEVEL  # re-exported: the stream code reads it here
from protocol.seal import TAG_LEN, NodeKeys
from protocol.strict_msgpack import Limits, unpack_one, unpacker

FORMAT_VERSION = 1
MIN_CHUNK = 16 * 1024
MAX_CHUNK = 1024 * 1024
MAX_BLOCK = MAX_CHUNK + TAG_LEN  # the largest sealed block: a whole chunk and its tag
DEFAULT_CHUNK = 256 * 1024
MAX_SIZE = 1 << 60  # an upper bound, far beyond any disk, that keeps every count in range
MAX_NODE_PLAIN = MAX_CHUNK  # node plaintext, padding included, never exceeds this

Kind = Literal["file", "dir"]


def fanout(chunk_size: int) -> int:
    """CIDs in a full index block."""
    return chunk_size // CID_LEN


def top_max(chunk_size: int) -> int:
    """At most this many CIDs sit in a node's ``top`` list, so a node block stays under a chunk."""
    return chunk_size // 64


def check_chunk_size(chunk_size: object) -> int:
    if (
        type(chunk_size) is not int
        or not MIN_CHUNK <= chunk_size <= MAX_CHUNK
        or chunk_size & (chunk_size - 1)
    ):
        raise ManifestError("chunk size must be a power of two from 16 KiB to 1 MiB")
    return chunk_size


def chunk_count(size: int, chunk_size: int) -> int:
    """Data blocks in a stream of ``size`` plaintext bytes (its padded length, split in chunks)."""
    return -(-padded_size(size) // chunk_size)


def data_bytes(size: int, chunk_size: int) -> int:
    """Bytes of the data blocks of a stream of ``size`` plaintext bytes: its padded length plus one tag
    per chunk (what a fetch of it stores, its index and node blocks aside)."""
    return padded_size(size) + TAG_LEN * chunk_count(size, chunk_size)


def level_counts(leaves: int, chunk_size: int) -> list[int]:
    """``[n_0, n_1, ..., n_L]``: items at each level, ``L`` the least level with ``n_L <= top_max``."""
    counts = [leaves]
    while counts[-1] > top_max(chunk_size):
        counts.append(-(-counts[-1] // fanout(chunk_size)))
        if len(counts) - 1 > MAX_LEVEL:
            raise ManifestError("stream too large")
    return counts


@dataclass(frozen=True, slots=True)
class Node:
    """A decoded node: the metadata and the top of the block tree of one file or directory.

    ``size`` is the exact plaintext length of the node's stream: the file's bytes, or for a directory
    the encoded entries. ``top`` holds the CIDs of level ``level`` of the stream's block tree.
    """

    kind: Kind
    size: int
    chunk_size: int
    level: int
    top: tuple[bytes, ...]
    executable: bool = False
    name: str | None = None

    def counts(self) -> list[int]:
        return level_counts(chunk_count(self.size, self.chunk_size), self.chunk_size)


def encode_node(node: Node) -> bytes:
    """The padded plaintext of a node block."""
    fields: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "kind": node.kind,
        "size": node.size,
        "cs": node.chunk_size,
        "lvl": node.level,
        "top": list(node.top),
    }
    if node.kind == "file":
        fields["x"] = node.executable
    if node.name is not None:
        fields["name"] = node.name
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed + bytes(padded_size(len(packed)) - len(packed))


_FILE_KEYS = {"v", "kind", "size", "cs", "lvl", "top", "x"}
_DIR_KEYS = {"v", "kind", "size", "cs", "lvl", "top"}


# node maps and directory entries: a node's keys are short names, its only array is ``top``
_LIMITS = Limits(
    max_str_len=1024, max_bin_len=CID_LEN, max_array_len=MAX_CHUNK // 64, max_map_len=16, max_depth=2
)


def decode_node(plain: bytes, *, root: bool) -> Node:
    """Decode and validate a node's plaintext. ``root`` nodes carry a name; others must not."""
    if len(plain) > MAX_NODE_PLAIN:
        raise ManifestError("manifest block too large")
    fields, end = unpack_one(plain, _LIMITS, ManifestError, "manifest")
    if any(plain[end:]) or len(plain) != padded_size(end):
        raise ManifestError("manifest padding is wrong")
    if not isinstance(fields, dict):
        raise ManifestError("manifest is not a map")
    version = fields.get("v")
    if type(version) is not int:  # missing, or not an integer (True == 1, yet it is no version)
        raise ManifestError(f"manifest version is not an integer: {_shown(version)}")
    if version != FORMAT_VERSION:
        raise ManifestVersionError(f"unsupported manifest version {_shown(version)}: upgrade sealbox")
    kind = fields.get("kind")
    if kind == "file":
        allowed = _FILE_KEYS
    elif kind == "dir":
        allowed = _DIR_KEYS
    else:
        raise ManifestError("manifest kind must be 'file' or 'dir'")
    expected = allowed | ({"name"} if root else set())
    if set(fields) != expected:
        raise ManifestError(f"manifest fields are wrong: {_shown(sorted(set(fields) ^ expected))}")
    size, cs, level, top = fields["size"], fields["cs"], fields["lvl"], fields["top"]
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise ManifestError("manifest size out of range")
    check_chunk_size(cs)
    if type(level) is not int or not isinstance(top, list):
        raise ManifestError("manifest block tree is malformed")
    counts = level_counts(chunk_count(size, cs), cs)
    if level != len(counts) - 1 or len(top) != counts[-1]:
        raise ManifestError("manifest block tree does not match its size (truncated or altered)")
    try:
        top_cids = tuple(check_cid(c) if isinstance(c, bytes) else check_cid(b"") for c in top)
    except CidError as exc:
        raise ManifestError("manifest holds a malformed block id") from exc
    executable = fields.get("x", False)
    if type(executable) is not bool:
        raise ManifestError("manifest executable flag is not a boolean")
    name = check_name(fields["name"]) if root else None
    return Node(kind, size, cs, level, top_cids, executable, name)


def _shown(value: object) -> str:
    """A short, one-line ``repr`` of a decoded value for an error message (values nest at most
    ``_LIMITS.max_depth`` deep, so ``repr`` cannot recurse far)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry: a child's name, node number and node block CID."""

    name: str
    number: int
    cid: bytes


def encode_entry(entry: Entry) -> bytes:
    packed: bytes = msgpack.packb([entry.name, entry.number, entry.cid], use_bin_type=True)
    return packed


class EntryDecoder:
    """Decodes a directory's entry stream as it arrives, chunk by chunk, with bounded memory.

    Entries must come in strictly increasing order of their UTF-8 names, which also refuses duplicates,
    and no two names may differ only in case or Unicode normalization (``protocol.names.FolderNames``).
    """

    def __init__(self) -> None:
        self._unpacker = unpacker(_LIMITS, ManifestError, "directory listing", 4 * MAX_CHUNK)
        self._last: bytes | None = None
        self._names = FolderNames()
        self._fed = 0
        self.count = 0

    def feed(self, data: bytes) -> Iterator[Entry]:
        self._fed += len(data)
        for item in self._unpacker.feed(data):
            yield self._entry(item)

    def finish(self) -> None:
        """Check that the stream ended on an entry boundary."""
        if self._unpacker.tell() != self._fed:
            raise ManifestError("directory listing is truncated")

    def _entry(self, item: object) -> Entry:
        if not isinstance(item, list) or len(item) != 3:
            raise ManifestError("directory entry is malformed")
        name, number, cid = item
        check_name(name)
        if type(number) is not int or not 1 <= number < (1 << 64):
            raise ManifestError("directory entry has a bad node number")
        if not isinstance(cid, bytes):
            raise ManifestError("directory entry has a malformed block id")
        try:
            check_cid(cid)
        except CidError as exc:
            raise ManifestError("directory entry has a malformed block id") from exc
        key = name.encode("utf-8")
        if self._last is not None and key <= self._last:
            raise ManifestError(f"directory entries are duplicated or out of order at {name[:64]!r}")
        self._last = key
        self._names.add(name)
        self.count += 1
        return Entry(name, number, cid)


def open_node(master: bytes, number: int, cid: bytes, block: bytes, *, root: bool) -> tuple[Node, NodeKeys]:
    """Verify a node block against its CID, open it under ``K_node(number)`` and decode it.

    At the root, a block that hashes right but does not open means the link's key is wrong.
    """
    verify_block(cid, block)
    keys = NodeKeys(master, number)
    try:
        plain = keys.node.open(0, block, "manifest")
    except DecryptError:
        if root:
            raise DecryptError("the link's key does not open its root: the link is wrong") from None
        raise
    return decode_node(plain, root=root), keys
