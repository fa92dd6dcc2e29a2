"""``/sealbox/blocks/1.0.0`` over libp2p: serve blocks from the store, fetch blocks from many peers.

The wire format and the scheduler are pure (``protocol/messages.py``, ``protocol/fetch_plan.py``,
``specs/block-exchange.md``); this module drives them with trio. Serving: one task per inbound stream
reads requests (at most ``SERVER_MAX_OPEN`` open) and answers them in order, verifying each block against
its CID before it goes out. Fetching: one stream per provider, a reader task per stream, and one loop that
feeds the scheduler, sends requests, enforces deadlines, verifies and stores what arrives.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError

from node.blockstore import BlockStore, PackWriter, block_digest
from node.errors import NetworkError, NotFoundError, RepoError
from node.host import open_stream_redialing, set_handler
from protocol.cid import cid_to_text
from protocol.errors import CorruptBlockError
from protocol.fetch_plan import FetchPlan, UnrequestedBlockError
from protocol.messages import (
    MAX_REQUEST_ID,
    PROTOCOL_ID,
    Block,
    Cancel,
    FrameDecoder,
    Have,
    Message,
    MessageError,
    NotFound,
    Want,
    encode_message,
)

log = logging.getLogger(__name__)

SERVER_MAX_OPEN = 64
LOAD_BATCH = 4  # replies read from the store in one worker-thread call
LOAD_AHEAD = 8  # replies framed and waiting to be written
READ_SIZE = 1 << 20
REQUEST_TIMEOUT = 10.0
COMMIT_EVERY = 64  # blocks: fetched blocks become visible (and servable) in batches this size,
COMMIT_INTERVAL = 1.0  # or this many seconds apart, whichever comes first (others may want them)
DISCOVER_FIRST = 3.0  # seconds before a fetch first asks ``discover`` for more providers, doubling to
DISCOVER_MAX = 30.0
MAX_WAITING = 8192  # NOT_FOUND answers a server remembers per stream, to send HAVE for them later
_STREAM_ERRORS = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class FetchError(NetworkError):
    """Blocks could not be fetched: no peer has them, or every peer failed. ``stats`` tells what the
    failed fetch did get (the blocks it stored are kept)."""

    stats: FetchStats | None = None


# -- serving ------------------------------------------------------------------------------------------


class _Requests(dict[int, bytes]):
    """A stream's open requests (request id -> CID), answered oldest first."""

    def popitem_first(self) -> tuple[int, bytes]:
        request = next(iter(self))
        return request, self.pop(request)


class _Waiting:
    """What one inbound stream's asker was told NOT_FOUND for (request -> digest), newest last, so that
    a HAVE can follow once this node holds the block (it may be fetching the same file)."""

    def __init__(self) -> None:
        self.requests: dict[int, bytes] = {}
        self.haves: list[int] = []
        self.wake = trio.Event()

    def remember(self, request: int, digest: bytes) -> None:
        self.requests.pop(request, None)
        self.requests[request] = digest
        while len(self.requests) > MAX_WAITING:
            del self.requests[next(iter(self.requests))]

    def stored(self, digests: set[bytes]) -> None:
        hits = [request for request, digest in self.requests.items() if digest in digests]
        for request in hits:
            del self.requests[request]
        if hits:
            self.haves += hits
            self.wake.set()


class BlockServer:
    """Answers ``/sealbox/blocks/1.0.0`` requests from ``store``. Counts what it served.

    A request answered NOT_FOUND is remembered (at most ``MAX_WAITING`` per stream): when the block
    arrives in the store later (this node fetches the same file), the asker gets a HAVE for it.
    """

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.served_blocks = 0
        self.served_bytes = 0
        self.haves_sent = 0
        self._streams: set[_Waiting] = set()
        self._token: trio.lowlevel.TrioToken | None = None

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
        queue = _Requests()
        waiting = _Waiting()
        finished = False
        broken = False

        async def read_requests(cancel: trio.CancelScope) -> None:
            nonlocal finished, broken
            decoder = FrameDecoder()
            try:
                while data := await stream.read(READ_SIZE):
                    for message in decoder.feed(data):
                        if isinstance(message, Want):
                            if len(queue) >= SERVER_MAX_OPEN or message.request in queue:
                                raise MessageError("too many open requests")
                            queue[message.request] = message.cid
                        elif isinstance(message, Cancel):
                            queue.pop(message.request, None)
                        else:
                            raise MessageError("a client sent a reply")
                    waiting.wake.set()
            except MessageError as exc:
                log.info("block exchange: dropping a stream that broke the protocol: %s", exc)
                broken = True
                cancel.cancel()
            except _STREAM_ERRORS:
                pass  # the asker went away or closed its side: answer what is queued
            finished = True
            waiting.wake.set()

        frames_in, frames_out = trio.open_memory_channel[tuple[bytes, int]](LOAD_AHEAD)

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
                    out.append((encode_message(Block(request, block)), len(block), request, None))
            return out

        async def prepare() -> None:
            # reads the next replies from disk while the previous ones are being written
            async with frames_in:
                while queue or waiting.haves or not finished:
                    if waiting.haves:
                        haves, waiting.haves = waiting.haves, []
                        for request in haves:
                            await frames_in.send((encode_message(Have(request)), -1))
                        continue
                    if not queue:
                        await waiting.wake.wait()
                        waiting.wake = trio.Event()
                        continue
                    batch = [queue.popitem_first() for _ in range(min(LOAD_BATCH, len(queue)))]
                    for frame, size, request, missing in await trio.to_thread.run_sync(load, batch):
                        if missing is not None:
                            waiting.remember(request, missing)
                        await frames_in.send((frame, size))

        async def send(cancel: trio.CancelScope) -> None:
            nonlocal broken
            try:
                async for frame, size in frames_out:
                    await stream.write(frame)
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
        if broken:
            await _reset(stream)
        else:
            with contextlib.suppress(*_STREAM_ERRORS):
                await stream.close()


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(*_STREAM_ERRORS):
        await stream.reset()


# -- fetching -----------------------------------------------------------------------------------------


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


_Event = tuple[str, "Message | _Stored | _Corrupt | _Opened | None"]


async def fetch_blocks(
    host: IHost,
    store: BlockStore,
    peers: Sequence[str],
    cids: Iterable[bytes],
    *,
    window: int = 16,
    request_timeout: float = REQUEST_TIMEOUT,
    on_block: Callable[[bytes, str, int], None] | None = None,
    discover: Callable[[], Awaitable[Sequence[str]]] | None = None,
) -> FetchStats:
    """Fetch every block of ``cids`` that ``store`` lacks from ``peers`` (peer ids, already known to
    ``host``) and store it. Blocks already held are never asked for; every block is verified before it
    is stored; a peer that sends a bad or unrequested block is dropped. Raises :class:`FetchError` when a
    block cannot be had from any of them.

    ``on_block(cid, peer, size)``, if given, is called for each block stored. ``discover``, if given,
    is called 3 s into the fetch and then at doubling intervals (up to 30 s) for
    the peer ids that provide the blocks now; new ones join the fetch.

    A RepoError while storing (a full disk, the storage limit) ends the fetch as itself, not inside the
    nursery's exception group, so the caller reports its one line.
    """
    try:
        return await _fetch_blocks(host, store, peers, cids, window, request_timeout, on_block, discover)
    except* RepoError as group:
        raise _first(group) from None


def _first(group: BaseExceptionGroup[RepoError]) -> RepoError:
    inner = group.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner


async def _fetch_blocks(
    host: IHost,
    store: BlockStore,
    peers: Sequence[str],
    cids: Iterable[bytes],
    window: int,
    request_timeout: float,
    on_block: Callable[[bytes, str, int], None] | None,
    discover: Callable[[], Awaitable[Sequence[str]]] | None,
) -> FetchStats:
    stats = FetchStats()
    plan = FetchPlan(window=window)
    wanted = list(cids)
    held = store.locate(wanted)  # in a few queries: one per block took seconds for a big file
    for cid in wanted:
        if cid in held:
            stats.already_held += 1
        else:
            plan.want(cid)
    if plan.done:
        return stats
    sessions: dict[str, _Session] = {}
    opening = set(peers)
    stats.peers = len(opening)
    send, receive = trio.open_memory_channel[_Event](4 * window * max(1, len(opening)))
    failure: FetchError | None = None
    closing = trio.Event()  # set once the fetch is over: a stream that opens later is reset at once
    with store.writer() as writer:
        async with trio.open_nursery() as nursery:

            async def open_session(peer: str) -> None:
                try:
                    stream = await open_stream_redialing(host, peer, PROTOCOL_ID)
                except NetworkError as exc:
                    log.info("block exchange: %s", exc)
                    stats.unreachable.add(peer)
                    with contextlib.suppress(trio.BrokenResourceError):
                        await send.send((peer, None))
                    return
                if closing.is_set():
                    await _reset(stream)
                    return
                sessions[peer] = _Session(peer, stream, last_answer=trio.current_time())
                plan.add_peer(peer)
                nursery.start_soon(_read_replies, sessions[peer], writer, send.clone())
                with contextlib.suppress(trio.BrokenResourceError):
                    await send.send((peer, _OPENED))

            async def rediscover() -> None:
                # more providers may appear while the fetch runs: other downloaders of the same
                # file announce it as they start (and answer HAVE once they hold blocks)
                known = set(opening)
                delay = DISCOVER_FIRST
                while discover is not None:
                    await trio.sleep(delay)
                    delay = min(delay * 2, DISCOVER_MAX)
                    for peer in await discover():
                        if peer not in known:
                            known.add(peer)
                            opening.add(peer)
                            stats.peers += 1
                            nursery.start_soon(open_session, peer)

            for peer in opening:
                nursery.start_soon(open_session, peer)
            if discover is not None:
                nursery.start_soon(rediscover)
            try:
                await _run_fetch(plan, sessions, opening, receive, writer, stats, request_timeout, on_block)
            except FetchError as exc:
                failure = exc  # raised below, once the nursery has closed (not in an exception group)
            finally:
                # Nobody reads events any more: close the channel, so that a reader blocked on a full
                # channel (its shielded last send included) fails at once instead of waiting forever.
                receive.close()
                # Resetting a stream yields to other tasks, and a session may open meanwhile: take
                # them one by one rather than iterate over a dict that can grow.
                closing.set()
                while sessions:
                    _, session = sessions.popitem()
                    await _reset(session.stream)
                nursery.cancel_scope.cancel()
        writer.commit()
    if failure is not None:
        failure.stats = stats
        raise failure
    return stats


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
class _Corrupt:
    """A reader got a block for ``request`` that does not hash to the CID asked for."""

    request: int
    size: int


def _store_all(writer: PackWriter, blocks: list[tuple[bytes, Block]]) -> list[bool]:
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
                replies: list[Message | tuple[bytes, Block]] = []
                for message in decoder.feed(data):
                    entry = session.open.get(message.request) if isinstance(message, Block) else None
                    replies.append((entry[0], message) if isinstance(message, Block) and entry else message)
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
        except (MessageError, *_STREAM_ERRORS):
            pass
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError):
                await send.send((peer, None))


async def _run_fetch(
    plan: FetchPlan,
    sessions: dict[str, _Session],
    opening: set[str],
    receive: trio.MemoryReceiveChannel[_Event],
    writer: PackWriter,
    stats: FetchStats,
    request_timeout: float,
    on_block: Callable[[bytes, str, int], None] | None,
) -> None:
    """The fetch loop. ``opening`` holds the peers whose streams are still being opened.

    It takes every event that has arrived before it asks for more blocks, and writes each peer's new
    requests in one piece: a socket write on loopback costs as much as a whole block's Python work."""
    uncommitted = 0
    last_commit = trio.current_time()

    async def drop(peer: str, *, bad: bool) -> None:
        session = sessions.pop(peer, None)
        if bad:
            plan.drop_peer(peer)
            stats.dropped.add(peer)
        else:
            plan.remove_peer(peer)
        if session is not None:
            await _reset(session.stream)

    async def send_requests() -> None:
        batches: dict[str, list[bytes]] = {}
        for request in plan.next_requests():
            session = sessions[request.peer]  # the plan only asks peers that have a session
            number = session.next_request
            session.next_request = (number + 1) & MAX_REQUEST_ID
            session.open[number] = (request.cid, trio.current_time())
            batches.setdefault(request.peer, []).append(encode_message(Want(number, request.cid)))
        for peer, wants in batches.items():
            receiver = sessions.get(peer)
            if receiver is None:  # dropped while an earlier batch was written: the plan has put its
                continue  # requests back in the queue already
            try:
                await receiver.stream.write(b"".join(wants))
            except _STREAM_ERRORS:
                await drop(peer, bad=False)

    async def handle(peer: str, message: Message | _Opened | _Stored | _Corrupt | None) -> None:
        nonlocal uncommitted, last_commit
        if isinstance(message, _Opened):
            opening.discard(peer)
            return
        if message is None:  # a stream failed to open, ended or broke
            opening.discard(peer)
            await drop(peer, bad=False)
            return
        session = sessions.get(peer)
        if session is None:
            return
        session.last_answer = trio.current_time()
        if isinstance(message, Have):  # the peer got a block it said it lacked
            cid_had = session.not_found.pop(message.request, None)
            if cid_had is not None and plan.have(peer, cid_had):
                stats.haves += 1
            return
        if isinstance(message, Block | NotFound | _Stored | _Corrupt) and message.request in session.ignored:
            session.ignored.discard(message.request)
            return
        if isinstance(message, _Stored | _Corrupt):
            stats.bytes += message.size
        if isinstance(message, _Corrupt):
            log.info("block exchange: %s sent a corrupted block; dropping it", peer)
            await drop(peer, bad=True)
            return
        entry = None
        if isinstance(message, NotFound | _Stored):
            entry = session.open.pop(message.request, None)
        if entry is None:
            await drop(peer, bad=True)  # a reply to nothing, or a request sent to us
            return
        cid = entry[0]
        if isinstance(message, NotFound):
            stats.not_found += 1
            plan.not_found(peer, cid)
            session.not_found[message.request] = cid
            while len(session.not_found) > MAX_WAITING:
                del session.not_found[next(iter(session.not_found))]
            return
        try:
            cancels = plan.received(peer, cid)
        except UnrequestedBlockError:
            await drop(peer, bad=True)
            return
        stats.blocks += 1
        stats.received_from[peer] = stats.received_from.get(peer, 0) + 1
        uncommitted += 1
        now = trio.current_time()
        if uncommitted >= COMMIT_EVERY or now - last_commit >= COMMIT_INTERVAL:
            last_commit = now
            await trio.to_thread.run_sync(writer.commit)
            uncommitted = 0
        if on_block is not None and isinstance(message, _Stored):
            on_block(cid, peer, message.size)
        for cancel in cancels:
            other = sessions.get(cancel.peer)
            if other is None:
                continue
            for number, (open_cid, _) in list(other.open.items()):
                if open_cid == cancel.cid:
                    del other.open[number]
                    other.ignored.add(number)
                    try:
                        await other.stream.write(encode_message(Cancel(number)))
                    except _STREAM_ERRORS:
                        await drop(cancel.peer, bad=False)

    while True:
        await send_requests()
        if plan.done:
            return
        if not opening and not sessions:
            missing = plan.queued()[:1]
            what = f"block {cid_to_text(missing[0])}" if missing else "the blocks"
            if stats.unreachable and len(stats.unreachable) == stats.peers:
                raise FetchError(
                    f"cannot reach the {stats.peers} peer(s) that hold it: no connection or no answer"
                )
            raise FetchError(f"no peer could provide {what}: every peer failed or lacks it")
        if not opening and not any(s.open for s in sessions.values()):
            # nothing is on its way: if some block can be asked of nobody, the fetch cannot finish
            # (computed only here: it walks the whole queue)
            unavailable = plan.unavailable()
            if unavailable:
                raise FetchError(f"no peer has block {cid_to_text(unavailable[0])}")
        # A peer answers its requests in order, so a deep window to a busy peer is slow but steady: it
        # has stalled only when it has answered nothing for a whole timeout while requests were open.
        deadlines = [_stall_deadline(s, request_timeout) for s in sessions.values() if s.open]
        timeout = max(0.0, min(deadlines) - trio.current_time()) if deadlines else float("inf")
        events: list[_Event] = []
        with trio.move_on_after(timeout):
            events.append(await receive.receive())
        if events:
            with contextlib.suppress(trio.WouldBlock):  # and whatever else has arrived meanwhile
                while True:
                    events.append(receive.receive_nowait())
            for peer, message in events:
                await handle(peer, message)
            continue
        # the nearest deadline passed: a peer stalled
        now = trio.current_time()
        for peer, session in list(sessions.items()):
            if not session.open or _stall_deadline(session, request_timeout) > now:
                continue
            log.info("block exchange: %s answered nothing for %.0f s; asking others", peer, request_timeout)
            session.ignored.update(session.open)
            session.open.clear()
            if plan.stalled(peer):
                stats.dropped.add(peer)
                sessions.pop(peer, None)
                await _reset(session.stream)
