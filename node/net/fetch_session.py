"""One provider's side of a block fetch (node/net/block_fetch.py): the session's state, the events its
reader task hands the fetch loop, and that reader, which verifies and stores the blocks it receives.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from node.net.block_server import _STREAM_ERRORS, READ_SIZE
from node.net.errors import NetworkError
from node.store.blockstore import PackWriter
from protocol.errors import CorruptBlockError
from protocol.messages import (
    BlockMessage,
    FrameDecoder,
    Message,
    MessageError,
)


class FetchError(NetworkError):
    """Blocks could not be fetched: no peer has them, or every peer failed. ``stats`` tells what the
    failed fetch did get (the blocks it stored are kept)."""

    stats: FetchStats | None = None


@dataclass
class FetchStats:
    blocks: int = 0
    bytes: int = 0  # bytes of blocks received, duplicates and refused blocks included
    received_from: dict[str, int] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    already_held: int = 0
    haves: int = 0  # HAVE messages that made a peer eligible again for a block
    not_found: int = 0  # NOT_FOUND answers (a request that brought no block)
    peers: int = 0  # peers asked
    unreachable: set[str] = field(default_factory=set)  # peers no stream could be opened to

    def add(self, other: FetchStats) -> None:
        """Add the counts of another fetch (a later round of the same download)."""
        self.blocks += other.blocks
        self.bytes += other.bytes
        self.haves += other.haves
        self.not_found += other.not_found
        for peer, n in other.received_from.items():
            self.received_from[peer] = self.received_from.get(peer, 0) + n
        self.dropped |= other.dropped


@dataclass
class _Session:
    peer: str
    stream: INetStream
    next_request: int = 0
    open: dict[int, tuple[bytes, float]] = field(default_factory=dict)  # request -> (cid, time sent)
    last_answer: float = 0.0  # when the peer last answered anything (or the session opened)
    not_found: dict[int, bytes] = field(default_factory=dict)  # answered NOT_FOUND: a HAVE may follow
    ignored: set[int] = field(default_factory=set)  # cancelled or timed out: late answers are dropped


_Event = tuple[str, "Message | _Stored | _Corrupt | _Broken | _Opened | None"]


def _stall_deadline(session: _Session, timeout: float) -> float:
    """When ``session``'s peer counts as stalled: ``timeout`` after its latest answer, or after the
    oldest open request was sent if that is later (a peer that was idle)."""
    oldest = min(sent for _, sent in session.open.values())
    return max(session.last_answer, oldest) + timeout


class _Opened:
    """The event a session sends once its stream is open (never on the wire)."""


_OPENED = _Opened()


@dataclass(frozen=True, slots=True)
class _Stored:
    """A reader verified and stored the block for ``request`` (``size`` bytes)."""

    request: int
    size: int


@dataclass(frozen=True, slots=True)
class _Broken:
    """A reader's stream broke the protocol (``reason``): a malformed frame or message, or the stream
    ended inside a frame. The peer is dropped for the rest of the fetch."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Corrupt:
    """A reader got a block for ``request`` that does not hash to the CID asked for."""

    request: int
    size: int


def _store_all(writer: PackWriter, blocks: list[tuple[bytes, BlockMessage]]) -> list[bool]:
    """In a worker thread: verify and store each ``(cid, block)`` in order; True for each stored, then
    False for the first that does not hash to its CID (nothing after it is stored)."""
    outcome = []
    for cid, block in blocks:
        try:
            writer.put(cid, block.data)
        except CorruptBlockError:
            outcome.append(False)
            break
        outcome.append(True)
    return outcome


async def _read_replies(session: _Session, writer: PackWriter, send: trio.MemorySendChannel[_Event]) -> None:
    """Read a provider's replies; verify and store each block here, so providers' blocks are hashed
    and written in parallel, and hand the outcome to the fetch loop."""
    decoder = FrameDecoder()
    peer = session.peer
    async with send:
        try:
            while data := await session.stream.read(READ_SIZE):
                # the blocks of one read are stored in one trip to a worker thread (waking a thread
                # costs about as much as hashing a block); every message keeps its place in the order
                replies: list[Message | tuple[bytes, BlockMessage]] = []
                for message in decoder.feed(data):
                    entry = session.open.get(message.request) if isinstance(message, BlockMessage) else None
                    replies.append(
                        (entry[0], message) if isinstance(message, BlockMessage) and entry else message
                    )
                blocks = [reply for reply in replies if isinstance(reply, tuple)]
                outcome = await trio.to_thread.run_sync(_store_all, writer, blocks) if blocks else []
                stored = iter(outcome)
                for reply in replies:
                    if not isinstance(reply, tuple):
                        await send.send((peer, reply))
                        continue
                    block = reply[1]
                    if not next(stored):
                        await send.send((peer, _Corrupt(block.request, len(block.data))))
                        return
                    await send.send((peer, _Stored(block.request, len(block.data))))
            if not decoder.at_boundary():  # the peer closed its side in the middle of a frame
                raise MessageError("the stream ended inside a frame")
        except StreamEOF:
            if not decoder.at_boundary():
                with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError):
                    await send.send((peer, _Broken("the stream ended inside a frame")))
        except MessageError as exc:
            with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError):
                await send.send((peer, _Broken(str(exc))))
        except _STREAM_ERRORS:
            pass
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError):
                await send.send((peer, None))
