"""Fetching over ``/sealbox/blocks/1.0.0``: many blocks from many providers at once.

The session rules (request ids, replies matched to requests, CANCEL, NOT_FOUND then HAVE, stall
deadlines, commit batches, when a fetch cannot finish) are protocol/exchange_asker.py's, a sans-IO state
machine over the scheduler (protocol/fetch_plan.py). This module drives it with trio: one stream per
provider, a reader task per stream (node/net/fetch_session.py: it verifies and stores what arrives), and
one loop that feeds the session the readers' events and the clock, and writes what it decides.
See ``node/net/exchange.py``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

import trio
from libp2p.abc import IHost, INetStream

from node.errors import first_exception
from node.net.block_server import _STREAM_ERRORS, _reset
from node.net.errors import NetworkError
from node.net.fetch_session import FetchError as FetchError
from node.net.fetch_session import _read_replies
from node.net.host import open_stream_redialing
from node.store.blockstore import BlockStore, PackWriter
from node.store.errors import RepoError
from node.store.lease import Lease
from protocol.exchange_asker import OPENED, REQUEST_TIMEOUT, Actions, Asker, Event
from protocol.exchange_asker import FetchStats as FetchStats
from protocol.exchange_server import SERVER_MAX_OPEN
from protocol.fetch_plan import FetchPlan, PeerId
from protocol.messages import PROTOCOL_ID

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

DISCOVER_FIRST = 3.0  # seconds before a fetch first asks ``discover`` for more providers, doubling to
DISCOVER_MAX = 30.0
OnBlock = Callable[[bytes, str, int], None]


def _unwrapping_repo_errors(fetch: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``fetch`` with a RepoError that ends it raised as itself, not inside the nursery's exception group."""

    @functools.wraps(fetch)
    async def unwrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fetch(*args, **kwargs)
        except* RepoError as group:
            raise first_exception(group) from None

    return unwrapped


@_unwrapping_repo_errors
async def fetch_blocks(
    host: IHost,
    store: BlockStore,
    peers: Sequence[str],
    cids: Iterable[bytes],
    *,
    window: int = 16,
    request_timeout: float = REQUEST_TIMEOUT,
    on_block: OnBlock | None = None,
    discover: Callable[[], Awaitable[Sequence[str]]] | None = None,
    lease: Lease | None = None,
) -> FetchStats:
    """Fetch every block of ``cids`` that ``store`` lacks from ``peers`` (peer ids, already known to
    ``host``) and store it. Blocks already held are never asked for; every block is verified before it
    is stored; a peer that sends a bad or unrequested block is dropped. Raises :class:`FetchError` when a
    block cannot be had from any of them.

    ``on_block(cid, peer, size)``, if given, is called for each block stored. ``discover``, if given,
    is called 3 s into the fetch and then at doubling intervals (up to 30 s) for
    the peer ids that provide the blocks now; new ones join the fetch. With ``lease``, every block
    stored, or found held, is leased (gc keeps it until the caller ends the lease).

    At most ``SERVER_MAX_OPEN`` requests are open to one peer whatever ``window`` says: a server stops
    reading past that many (the spec's backpressure), so a deeper window would only wait in the stream.

    A RepoError while storing (a full disk, the storage limit) ends the fetch as itself, not inside the
    nursery's exception group, so the caller reports its one line.
    """
    plan = FetchPlan(window=max(1, min(window, SERVER_MAX_OPEN)))
    wanted = list(cids)
    if lease is not None:  # before the lookup: a block found held must stay held
        lease.add(wanted)
    held = store.locate(wanted)  # in a few queries: one per block took seconds for a big file
    asker = Asker(plan, now=trio.current_time(), request_timeout=request_timeout)
    asker.want(wanted, held)
    if asker.done:
        return asker.stats
    first = [peer for peer in peers if asker.dialing(peer)]
    with store.writer(lease) as writer:
        fetch = _Fetch(host, asker, writer, on_block, 4 * window * max(1, len(first)))
        failure = await fetch.run(first, discover)
        writer.commit()
    if failure is not None:
        failure.stats = asker.stats
        raise failure
    return asker.stats


class _Fetch:
    """The trio side of one fetch: the streams, their readers, and the loop that drives ``asker``."""

    def __init__(
        self, host: IHost, asker: Asker, writer: PackWriter, on_block: OnBlock | None, events: int
    ) -> None:
        self.host = host
        self.asker = asker
        self.writer = writer
        self.on_block = on_block
        self.streams: dict[PeerId, INetStream] = {}
        self.send, self.receive = trio.open_memory_channel[tuple[PeerId, Event]](events)
        self.closing = trio.Event()  # set once the fetch is over: a stream that opens later is reset
        self.nursery: trio.Nursery | None = None

    async def run(
        self, peers: list[PeerId], discover: Callable[[], Awaitable[Sequence[str]]] | None
    ) -> FetchError | None:
        """Open a stream to each of ``peers`` and fetch; the FetchError that ended it, if one did
        (returned, to be raised once the nursery has closed, not in an exception group)."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for peer in peers:
                nursery.start_soon(self.open_stream, peer)
            if discover is not None:
                nursery.start_soon(self.rediscover, discover)
            try:
                await self.loop()
            except FetchError as exc:
                return exc
            finally:
                # Nobody reads events any more: close the channel, so that a reader blocked on a full
                # channel (its shielded last send included) fails at once instead of waiting forever.
                self.receive.close()
                # Resetting a stream yields to other tasks, and a stream may open meanwhile: take
                # them one by one rather than iterate over a dict that can grow.
                self.closing.set()
                while self.streams:
                    _, stream = self.streams.popitem()
                    await _reset(stream)
                nursery.cancel_scope.cancel()
        return None

    async def open_stream(self, peer: PeerId) -> None:
        try:
            stream = await open_stream_redialing(self.host, peer, PROTOCOL_ID)
        except NetworkError as exc:
            log.info("block exchange: %s", exc)
            self.asker.unreachable(peer)
            with contextlib.suppress(trio.BrokenResourceError):
                await self.send.send((peer, None))
            return
        if self.closing.is_set():
            await _reset(stream)
            return
        assert self.nursery is not None
        self.streams[peer] = stream
        self.asker.connected(peer, trio.current_time())
        reader = self.asker.reader(peer)
        self.nursery.start_soon(_read_replies, peer, stream, reader, self.writer, self.send.clone())
        with contextlib.suppress(trio.BrokenResourceError):
            await self.send.send((peer, OPENED))

    async def rediscover(self, discover: Callable[[], Awaitable[Sequence[str]]]) -> None:
        """More providers may appear while the fetch runs: other downloaders of the same file announce
        it as they start (and answer HAVE once they hold blocks)."""
        assert self.nursery is not None
        delay = DISCOVER_FIRST
        while True:
            await trio.sleep(delay)
            delay = min(delay * 2, DISCOVER_MAX)
            for peer in await discover():
                if self.asker.dialing(peer):
                    self.nursery.start_soon(self.open_stream, peer)

    async def loop(self) -> None:
        """Take every event that has arrived before asking for more blocks, so each peer's new
        requests go out in one write."""
        asker = self.asker
        while True:
            for peer, wants in asker.requests(trio.current_time()):
                await self.write(peer, wants)
            if asker.done:
                return
            reason = asker.failure()
            if reason is not None:
                raise FetchError(reason)
            events: list[tuple[PeerId, Event]] = []
            with trio.move_on_after(max(0.0, asker.deadline() - trio.current_time())):
                events.append(await self.receive.receive())
            if not events:  # the nearest deadline passed: a peer stalled
                await self.apply(asker.timer(trio.current_time()))
                continue
            with contextlib.suppress(trio.WouldBlock):  # and whatever else has arrived meanwhile
                while True:
                    events.append(self.receive.receive_nowait())
            for peer, event in events:
                await self.apply(asker.handle(peer, event, trio.current_time()))

    async def write(self, peer: PeerId, frames: bytes) -> None:
        stream = self.streams.get(peer)
        if stream is None:  # dropped meanwhile: the plan has put its requests back in the queue
            return
        try:
            await stream.write(frames)
        except _STREAM_ERRORS:
            await self.apply(self.asker.write_failed(peer))

    async def apply(self, actions: Actions) -> None:
        for note in actions.notes:
            log.info("block exchange: %s", note)
        for peer in actions.close:
            stream = self.streams.pop(peer, None)
            if stream is not None:
                await _reset(stream)
        if actions.commit:
            await trio.to_thread.run_sync(self.writer.commit)
        if actions.delivered is not None and self.on_block is not None:
            self.on_block(*actions.delivered)
        for peer, frame in actions.send:
            await self.write(peer, frame)
