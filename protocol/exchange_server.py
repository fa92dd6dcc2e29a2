"""The serving side of ``/sealbox/blocks/1.0.0`` as a sans-IO state machine: the authoritative code for
a server's session rules (specs/block-exchange.md, *Messages*).

:class:`ServerRules` is what every stream of one server shares: the caps on streams (per peer and in
all) and the count of NOT_FOUND answers remembered over every stream. :class:`ServerSession` is one
inbound stream: it takes the bytes read from the stream and decides what is asked (request ids, CANCELs,
at most ``max_open`` requests open, then no more reading: backpressure), which answers are due, which
NOT_FOUND answers to remember and which HAVEs to send once the block is stored. The driver
(node/net/block_server.py) reads the stream, loads blocks from the store, writes the frames and keeps
the clock; nothing here waits, reads or writes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from protocol.cid import CID_PREFIX
from protocol.messages import Cancel, FrameDecoder, Have, Message, MessageError, Want, encode_message

SERVER_MAX_OPEN = 64  # requests of one stream open at once; past it the server stops reading
MAX_STREAMS_PER_PEER = 32  # inbound block streams of one peer (a fetch uses one per provider; the
# daemon runs as many fetches at once as its API takes requests, 32)
MAX_STREAMS = 256  # inbound block streams in all
MAX_REQUEST_FRAME = 64  # bytes of a request frame's body: a WANT is 41, a CANCEL at most 7
MAX_BACKLOG = 1 << 20  # bytes of requests (~24,000 WANTs) a paused stream may leave unread
MAX_WAITING = 8192  # NOT_FOUND answers a server remembers per stream, to send HAVE for them later
MAX_WAITING_TOTAL = 65536  # and in all (each costs ~200 bytes)


class ServerRules:
    """The limits every inbound stream of one server shares, and the streams open now.

    ``waiting`` counts the NOT_FOUND answers of every stream, remembered and HAVEs not yet sent."""

    def __init__(
        self,
        *,
        max_streams: int = MAX_STREAMS,
        max_streams_per_peer: int = MAX_STREAMS_PER_PEER,
        max_open: int = SERVER_MAX_OPEN,
        max_waiting: int = MAX_WAITING,
        max_waiting_total: int = MAX_WAITING_TOTAL,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self.max_streams = max_streams
        self.max_streams_per_peer = max_streams_per_peer
        self.max_open = max_open
        self.max_waiting = max_waiting
        self.max_waiting_total = max_waiting_total
        self.max_backlog = max_backlog
        self.streams_of: dict[Hashable, int] = {}  # open inbound streams per peer
        self.refused_streams = 0  # streams refused at once: too many of that peer, or in all
        self.waiting = 0
        self.sessions: set[ServerSession] = set()

    @property
    def open_streams(self) -> int:
        return sum(self.streams_of.values())

    def open_stream(self, peer: Hashable) -> ServerSession | None:
        """A peer opened a stream: its session, or None if the stream is past a cap (reset it at once,
        before reading anything of it)."""
        held = self.streams_of.get(peer, 0)
        if held >= self.max_streams_per_peer or self.open_streams >= self.max_streams:
            self.refused_streams += 1
            return None
        self.streams_of[peer] = held + 1
        session = ServerSession(self, peer)
        self.sessions.add(session)
        return session

    def close_stream(self, session: ServerSession) -> None:
        """The stream ended (however): forget what it remembered and free its place."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        session.forget()
        left = self.streams_of.pop(session.peer, 1) - 1
        if left:
            self.streams_of[session.peer] = left

    def stored(self, digests: set[bytes]) -> list[ServerSession]:
        """Blocks with these sha2-256 digests are in the store now: the sessions that have HAVEs due."""
        return [session for session in self.sessions if session.stored(digests)]


class ServerSession:
    """One inbound stream's requests: ``queue`` (received, not yet being answered, oldest first),
    ``answering`` (taken by :meth:`take_batch`, not yet written) and ``remembered`` (request -> digest
    of the blocks answered NOT_FOUND, newest last), for the HAVEs that may follow."""

    def __init__(self, rules: ServerRules, peer: Hashable) -> None:
        self.rules = rules
        self.peer = peer
        self.queue: dict[int, bytes] = {}
        self.answering: set[int] = set()
        self.remembered: dict[int, bytes] = {}
        self.finished = False  # the asker's side ended: answer what is open, then close
        self._haves: list[int] = []
        self._decoder = FrameDecoder(MAX_REQUEST_FRAME)
        self._input: Iterator[Message] | None = None  # messages of the latest read not yet taken
        self._held: Want | None = None  # a WANT read while ``max_open`` were open

    # -- what the asker sends ------------------------------------------------------------------

    @property
    def open(self) -> int:
        """Requests open: received and not yet answered (or cancelled)."""
        return len(self.queue) + len(self.answering)

    @property
    def paused(self) -> bool:
        """True while ``max_open`` requests are open and more wait: read nothing until one closes."""
        return self._held is not None

    def received(self, data: bytes) -> None:
        """Bytes read from the stream. Messages are taken one at a time: once ``max_open`` are open the
        rest waits here (:attr:`paused`) until :meth:`resume`. Raises :class:`MessageError` for a
        protocol error (the stream is then reset, nothing more answered)."""
        self._input = self._decoder.feed(data)
        self._take()

    def resume(self, unread: int) -> None:
        """While paused, each time a request closes or the driver looks again: ``unread`` is how many
        bytes the transport holds for the stream that nobody read. More than ``max_backlog`` is a
        protocol error (py-libp2p buffers past the window it granted, so pausing bounds nothing)."""
        rules = self.rules
        if unread > rules.max_backlog:
            raise MessageError(
                f"over {rules.max_backlog} bytes of requests wait unread behind {rules.max_open} open"
            )
        self._take()

    def end(self) -> bool:
        """The asker's side ended. False if it ended inside a frame (a protocol error)."""
        self.finished = True
        return self._decoder.at_boundary()

    def _take(self) -> None:
        if self._held is not None:
            if self.open >= self.rules.max_open:
                return
            held, self._held = self._held, None
            self._want(held)
        if self._input is None:
            return
        for message in self._input:
            if isinstance(message, Want):
                if self.open >= self.rules.max_open:
                    self._held = message
                    return
                self._want(message)
            elif isinstance(message, Cancel):
                if self.queue.pop(message.request, None) is None:
                    self.answering.discard(message.request)  # its answer may still be written
            else:
                raise MessageError("a client sent a reply")
        self._input = None

    def _want(self, message: Want) -> None:
        if message.request in self.queue or message.request in self.answering:
            raise MessageError(f"request id {message.request} is already open")
        self.queue[message.request] = message.cid

    # -- answering -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Nothing more to answer or announce, and the asker's side has ended."""
        return self.finished and not self.queue and not self._haves

    def take_batch(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the oldest requests not yet being answered, as (request, cid): the
        driver reads them from the store, frames a BLOCK or NOT_FOUND for each and reports
        :meth:`not_found` and :meth:`written`."""
        batch = []
        for _ in range(min(limit, len(self.queue))):
            request = next(iter(self.queue))
            batch.append((request, self.queue.pop(request)))
        self.answering.update(request for request, _ in batch)
        return batch

    def not_found(self, request: int, cid: bytes) -> None:
        """``request`` is answered NOT_FOUND: remember it, to send HAVE if the block is stored later.
        At most ``max_waiting`` per stream and ``max_waiting_total`` in all, the stream's own oldest
        forgotten first (a stream that holds none when the total is reached remembers nothing)."""
        rules = self.rules
        if self.remembered.pop(request, None) is not None:
            rules.waiting -= 1
        while self.remembered and (
            len(self.remembered) >= rules.max_waiting or rules.waiting >= rules.max_waiting_total
        ):
            del self.remembered[next(iter(self.remembered))]
            rules.waiting -= 1
        if rules.waiting < rules.max_waiting_total:
            self.remembered[request] = cid[len(CID_PREFIX) :]
            rules.waiting += 1

    def written(self, request: int) -> None:
        """The answer to ``request`` is written: it is no longer open (room for another)."""
        self.answering.discard(request)

    def stored(self, digests: set[bytes]) -> bool:
        """Blocks with these digests are stored now: True if HAVEs became due on this stream."""
        hits = [request for request, digest in self.remembered.items() if digest in digests]
        for request in hits:
            del self.remembered[request]
        self._haves += hits
        return bool(hits)

    @property
    def haves_due(self) -> bool:
        return bool(self._haves)

    def take_haves(self) -> list[bytes]:
        """The HAVE frames due now (each sent once)."""
        haves, self._haves = self._haves, []
        self.rules.waiting -= len(haves)
        return [encode_message(Have(request)) for request in haves]

    def forget(self) -> None:
        self.rules.waiting -= len(self.remembered) + len(self._haves)
        self.remembered.clear()
        self._haves.clear()
