"""The plaintext digest behind idempotent adds, made the same way by ``add`` and from stored blocks.

A root's CIDs change with its fresh key, so noticing that content was added before takes a digest of the
plaintext. It never leaves the repo (the repo keys it with its secret: ``Repo.fingerprint``), so each
chunk's share is BLAKE3, twice as fast as SHA-256 here:

    file:   SHA-256("file" || u8(executable) || u64be(size) || SHA-256(BLAKE3(content of chunk 0) || ...))
    dir:    SHA-256("dir" || for each entry in order: u16be(len(name)) || name || digest of the entry)
    add:    SHA-256(digest of the root || root name || u32be(chunk size))

where a chunk's content leaves out its padding (a chunk of padding only has empty content).

Hashing every chunk still cost an add a fifth of its speed, so ``add`` hashes only when the repo holds an
earlier add of the same kind and total size (the content could be the same). An add that skipped it has
no digest recorded; when a later add of that kind and size comes, the earlier one's digest is made from
its stored blocks (``node.files.get.added_digest``) and recorded then.
"""

from __future__ import annotations

import hashlib

from blake3 import blake3


def chunk_digest(content: bytes | memoryview) -> bytes:
    return blake3(content).digest()


class FileDigest:
    """Fed the chunk digests of a file's chunks in order."""

    def __init__(self) -> None:
        self._chunks = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self._chunks.update(chunk)

    def finish(self, size: int, executable: bool) -> bytes:
        head = b"file" + bytes([executable]) + size.to_bytes(8, "big")
        return hashlib.sha256(head + self._chunks.digest()).digest()


class DirDigest:
    """Fed each entry's name and digest, in the order of the directory's entries."""

    def __init__(self) -> None:
        self._entries = hashlib.sha256(b"dir")

    def add(self, name: str, digest: bytes) -> None:
        encoded = name.encode()
        self._entries.update(len(encoded).to_bytes(2, "big") + encoded + digest)

    def finish(self) -> bytes:
        return self._entries.digest()


def add_digest(root_digest: bytes, name: str, chunk_size: int) -> bytes:
    """What an add is known by: its content under its name, at its chunk size."""
    return hashlib.sha256(root_digest + name.encode() + chunk_size.to_bytes(4, "big")).digest()
