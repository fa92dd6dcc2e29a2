"""Serving ``/sealbox/blocks/1.0.0``: answer a peer's requests from the block store.

The session rules (request ids, CANCEL, the open-request limit, the NOT_FOUND memory and its HAVEs, the
stream caps) are protocol/exchange_server.py's, a sans-IO state machine; this module drives it with trio.
Three tasks per inbound stream: one reads requests and feeds them to the session, one reads the blocks
asked for from the store (verifying each against its CID before it goes out) and frames the answers,
one writes them. See ``node/net/exchange.py`` and ``specs/block-exchange.md``.

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

from node.net.host import set_handler
from node.store.blockstore import BlockStore
from node.store.errors import NotFoundError, RepoError
from protocol.errors import CorruptBlockError
from protocol.exchange_server import (
    MAX_STREAMS,
    MAX_STREAMS_PER_PEER,
    MAX_WAITING,
    MAX_WAITING_TOTAL,
    SERVER_MAX_OPEN,
    ServerRules,
    ServerSession,
)
from protocol.messages import MAX_FRAME, PROTOCOL_ID, BlockMessage, MessageError, NotFound, encode_message

log = logging.getLogger(__name__)

LOAD_BATCH = 4  # replies read from the store in one worker-thread call
LOAD_AHEAD = 8  # replies framed and waiting to be written
SEND_BUFFER = 8 << 20  # bytes of replies read and not yet written, every stream together
READ_SIZE = 1 << 20
REQUEST_READ_SIZE = 1 << 16  # a server reads requests in pieces this size (a WANT is 44 bytes)
BACKLOG_CHECK = 0.05  # seconds between looks at the unread backlog of a paused stream
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)

# a frame to write: its bytes, the block's size (0: NOT_FOUND, -1: HAVE) and the request it answers
_Frame = tuple[bytes, int, int | None]
# a reply read from the store: frame, block size, request and, for NOT_FOUND, the CID asked for
_Reply = tuple[bytes, int, int, bytes | None]


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
        self.rules = ServerRules(
            max_streams=max_streams,
            max_streams_per_peer=max_streams_per_peer,
            max_open=max_open,
            max_waiting=max_waiting,
            max_waiting_total=max_waiting_total,
        )
        self.served_blocks = 0
        self.served_bytes = 0
        self.haves_sent = 0
        self.send_buffer = send_buffer
        self.budget = _Budget(send_buffer)
        self._wakes: dict[ServerSession, trio.Event] = {}  # set when a session has work for its loader
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def refused_streams(self) -> int:
        """Streams reset at once: too many of that peer, or in all."""
        return self.rules.refused_streams

    @property
    def waiting(self) -> int:
        """NOT_FOUND answers remembered, and HAVEs not yet sent, every stream together."""
        return self.rules.waiting

    @property
    def open_streams(self) -> int:
        return self.rules.open_streams

    def open_requests(self) -> list[int]:
        """How many requests each inbound stream holds open (received, not yet answered)."""
        return [session.open for session in self.rules.sessions]

    def remembered(self) -> list[int]:
        """How many NOT_FOUND answers each inbound stream remembers (to send HAVE later)."""
        return [len(session.remembered) for session in self.rules.sessions]

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
        if self._token is not None and self.rules.sessions:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._notify, set(digests))

    def _notify(self, digests: set[bytes]) -> None:
        for session in self.rules.stored(digests):
            self.wake(session)

    def wake(self, session: ServerSession) -> None:
        event = self._wakes.get(session)
        if event is not None:
            event.set()

    async def wait(self, session: ServerSession) -> None:
        """Until the session has work: a request, a HAVE due, or the asker's side ended."""
        await self._wakes[session].wait()
        self._wakes[session] = trio.Event()

    async def handle(self, stream: INetStream) -> None:
        session = self.rules.open_stream(stream.muxed_conn.peer_id)
        if session is None:
            log.debug(
                "block exchange: refusing a stream: %d of this peer's and %d in all are open",
                self.rules.streams_of.get(stream.muxed_conn.peer_id, 0),
                self.open_streams,
            )
            await _reset(stream)
            return
        self._wakes[session] = trio.Event()
        serving = _Serving(self, session, stream)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serving.read_requests, nursery.cancel_scope)
                nursery.start_soon(serving.prepare)
                nursery.start_soon(serving.send, nursery.cancel_scope)
        finally:
            del self._wakes[session]
            self.rules.close_stream(session)
            self.budget.give(serving.reserved)
        if serving.broken:
            await _reset(stream)
        else:
            with contextlib.suppress(*_STREAM_ERRORS):
                await stream.close()

    def load(self, batch: list[tuple[int, bytes]]) -> list[_Reply]:
        """In a worker thread: read, verify and frame a few replies at once."""
        out: list[_Reply] = []
        try:
            where = self.store.locate(cid for _, cid in batch)  # one index query for the batch
        except RepoError:
            where = {}  # each get below looks its block up again, and reports what fails
        for request, cid in batch:
            try:
                block = self.store.get(cid, where=where.get(cid))
            except (NotFoundError, CorruptBlockError, RepoError):
                out.append((encode_message(NotFound(request)), 0, request, cid))
            else:
                out.append((encode_message(BlockMessage(request, block)), len(block), request, None))
        return out


class _Serving:
    """The three tasks that drive one inbound stream's :class:`ServerSession`."""

    def __init__(self, server: BlockServer, session: ServerSession, stream: INetStream) -> None:
        self.server = server
        self.session = session
        self.stream = stream
        self.room = trio.Event()  # set when a request stops being open
        self.reserved = 0  # bytes of the server's budget this stream holds
        self.broken = False  # reset the stream at the end, not close it
        self.frames_in, self.frames_out = trio.open_memory_channel[_Frame](LOAD_AHEAD)

    async def read_requests(self, cancel: trio.CancelScope) -> None:
        session = self.session
        try:
            while True:
                while session.paused:  # backpressure: nothing more is read until a request closes
                    with trio.move_on_after(BACKLOG_CHECK):
                        await self.room.wait()
                    session.resume(_unread(self.stream))
                    self.server.wake(session)
                try:
                    data = await self.stream.read(REQUEST_READ_SIZE)
                except StreamEOF:
                    data = b""
                if not data:
                    if not session.end():
                        log.debug("block exchange: dropping a stream that ended inside a frame")
                        self.broken = True
                        cancel.cancel()
                    break
                session.received(data)
                self.server.wake(session)
        except MessageError as exc:
            log.info("block exchange: dropping a stream that broke the protocol: %s", exc)
            self.broken = True
            cancel.cancel()
        except _STREAM_ERRORS:
            pass  # the asker went away or reset its side: answer what is queued
        session.finished = True
        self.server.wake(session)

    async def prepare(self) -> None:
        """Reads the next replies from disk while the previous ones are being written."""
        session, server = self.session, self.server
        async with self.frames_in:
            while not session.done:
                if session.haves_due:
                    for frame in session.take_haves():
                        await self.frames_in.send((frame, -1, None))
                    continue
                batch = session.take_batch(LOAD_BATCH)
                if not batch:
                    await server.wait(session)
                    continue
                # reserve the most the batch can take; a buffer smaller than that is let overshoot
                # by one batch rather than never load anything
                estimate = min(len(batch) * MAX_FRAME, server.send_buffer)
                await server.budget.take(estimate)
                self.reserved += estimate
                replies = await trio.to_thread.run_sync(server.load, batch)
                actual = sum(len(frame) for frame, *_ in replies)
                server.budget.give(estimate - actual)
                self.reserved -= estimate - actual
                for frame, size, request, missing in replies:
                    if missing is not None:
                        session.not_found(request, missing)
                    await self.frames_in.send((frame, size, request))

    async def send(self, cancel: trio.CancelScope) -> None:
        server = self.server
        try:
            async for frame, size, request in self.frames_out:
                await self.stream.write(frame)
                if request is not None:
                    server.budget.give(len(frame))
                    self.reserved -= len(frame)
                    self.session.written(request)
                    self.room.set()
                    self.room = trio.Event()
                if size > 0:
                    server.served_blocks += 1
                    server.served_bytes += size
                elif size < 0:
                    server.haves_sent += 1
        except _STREAM_ERRORS:
            self.broken = True
            cancel.cancel()


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
