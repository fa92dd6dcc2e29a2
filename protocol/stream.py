"""Sealed streams: a node's content cut into padded, sealed chunks and the index tree over their CIDs.

Sealing: ``Chunker`` cuts plaintext into chunks and pads the last; the caller seals each chunk with
:func:`seal_chunk` (in any thread, in any order) and feeds the CIDs, in order, to ``IndexBuilder``, which
seals the index blocks and returns the node's ``level`` and ``top``.

Opening: :func:`iter_leaves` walks the index tree with a caller-supplied ``fetch`` and yields the data
chunks' positions and CIDs in order; :func:`open_chunk` checks and opens one data block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from protocol.cid import cid_of, verify_block
from protocol.errors import DecryptError, ManifestError
from protocol.manifest import MAX_LEVEL, Node, fanout, top_max
from protocol.padding import padded_size
from protocol.seal import TAG_LEN, NodeKeys, StreamKey

Fetch = Callable[[bytes], bytes]
Block = tuple[bytes, bytes]  # (cid, block bytes)


class Chunker:
    """Cuts a byte stream into ``chunk_size`` pieces; :meth:`finish` pads the tail (see padding.py)."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.size = 0
        self._position = 0
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
        """Yield ``(position, chunk)`` for every full chunk that ``data`` completes."""
        self.size += len(data)
        cs = self.chunk_size
        if not self._buffer and len(data) == cs:
            yield self._next(bytes(data))
            return
        self._buffer += data
        while len(self._buffer) >= cs:
            yield self._next(bytes(self._buffer[:cs]))
            del self._buffer[:cs]

    def finish(self) -> Iterator[tuple[int, bytes]]:
        """Pad the stream to its padded length and yield the remaining chunks."""
        remaining = padded_size(self.size) - (self._position * self.chunk_size + len(self._buffer))
        self._buffer += bytes(remaining)
        while self._buffer:
            piece = bytes(self._buffer[: self.chunk_size])
            del self._buffer[: self.chunk_size]
            yield self._next(piece)

    def _next(self, chunk: bytes) -> tuple[int, bytes]:
        position = self._position
        self._position += 1
        return position, chunk


def seal_chunk(key: StreamKey, position: int, chunk: bytes | memoryview) -> Block:
    block = key.seal(position, chunk)
    return cid_of(block), block


def chunk_length(size: int, chunk_size: int, position: int) -> int:
    """Plaintext length of data chunk ``position`` in a stream of ``size`` bytes."""
    return min(chunk_size, padded_size(size) - position * chunk_size)


def content_length(size: int, chunk_size: int, position: int) -> int:
    """How much of data chunk ``position`` is the stream's content, not padding (0 for a chunk of
    padding only)."""
    return max(0, min(chunk_size, size - position * chunk_size))


def open_chunk(
    key: StreamKey, node: Node, position: int, cid: bytes, block: bytes, *, verified: bool = False
) -> bytes:
    """Verify a data block against its CID and open it; returns its plaintext, padding included.

    ``verified``: the block comes from a store that checked it against its CID when it stored it
    (specs/format.md, "CID"). The hash is then skipped - AES-GCM's tag still refuses any change to the
    block - and computed only for a block that does not open, to report damage rather than a wrong key.
    """
    if not verified:
        verify_block(cid, block)
    try:
        if len(block) != chunk_length(node.size, node.chunk_size, position) + TAG_LEN:
            raise ManifestError("data block has the wrong length for its position")
        return key.open(position, block, "data block")
    except (ManifestError, DecryptError):
        if verified:
            verify_block(cid, block)  # raises CorruptBlockError if the block changed at rest
        raise


def open_content(
    key: StreamKey, node: Node, position: int, cid: bytes, block: bytes, *, verified: bool = False
) -> bytes:
    """:func:`open_chunk`, then the chunk's share of the node's content: the stream's padding is cut
    off and checked to be zeros."""
    plain = open_chunk(key, node, position, cid, block, verified=verified)
    keep = content_length(node.size, node.chunk_size, position)  # <= len(plain): open_chunk checked it
    if any(plain[keep:]):
        raise ManifestError("padding is not zero: the manifest or a block is wrong")
    return plain if keep == len(plain) else plain[:keep]


class IndexBuilder:
    """Takes leaf CIDs in order and builds the index tree above them, streaming, in O(fanout x depth)."""

    def __init__(self, keys: NodeKeys, chunk_size: int) -> None:
        self._keys = keys
        self._fanout = fanout(chunk_size)
        self._top_max = top_max(chunk_size)
        self._levels: list[list[bytes]] = [[]]
        self._positions: list[int] = [0]

    def add(self, cid: bytes) -> list[Block]:
        """Append the next leaf CID; returns the index blocks this completed, to be stored."""
        out: list[Block] = []
        self._push(0, cid, out)
        return out

    def finish(self) -> tuple[int, tuple[bytes, ...], list[Block]]:
        """Flush partial levels; returns ``(level, top, index blocks)`` for the node."""
        out: list[Block] = []
        level = 0
        while True:
            items = self._levels[level]
            if level == len(self._levels) - 1 and len(items) <= self._top_max:
                return level, tuple(items), out
            self._flush(level, out)
            level += 1

    def _push(self, level: int, cid: bytes, out: list[Block]) -> None:
        if len(self._levels[level]) == self._fanout:
            self._flush(level, out)
        self._levels[level].append(cid)

    def _flush(self, level: int, out: list[Block]) -> None:
        items = self._levels[level]
        if level + 1 > MAX_LEVEL:
            raise ManifestError("stream too large")
        if level + 1 == len(self._levels):
            self._levels.append([])
            self._positions.append(0)
        position = self._positions[level + 1]
        self._positions[level + 1] += 1
        block = self._keys.index(level + 1).seal(position, b"".join(items))
        self._levels[level] = []
        cid = cid_of(block)
        out.append((cid, block))
        self._push(level + 1, cid, out)
