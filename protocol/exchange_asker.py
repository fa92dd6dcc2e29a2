"""The asking side of ``/sealbox/blocks/1.0.0`` as a sans-IO state machine: the authoritative code for
an asker's session rules (specs/block-exchange.md, *Messages*; the scheduling is protocol/fetch_plan.py).

:class:`Asker` is one fetch from many providers: it numbers the requests the scheduler decides and
frames them, matches each reply to its request, ignores late replies to what it cancelled or gave up
on, remembers NOT_FOUND answers so that a HAVE can bring a block back, times out a provider that has
answered nothing for a whole timeout, batches commits, and says when the fetch cannot finish. The
driver (node/net/block_fetch.py) opens the streams, reads them (a :class:`ReplyReader` each, which says
which blocks to verify and store), writes what it is given, and passes the clock in as ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.cid import cid_to_text
from protocol.exchange_server import MAX_WAITING
from protocol.fetch_plan import FetchPlan, PeerId, UnrequestedBlockError
from protocol.messages import (
    MAX_REQUEST_ID,
    BlockMessage,
    Cancel,
    FrameDecoder,
    Have,
    Message,
    NotFound,
    Want,
    encode_message,
)

REQUEST_TIMEOUT = 10.0  # seconds a provider may answer nothing while requests to it are open
COMMIT_EVERY = 64  # blocks: fetched blocks become visible (and servable) in batches this size,
COMMIT_INTERVAL = 1.0  # or this many seconds apart, whichever comes first (others may want them)


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


# -- events the driver reports besides a peer's messages (never on the wire) -------------------------


class Opened:
    """A stream to the peer is open (:meth:`Asker.connected` was called for it)."""


OPENED = Opened()


@dataclass(frozen=True, slots=True)
class Stored:
    """The driver verified and stored the block for ``request`` (``size`` bytes)."""

    request: int
    size: int


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A block for ``request`` did not hash to the CID asked for (nothing was stored)."""

    request: int
    size: int


@dataclass(frozen=True, slots=True)
class Broken:
    """The peer's stream broke the protocol (``reason``): a malformed frame or message, or the stream
    ended inside a frame. The peer is dropped for the rest of the fetch."""

    reason: str


# ``None``: the stream failed to open, ended or broke off (the peer is removed, not blamed)
Event = Message | Stored | Corrupt | Broken | Opened | None


@dataclass(frozen=True, slots=True)
class StoreBlock:
    """A decision of :class:`ReplyReader`: verify ``message``'s block against ``cid``, store it, and
    report :class:`Stored` (or :class:`Corrupt`)."""

    cid: bytes
    message: BlockMessage


@dataclass
class Actions:
    """What the driver does after an event, in this order: log each of ``notes``, reset the streams of
    ``close`` (those peers are no longer asked), commit the store if ``commit``, report ``delivered``
    (cid, peer, size) to its caller, write each of ``send`` (peer, frame)."""

    close: list[PeerId] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commit: bool = False
    delivered: tuple[bytes, PeerId, int] | None = None
    send: list[tuple[PeerId, bytes]] = field(default_factory=list)


@dataclass
class _Provider:
    """One provider's stream as the asker sees it."""

    last_answer: float  # when the peer last answered anything (or the stream opened)
    next_request: int = 0
    open: dict[int, tuple[bytes, float]] = field(default_factory=dict)  # request -> (cid, time sent)
    not_found: dict[int, bytes] = field(default_factory=dict)  # answered NOT_FOUND: a HAVE may follow
    ignored: set[int] = field(default_factory=set)  # cancelled or timed out: late answers are dropped


class Asker:
    """One fetch's session rules over every provider. ``plan`` decides who is asked for what."""

    def __init__(self, plan: FetchPlan, *, now: float, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.plan = plan
        self.timeout = request_timeout
        self.stats = FetchStats()
        self.providers: dict[PeerId, _Provider] = {}
        self.opening: set[PeerId] = set()  # streams being opened
        self._known: set[PeerId] = set()
        self._uncommitted = 0
        self._last_commit = now

    def want(self, cids: Iterable[bytes], held: Iterable[bytes]) -> None:
        """Fetch each of ``cids`` that is not ``held`` already (those are only counted)."""
        held = set(held)
        for cid in cids:
            if cid in held:
                self.stats.already_held += 1
            else:
                self.plan.want(cid)

    @property
    def done(self) -> bool:
        return self.plan.done

    # -- providers -----------------------------------------------------------------------------

    def dialing(self, peer: PeerId) -> bool:
        """The driver may open a stream to ``peer``: True if it is new to this fetch (then do)."""
        if peer in self._known:
            return False
        self._known.add(peer)
        self.opening.add(peer)
        self.stats.peers += 1
        return True

    def unreachable(self, peer: PeerId) -> None:
        """No stream could be opened to ``peer`` (the driver reports the end of it as ``None``)."""
        self.stats.unreachable.add(peer)

    def connected(self, peer: PeerId, now: float) -> None:
        """A stream to ``peer`` is open: it may be asked from now (report :data:`OPENED` after)."""
        self.providers[peer] = _Provider(last_answer=now)
        self.plan.add_peer(peer)

    def reader(self, peer: PeerId) -> ReplyReader:
        return ReplyReader(self, peer)

    def _drop(self, peer: PeerId, *, bad: bool) -> Actions:
        provider = self.providers.pop(peer, None)
        if bad:
            self.plan.drop_peer(peer)
            self.stats.dropped.add(peer)
        else:
            self.plan.remove_peer(peer)
        return Actions(close=[peer] if provider is not None else [])

    def write_failed(self, peer: PeerId) -> Actions:
        """A write to ``peer``'s stream failed: it is no longer asked (not blamed)."""
        return self._drop(peer, bad=False)

    # -- decisions -----------------------------------------------------------------------------

    def requests(self, now: float) -> list[tuple[PeerId, bytes]]:
        """The WANTs to send now, as one piece of frames per peer (a socket write costs as much as
        a whole block's Python work on loopback)."""
        batches: dict[PeerId, list[bytes]] = {}
        for request in self.plan.next_requests():
            provider = self.providers[request.peer]  # the plan only asks peers that have a stream
            number = provider.next_request
            provider.next_request = (number + 1) & MAX_REQUEST_ID
            provider.open[number] = (request.cid, now)
            batches.setdefault(request.peer, []).append(encode_message(Want(number, request.cid)))
        return [(peer, b"".join(wants)) for peer, wants in batches.items()]

    def failure(self) -> str | None:
        """Why the fetch cannot finish, if it cannot (ask after :meth:`requests`, while not done)."""
        if not self.opening and not self.providers:
            stats = self.stats
            missing = self.plan.queued()[:1]
            what = f"block {cid_to_text(missing[0])}" if missing else "the blocks"
            if stats.unreachable and len(stats.unreachable) == stats.peers:
                return f"cannot reach the {stats.peers} peer(s) that hold it: no connection or no answer"
            return f"no peer could provide {what}: every peer failed or lacks it"
        if not self.opening and not any(p.open for p in self.providers.values()):
            # nothing is on its way: if some block can be asked of nobody, the fetch cannot finish
            # (computed only here: it walks the whole queue)
            unavailable = self.plan.unavailable()
            if unavailable:
                return f"no peer has block {cid_to_text(unavailable[0])}"
        return None

    def deadline(self) -> float:
        """When the nearest provider counts as stalled (call :meth:`timer` then); inf if none can."""
        deadlines = [self._deadline(p) for p in self.providers.values() if p.open]
        return min(deadlines) if deadlines else float("inf")

    def _deadline(self, provider: _Provider) -> float:
        """``timeout`` after the provider's latest answer, or after its oldest open request was sent if
        that is later (a provider that was idle). It answers in order: slow but steady is not stalled."""
        oldest = min(sent for _, sent in provider.open.values())
        return max(provider.last_answer, oldest) + self.timeout

    def timer(self, now: float) -> Actions:
        """The clock reached ``now``: every provider past its deadline has stalled."""
        actions = Actions()
        for peer, provider in list(self.providers.items()):
            if not provider.open or self._deadline(provider) > now:
                continue
            actions.notes.append(f"{peer} answered nothing for {self.timeout:.0f} s; asking others")
            provider.ignored.update(provider.open)
            provider.open.clear()
            if self.plan.stalled(peer):
                self.stats.dropped.add(peer)
                del self.providers[peer]
                actions.close.append(peer)
        return actions

    # -- events --------------------------------------------------------------------------------

    def handle(self, peer: PeerId, event: Event, now: float) -> Actions:
        """An event of ``peer``'s stream, at ``now``."""
        if isinstance(event, Opened):
            self.opening.discard(peer)
            return Actions()
        if event is None:
            self.opening.discard(peer)
            return self._drop(peer, bad=False)
        if isinstance(event, Broken):
            if peer not in self.providers:
                return Actions()
            actions = self._drop(peer, bad=True)
            actions.notes.append(f"{peer} broke the protocol ({event.reason}); dropping it")
            return actions
        provider = self.providers.get(peer)
        if provider is None:
            return Actions()
        provider.last_answer = now
        if isinstance(event, Have):  # the peer got a block it said it lacked
            cid = provider.not_found.pop(event.request, None)
            if cid is not None and self.plan.have(peer, cid):
                self.stats.haves += 1
            return Actions()
        if (
            isinstance(event, BlockMessage | NotFound | Stored | Corrupt)
            and event.request in provider.ignored
        ):
            provider.ignored.discard(event.request)
            return Actions()
        return self._reply(peer, provider, event, now)

    def _reply(self, peer: PeerId, provider: _Provider, event: Event, now: float) -> Actions:
        if isinstance(event, Stored | Corrupt):
            self.stats.bytes += event.size
        if isinstance(event, Corrupt):
            actions = self._drop(peer, bad=True)
            actions.notes.append(f"{peer} sent a corrupted block; dropping it")
            return actions
        entry = provider.open.pop(event.request, None) if isinstance(event, NotFound | Stored) else None
        if entry is None:
            return self._drop(peer, bad=True)  # a reply to nothing, or a request sent to us
        cid = entry[0]
        if isinstance(event, NotFound):
            self.stats.not_found += 1
            self.plan.not_found(peer, cid)
            provider.not_found[event.request] = cid
            while len(provider.not_found) > MAX_WAITING:
                del provider.not_found[next(iter(provider.not_found))]
            return Actions()
        assert isinstance(event, Stored)
        return self._stored(peer, cid, event.size, now)

    def _stored(self, peer: PeerId, cid: bytes, size: int, now: float) -> Actions:
        try:
            cancels = self.plan.received(peer, cid)
        except UnrequestedBlockError:
            return self._drop(peer, bad=True)
        stats = self.stats
        stats.blocks += 1
        stats.received_from[peer] = stats.received_from.get(peer, 0) + 1
        actions = Actions(delivered=(cid, peer, size))
        self._uncommitted += 1
        if self._uncommitted >= COMMIT_EVERY or now - self._last_commit >= COMMIT_INTERVAL:
            self._last_commit = now
            self._uncommitted = 0
            actions.commit = True
        for cancel in cancels:  # the other copies of an endgame block
            other = self.providers.get(cancel.peer)
            if other is None:
                continue
            for number, (open_cid, _) in list(other.open.items()):
                if open_cid == cancel.cid:
                    del other.open[number]
                    other.ignored.add(number)
                    actions.send.append((cancel.peer, encode_message(Cancel(number))))
        return actions


class ReplyReader:
    """One provider's stream, read: turns its bytes into messages, and each BLOCK answering an open
    request into a :class:`StoreBlock` (the CID it must hash to). A BLOCK that answers nothing open is
    passed on as it is, for :meth:`Asker.handle` to judge."""

    def __init__(self, asker: Asker, peer: PeerId) -> None:
        self._asker = asker
        self._peer = peer
        self._decoder = FrameDecoder()

    def feed(self, data: bytes) -> list[Message | StoreBlock]:
        """Raises :class:`~protocol.messages.MessageError` for a malformed frame or message."""
        provider = self._asker.providers.get(self._peer)
        out: list[Message | StoreBlock] = []
        for message in self._decoder.feed(data):
            if provider is not None and isinstance(message, BlockMessage):
                entry = provider.open.get(message.request)
                if entry is not None:
                    out.append(StoreBlock(entry[0], message))
                    continue
            out.append(message)
        return out

    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return self._decoder.at_boundary()
