"""Serving ``/sealbox/blocks/1.0.0``: answer a peer's requests from the block store.

One task per inbound stream reads requests and answers them in order, verifying each block against its
CID before it goes out. See ``node/net/exchange.py`` and ``specs/block-exchange.md``.

What a remote peer can make this server hold is bounded (issue 12, item 5c):

- streams: at most ``MAX_STREAMS_PER_PEER`` of one peer and ``MAX_STREAMS`` in all; a stream past either
  is reset at once, before anything of it is read;
- requests: at most ``SERVER_MAX_OPEN`` of one stream open (received, not yet answered); then the server
  stops reading that stream until it has answered some (backpressure: the requests wait in the asker's
  send window, not here); requests are read in pieces of ``REQUEST_READ_SIZE`` and a request frame is
  at most ``MAX_REQUEST_FRAME`` bytes;
- replies: what is read from the store and not yet written, over every stream together, is at most
  ``SEND_BUFFER`` bytes. A reply the asker does not take stays unwritten; py-libp2p 0.8.1's yamux write
  fails after 5 s without a window update, which ends that stream and frees what it held;
- NOT_FOUND answers remembered to send HAVE later: ``MAX_WAITING`` per stream, ``MAX_WAITING_TOTAL``
  in all (past that a stream forgets its own oldest; a stream holding none remembers nothing more).

- requests waiting unread while the server does not read: at most ``MAX_BACKLOG`` bytes. py-libp2p
  0.8.1's yamux buffers whatever a peer sends on a stream, past the receive window it granted too (it
  only logs a warning), so stopping to read bounds nothing by itself: while a stream is paused the
  server looks at that buffer every ``BACKLOG_CHECK`` seconds (``_unread``, which reads yamux's
  ``stream_buffers``) and resets a stream that holds more (a protocol error).
"""

from __future__ import annotations

import contextlib
import logging

import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from node.net.host import set_handler
from node.store.blockstore import BlockStore, block_digest
from node.store.errors import NotFoundError, RepoError
from protocol.errors import CorruptBlockError
from protocol.messages import (
    MAX_FRAME,
    PROTOCOL_ID,
    BlockMessage,
    Cancel,
    FrameDecoder,
    Have,
    MessageError,
    NotFound,
    Want,
    encode_message,
)

log = logging.getLogger(__name__)

SERVER_MAX_OPEN = 64  # requests of one stream open at once; past it the server stops reading
MAX_STREAMS_PER_PEER = 32  # inbound block streams of one peer (a fetch uses one per provider; the
# daemon runs as many fetches at once as its API takes requests, 32)
MAX_STREAMS = 256  # inbound block streams in all
LOAD_BATCH = 4  # replies read from the store in one worker-thread call
LOAD_AHEAD = 8  # replies framed and waiting to be written
SEND_BUFFER = 8 << 20  # bytes of replies read and not yet written, every stream together
READ_SIZE = 1 << 20
REQUEST_READ_SIZE = 1 << 16  # a server reads requests in pieces this size (a WANT is 44 bytes)
MAX_REQUEST_FRAME = 64  # bytes of a request frame's body: a WANT is 41, a CANCEL at most 7
MAX_BACKLOG = 1 << 20  # bytes of requests (~24,000 WANTs) a paused stream may leave unread
BACKLOG_CHECK = 0.05  # seconds between looks at that, while paused
MAX_WAITING = 8192  # NOT_FOUND answers a server remembers per stream, to send HAVE for them later
MAX_WAITING_TOTAL = 65536  # and in all (each costs ~200 bytes)
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Requests(dict[int, bytes]):
    """A stream's requests not yet being answered (request id -> CID), answered oldest first."""

    def popitem_first(self) -> tuple[int, bytes]:
        request = next(iter(self))
        return request, self.pop(request)


class _Budget:
    """Bytes shared by every stream's replies in memory: ``take`` waits until enough is free."""

    def __init__(self, total: int) -> None:
        self.free = total
        self._freed = trio.Event()

    async def take(self, n: int) -> None:
        while self.free < n:
            await self._freed.wait()
        self.free -= n

    def give(self, n: int) -> None:
        if n:
            self.free += n
            self._freed.set()
            self._freed = trio.Event()


class _Waiting:
    """One inbound stream's state: its open requests (``queue``: received, not yet being answered;
    ``answering``: being read from the store or written), and what its asker was told NOT_FOUND for
    (``requests``: request -> digest, newest last), so that a HAVE can follow once this node holds the
    block (it may be fetching the same file). ``server`` counts the NOT_FOUND entries of every stream
    (remembered, and HAVEs not yet sent)."""

    def __init__(self, server: BlockServer) -> None:
        self.server = server
        self.queue = _Requests()
        self.answering: set[int] = set()
        self.requests: dict[int, bytes] = {}
        self.haves: list[int] = []
        self.wake = trio.Event()

    def remember(self, request: int, digest: bytes) -> None:
        server = self.server
        if self.requests.pop(request, None) is not None:
            server.waiting -= 1
        while self.requests and (
            len(self.requests) >= server.max_waiting or server.waiting >= server.max_waiting_total
        ):
            del self.requests[next(iter(self.requests))]
            server.waiting -= 1
        if server.waiting < server.max_waiting_total:
            self.requests[request] = digest
            server.waiting += 1

    def stored(self, digests: set[bytes]) -> None:
        hits = [request for request, digest in self.requests.items() if digest in digests]
        for request in hits:
            del self.requests[request]
        if hits:
            self.haves += hits
            self.wake.set()

    def take_haves(self) -> list[int]:
        haves, self.haves = self.haves, []
        self.server.waiting -= len(haves)
        return haves

    def forget(self) -> None:
        self.server.waiting -= len(self.requests) + len(self.haves)
        self.requests.clear()
        self.haves.clear()


class BlockServer:
    """Answers ``/sealbox/blocks/1.0.0`` requests from ``store``. Counts what it served.

    A request answered NOT_FOUND is remembered (at most ``MAX_WAITING`` per stream): when the block
    arrives in the store later (this node fetches the same file), the asker gets a HAVE for it.
    The limits (module docstring) can be lowered per server, for tests.
    """

    def __init__(
        self,
        store: BlockStore,
        *,
        max_streams: int = MAX_STREAMS,
        max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
        max_open: int = SERVER_MAX_OPEN,
        send_buffer: int = SEND_BUFFER,
        max_waiting: int = MAX_WAITING,
        max_waiting_total: int = MAX_WAITING_TOTAL,
    ) -> None:
        self.store = store
        self.served_blocks = 0
        self.served_bytes = 0
        self.haves_sent = 0
        self.refused_streams = 0  # streams reset at once: too many of that peer, or in all
        self.waiting = 0  # NOT_FOUND answers remembered, and HAVEs not yet sent, every stream together
        self.max_open = max_open
        self.max_streams = max_streams
        self.max_streams_per_peer = max_streams_per_peer
        self.max_waiting = max_waiting
        self.max_waiting_total = max_waiting_total
        self.send_buffer = send_buffer
        self.budget = _Budget(send_buffer)
        self.streams_of: dict[ID, int] = {}  # open inbound streams per peer
        self._streams: set[_Waiting] = set()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def open_streams(self) -> int:
        return sum(self.streams_of.values())

    def open_requests(self) -> list[int]:
        """How many requests each inbound stream holds open (received, not yet answered)."""
        return [len(state.queue) + len(state.answering) for state in self._streams]

    def remembered(self) -> list[int]:
        """How many NOT_FOUND answers each inbound stream remembers (to send HAVE later)."""
        return [len(state.requests) for state in self._streams]

    @property
    def buffered(self) -> int:
        """Bytes of replies read from the store and not yet written (or reserved to be read)."""
        return self.send_buffer - self.budget.free

    def install(self, host: IHost) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.store.add_listener(self._committed)
        set_handler(host, PROTOCOL_ID, self.handle)

    def _committed(self, digests: list[bytes]) -> None:
        """From the committing thread: pass the news to the streams, in the trio thread."""
        if self._token is not None and self._streams:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._notify, set(digests))

    def _notify(self, digests: set[bytes]) -> None:
        for waiting in list(self._streams):
            waiting.stored(digests)

    async def handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        held = self.streams_of.get(peer, 0)
        if held >= self.max_streams_per_peer or self.open_streams >= self.max_streams:
            self.refused_streams += 1
            log.debug(
                "block exchange: refusing a stream: %d of this peer's and %d in all are open",
                held,
                self.open_streams,
            )
            await _reset(stream)
            return
        self.streams_of[peer] = held + 1
        try:
            await self._serve(stream)
        finally:
            left = self.streams_of.pop(peer, 1) - 1
            if left:
                self.streams_of[peer] = left

    async def _serve(self, stream: INetStream) -> None:
        waiting = _Waiting(self)
        queue, answering = waiting.queue, waiting.answering
        room = trio.Event()  # set when a request stops being open
        reserved = 0  # bytes of ``self.budget`` this stream holds
        finished = False
        broken = False

        def closed(request: int) -> None:
            nonlocal room
            answering.discard(request)
            room.set()
            room = trio.Event()

        async def read_requests(cancel: trio.CancelScope) -> None:
            nonlocal finished, broken
            decoder = FrameDecoder(MAX_REQUEST_FRAME)
            try:
                while True:
                    try:
                        data = await stream.read(REQUEST_READ_SIZE)
                    except StreamEOF:
                        data = b""
                    if not data:
                        if not decoder.at_boundary():
                            log.debug("block exchange: dropping a stream that ended inside a frame")
                            broken = True
                            cancel.cancel()
                        break
                    # Messages are decoded one at a time: while max_open requests are open, the rest
                    # of the read waits here and nothing more is read (backpressure).
                    for message in decoder.feed(data):
                        if isinstance(message, Want):
                            while len(queue) + len(answering) >= self.max_open:
                                with trio.move_on_after(BACKLOG_CHECK):
                                    await room.wait()
                                if _unread(stream) > MAX_BACKLOG:
                                    raise MessageError(
                                        f"over {MAX_BACKLOG} bytes of requests wait unread behind"
                                        f" {self.max_open} open"
                                    )
                            if message.request in queue or message.request in answering:
                                raise MessageError(f"request id {message.request} is already open")
                            queue[message.request] = message.cid
                            waiting.wake.set()
                        elif isinstance(message, Cancel):
                            if queue.pop(message.request, None) is None:
                                closed(message.request)
                        else:
                            raise MessageError("a client sent a reply")
            except MessageError as exc:
                log.info("block exchange: dropping a stream that broke the protocol: %s", exc)
                broken = True
                cancel.cancel()
            except _STREAM_ERRORS:
                pass  # the asker went away or reset its side: answer what is queued
            finished = True
            waiting.wake.set()

        frames_in, frames_out = trio.open_memory_channel[tuple[bytes, int, int | None]](LOAD_AHEAD)

        def load(batch: list[tuple[int, bytes]]) -> list[tuple[bytes, int, int, bytes | None]]:
            """In a worker thread: read, verify and frame a few replies at once. Each reply comes
            with its request and, when it is NOT_FOUND, the digest asked for."""
            out: list[tuple[bytes, int, int, bytes | None]] = []
            try:
                where = self.store.locate(cid for _, cid in batch)  # one index query for the batch
            except RepoError:
                where = {}  # each get below looks its block up again, and reports what fails
            for request, cid in batch:
                try:
                    block = self.store.get(cid, where=where.get(cid))
                except (NotFoundError, CorruptBlockError, RepoError):
                    out.append((encode_message(NotFound(request)), 0, request, block_digest(cid)))
                else:
                    out.append((encode_message(BlockMessage(request, block)), len(block), request, None))
            return out

        async def prepare() -> None:
            # reads the next replies from disk while the previous ones are being written
            nonlocal reserved
            async with frames_in:
                while queue or waiting.haves or not finished:
                    if waiting.haves:
                        for request in waiting.take_haves():
                            await frames_in.send((encode_message(Have(request)), -1, None))
                        continue
                    if not queue:
                        await waiting.wake.wait()
                        waiting.wake = trio.Event()
                        continue
                    batch = [queue.popitem_first() for _ in range(min(LOAD_BATCH, len(queue)))]
                    answering.update(request for request, _ in batch)
                    # reserve the most the batch can take; a buffer smaller than that is let overshoot
                    # by one batch rather than never load anything
                    estimate = min(len(batch) * MAX_FRAME, self.send_buffer)
                    await self.budget.take(estimate)
                    reserved += estimate
                    replies = await trio.to_thread.run_sync(load, batch)
                    actual = sum(len(frame) for frame, *_ in replies)
                    self.budget.give(estimate - actual)
                    reserved -= estimate - actual
                    for frame, size, request, missing in replies:
                        if missing is not None:
                            waiting.remember(request, missing)
                        await frames_in.send((frame, size, request))

        async def send(cancel: trio.CancelScope) -> None:
            nonlocal broken, reserved
            try:
                async for frame, size, request in frames_out:
                    await stream.write(frame)
                    if request is not None:
                        self.budget.give(len(frame))
                        reserved -= len(frame)
                        closed(request)
                    if size > 0:
                        self.served_blocks += 1
                        self.served_bytes += size
                    elif size < 0:
                        self.haves_sent += 1
            except _STREAM_ERRORS:
                broken = True
                cancel.cancel()

        self._streams.add(waiting)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_requests, nursery.cancel_scope)
                nursery.start_soon(prepare)
                nursery.start_soon(send, nursery.cancel_scope)
        finally:
            self._streams.discard(waiting)
            waiting.forget()
            self.budget.give(reserved)
        if broken:
            await _reset(stream)
        else:
            with contextlib.suppress(*_STREAM_ERRORS):
                await stream.close()


def _unread(stream: INetStream) -> int:
    """Bytes py-libp2p 0.8.1's yamux holds for ``stream`` that nobody has read yet (0 where the stream
    is not a yamux one): ``NetStream.muxed_stream`` is a ``YamuxStream``, whose connection keeps
    ``stream_buffers[stream_id]``."""
    muxed = getattr(stream, "muxed_stream", None)
    buffers = getattr(getattr(muxed, "conn", None), "stream_buffers", None)
    if not isinstance(buffers, dict):
        return 0
    buffer = buffers.get(getattr(muxed, "stream_id", None))
    return len(buffer) if isinstance(buffer, bytearray | bytes) else 0


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.reset()
