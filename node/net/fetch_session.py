"""One provider's side of a block fetch (node/net/block_fetch.py): the reader task of its stream, which
feeds the bytes to the session's :class:`~protocol.exchange_asker.ReplyReader`, verifies and stores the
blocks it names (so providers' blocks are hashed and written in parallel), and hands every outcome to
the fetch loop as an event. And :class:`FetchError`, what a fetch that cannot finish raises.
"""

from __future__ import annotations

import contextlib

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

from node.net.block_server import _STREAM_ERRORS, READ_SIZE
from node.net.errors import NetworkError
from node.store.blockstore import PackWriter
from protocol.errors import CorruptBlockError
from protocol.exchange_asker import Broken, Corrupt, Event, FetchStats, ReplyReader, StoreBlock, Stored
from protocol.fetch_plan import PeerId
from protocol.messages import Message, MessageError


class FetchError(NetworkError):
    """Blocks could not be fetched: no peer has them, or every peer failed. ``stats`` tells what the
    failed fetch did get (the blocks it stored are kept)."""

    stats: FetchStats | None = None


def _store_all(writer: PackWriter, blocks: list[StoreBlock]) -> list[bool]:
    """In a worker thread: verify and store each block in order; True for each stored, then False for
    the first that does not hash to its CID (nothing after it is stored)."""
    outcome = []
    for block in blocks:
        try:
            writer.put(block.cid, block.message.data)
        except CorruptBlockError:
            outcome.append(False)
            break
        outcome.append(True)
    return outcome


async def _read_replies(
    peer: PeerId,
    stream: INetStream,
    reader: ReplyReader,
    writer: PackWriter,
    send: trio.MemorySendChannel[tuple[PeerId, Event]],
) -> None:
    """Read a provider's replies; verify and store each block here, and hand the outcome to the loop.
    The stream's end is always reported last, as ``None``."""
    async with send:
        try:
            while data := await stream.read(READ_SIZE):
                if not await _deliver(peer, reader.feed(data), writer, send):
                    return
            if not reader.at_boundary():  # the peer closed its side in the middle of a frame
                raise MessageError("the stream ended inside a frame")
        except StreamEOF:
            if not reader.at_boundary():
                await _last(send, (peer, Broken("the stream ended inside a frame")))
        except MessageError as exc:
            await _last(send, (peer, Broken(str(exc))))
        except _STREAM_ERRORS:
            pass
        finally:
            await _last(send, (peer, None))


async def _deliver(
    peer: PeerId,
    replies: list[Message | StoreBlock],
    writer: PackWriter,
    send: trio.MemorySendChannel[tuple[PeerId, Event]],
) -> bool:
    """The replies of one read, in order. The blocks among them are stored in one trip to a worker
    thread (waking a thread costs about as much as hashing a block). False after a corrupt block."""
    blocks = [reply for reply in replies if isinstance(reply, StoreBlock)]
    stored = iter(await trio.to_thread.run_sync(_store_all, writer, blocks) if blocks else [])
    for reply in replies:
        if not isinstance(reply, StoreBlock):
            await send.send((peer, reply))
            continue
        size = len(reply.message.data)
        if not next(stored):
            await send.send((peer, Corrupt(reply.message.request, size)))
            return False
        await send.send((peer, Stored(reply.message.request, size)))
    return True


async def _last(send: trio.MemorySendChannel[tuple[PeerId, Event]], event: tuple[PeerId, Event]) -> None:
    """Send even while the fetch is being cancelled (the loop may be gone: then nothing)."""
    with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError):
        await send.send(event)
