"""Fetching over ``/sealbox/blocks/1.0.0``: many blocks from many providers at once.

One stream per provider, a reader task per stream, and one loop that feeds the scheduler
(``protocol/fetch_plan.py``), sends requests, enforces deadlines, verifies and stores what arrives.
A provider's session, the events its reader sends and the reader itself are node/net/fetch_session.py.
See ``node/net/exchange.py``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import ParamSpec, TypeVar

import trio
from libp2p.abc import IHost

from node.net.block_server import _STREAM_ERRORS, _reset
from node.net.errors import NetworkError
from node.net.fetch_session import (
    _OPENED,
    _Broken,
    _Corrupt,
    _Event,
    _Opened,
    _read_replies,
    _Session,
    _stall_deadline,
    _Stored,
)
from node.net.fetch_session import FetchError as FetchError
from node.net.fetch_session import FetchStats as FetchStats
from node.net.host import open_stream_redialing
from node.store.blockstore import BlockStore, PackWriter
from node.store.errors import RepoError
from node.store.lease import Lease
from protocol.cid import cid_to_text
from protocol.exchange_server import MAX_WAITING, SERVER_MAX_OPEN
from protocol.fetch_plan import FetchPlan, UnrequestedBlockError
from protocol.messages import (
    MAX_REQUEST_ID,
    PROTOCOL_ID,
    BlockMessage,
    Cancel,
    Have,
    Message,
    NotFound,
    Want,
    encode_message,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

REQUEST_TIMEOUT = 10.0
COMMIT_EVERY = 64  # blocks: fetched blocks become visible (and servable) in batches this size,
COMMIT_INTERVAL = 1.0  # or this many seconds apart, whichever comes first (others may want them)
DISCOVER_FIRST = 3.0  # seconds before a fetch first asks ``discover`` for more providers, doubling to
DISCOVER_MAX = 30.0


def _unwrapping_repo_errors(fetch: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``fetch`` with a RepoError that ends it raised as itself, not inside the nursery's exception group."""

    @functools.wraps(fetch)
    async def unwrapped(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fetch(*args, **kwargs)
        except* RepoError as group:
            raise _first(group) from None

    return unwrapped


def _first(group: BaseExceptionGroup[RepoError]) -> RepoError:
    inner = group.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner


@_unwrapping_repo_errors
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
    stats = FetchStats()
    plan = FetchPlan(window=max(1, min(window, SERVER_MAX_OPEN)))
    wanted = list(cids)
    if lease is not None:  # before the lookup: a block found held must stay held
        lease.add(wanted)
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
    with store.writer(lease) as writer:
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

    async def handle(peer: str, message: Message | _Opened | _Stored | _Corrupt | _Broken | None) -> None:
        nonlocal uncommitted, last_commit
        if isinstance(message, _Opened):
            opening.discard(peer)
            return
        if message is None:  # a stream failed to open, ended or broke
            opening.discard(peer)
            await drop(peer, bad=False)
            return
        if isinstance(message, _Broken):
            if peer in sessions:
                log.info("block exchange: %s broke the protocol (%s); dropping it", peer, message.reason)
                await drop(peer, bad=True)
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
        if (
            isinstance(message, BlockMessage | NotFound | _Stored | _Corrupt)
            and message.request in session.ignored
        ):
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
