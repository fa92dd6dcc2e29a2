"""Which block to ask of which peer: the block-exchange scheduler, as a pure state machine.

The asker session (protocol/exchange_asker.py) feeds it events - a peer joined or left, a block arrived,
a peer said it does not have a block, a request timed out, a peer sent a bad block - and asks it for
requests to send.

Rules (specs/block-exchange.md, "Scheduling"):
- each wanted block is asked of exactly one peer at a time, in the order it was wanted;
- a request goes to the eligible peer with the fewest requests open (then the fewest timeouts, the
  fewest blocks received, the lowest peer id), so load spreads over every provider and fast peers,
  whose windows free up sooner, get more; a peer that timed out on a block is asked for it again
  only if no other peer can be;
- a peer that answers nothing for a whole timeout while it has requests open has stalled: all of them
  go back to the queue and count as one timeout (a peer that answers slowly but steadily, as a busy
  seed does, never times out: the driver measures the timeout from its latest answer);
- a peer never has more than ``window`` requests open;
- a block a peer said it does not have is not asked of that peer again, unless the peer says later
  that it has it now (HAVE: it is fetching the same file); a peer that said NOT_FOUND once is a
  downloader: it is asked for a block without a HAVE for it only when no better peer is free, and
  only ``blind_asks`` such peers per block (each miss subscribes us to its HAVE); a peer that sent a bad or
  unrequested block, or timed out (or stalled) ``max_timeouts`` times, is dropped for good;
- endgame, only at the tail (nothing left unassigned, and no more blocks in flight than there are
  peers): a block in flight may also be asked of up to ``endgame_copies - 1`` other idle peers; the
  first copy to arrive cancels the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.errors import ProtocolError

PeerId = str


class UnrequestedBlockError(ProtocolError):
    """A peer sent a block nobody asked it for: it is dropped and the block is not stored."""


@dataclass(frozen=True, slots=True)
class Request:
    peer: PeerId
    cid: bytes


@dataclass(frozen=True, slots=True)
class CancelRequest:
    peer: PeerId
    cid: bytes


@dataclass
class PeerState:
    open: dict[bytes, None] = field(default_factory=dict)  # cids asked of this peer, in order
    missing: set[bytes] = field(default_factory=set)  # cids this peer said it does not have
    cancelled: set[bytes] = field(default_factory=set)  # asked, then cancelled: a late reply is fine
    received: int = 0
    timeouts: int = 0
    partial: bool = False  # it said NOT_FOUND once: a downloader itself, not a seed
    has: set[bytes] = field(default_factory=set)  # cids it said HAVE for (and not yet sent)


class FetchPlan:
    def __init__(
        self, *, window: int = 16, endgame_copies: int = 2, max_timeouts: int = 3, blind_asks: int = 2
    ) -> None:
        if window < 1 or endgame_copies < 1 or max_timeouts < 1 or blind_asks < 1:
            raise ValueError("window, endgame_copies, max_timeouts and blind_asks must be >= 1")
        self.window = window
        self.blind_asks = blind_asks
        self._blind: dict[bytes, int] = {}  # cid -> partial peers asked for it without a HAVE
        self.endgame_copies = endgame_copies
        self.max_timeouts = max_timeouts
        self._queue: dict[bytes, None] = {}  # wanted, not in flight, in priority order
        self._flight: dict[bytes, list[PeerId]] = {}  # in flight -> peers asked, in order
        self._peers: dict[PeerId, PeerState] = {}
        self._dropped: set[PeerId] = set()
        self._done: set[bytes] = set()
        self.received_from: dict[PeerId, int] = {}

    # -- what is wanted ------------------------------------------------------------------------

    def want(self, cid: bytes) -> None:
        """Add ``cid`` to the blocks to fetch (after those already wanted). Idempotent."""
        if cid not in self._done and cid not in self._flight:
            self._queue.setdefault(cid, None)

    @property
    def done(self) -> bool:
        return not self._queue and not self._flight

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._flight)

    def peers(self) -> list[PeerId]:
        return sorted(self._peers)

    def open_requests(self, peer: PeerId) -> list[bytes]:
        """The blocks asked of ``peer`` and not yet answered, oldest first."""
        state = self._peers.get(peer)
        return [] if state is None else list(state.open)

    def missing_at(self, peer: PeerId) -> set[bytes]:
        state = self._peers.get(peer)
        return set() if state is None else set(state.missing)

    def queued(self) -> list[bytes]:
        """Wanted blocks not yet asked of anyone, in order."""
        return list(self._queue)

    # -- peers ---------------------------------------------------------------------------------

    def add_peer(self, peer: PeerId) -> bool:
        """Start asking ``peer``. Returns False for a peer dropped earlier (it is never asked again)."""
        if peer in self._dropped:
            return False
        self._peers.setdefault(peer, PeerState())
        return True

    def remove_peer(self, peer: PeerId) -> list[bytes]:
        """A peer left (disconnect, stream error): its open requests go back to the queue."""
        state = self._peers.pop(peer, None)
        if state is None:
            return []
        requeued = []
        for cid in state.open:
            asked = self._flight.get(cid)
            if asked is None:
                continue
            asked.remove(peer)
            if not asked:
                del self._flight[cid]
                requeued.append(cid)
        # requeued blocks go to the front: they were wanted before anything still queued
        self._queue = dict.fromkeys(requeued) | self._queue
        return requeued

    def drop_peer(self, peer: PeerId) -> list[bytes]:
        """A peer misbehaved (bad or unrequested block): forget it for good."""
        self._dropped.add(peer)
        return self.remove_peer(peer)

    # -- replies -------------------------------------------------------------------------------

    def received(self, peer: PeerId, cid: bytes) -> list[CancelRequest]:
        """A block that hashed to ``cid`` arrived from ``peer``. Returns cancels for other copies.

        Raises :class:`UnrequestedBlockError` if ``peer`` was not asked for it.
        """
        state = self._peers.get(peer)
        if state is None or (cid not in state.open and cid not in state.cancelled):
            raise UnrequestedBlockError("peer sent a block it was not asked for")
        if cid in state.cancelled:  # a late copy of a block that came from elsewhere
            state.cancelled.discard(cid)
            return []
        del state.open[cid]
        state.received += 1
        self.received_from[peer] = self.received_from.get(peer, 0) + 1
        asked = self._flight.pop(cid, [])
        self._done.add(cid)
        cancels = []
        for other in asked:
            if other != peer and other in self._peers:
                other_state = self._peers[other]
                other_state.open.pop(cid, None)
                other_state.cancelled.add(cid)
                cancels.append(CancelRequest(other, cid))
        return cancels

    def not_found(self, peer: PeerId, cid: bytes) -> None:
        """``peer`` does not have ``cid``: ask someone else, never this peer again for it."""
        state = self._peers.get(peer)
        if state is None:
            return
        if cid in state.cancelled:
            state.cancelled.discard(cid)
            return
        if cid not in state.open:
            raise UnrequestedBlockError("peer answered a request it was not sent")
        del state.open[cid]
        state.missing.add(cid)
        state.partial = True
        self._release(peer, cid)

    def have(self, peer: PeerId, cid: bytes) -> bool:
        """``peer``, which said it did not have ``cid``, now has it (a HAVE): it may be asked again.
        Returns True if that changed anything (the block is still wanted and the peer is current)."""
        state = self._peers.get(peer)
        if state is None or cid not in state.missing:
            return False
        state.missing.discard(cid)
        state.has.add(cid)
        return cid in self._queue or cid in self._flight

    def stalled(self, peer: PeerId) -> bool:
        """``peer`` has answered nothing for a whole timeout while requests to it were open: every one of
        them goes back to the queue (another peer is preferred for them) and counts as one timeout.
        Returns True if the peer is now dropped."""
        state = self._peers.get(peer)
        if state is None or not state.open:
            return False
        requeued = []
        for cid in list(state.open):
            del state.open[cid]
            state.cancelled.add(cid)  # if it still answers, that is not a protocol error
            asked = self._flight.get(cid)
            if asked is not None and peer in asked:
                asked.remove(peer)
                if not asked:
                    del self._flight[cid]
                    requeued.append(cid)
        self._queue = dict.fromkeys(requeued) | self._queue  # in their order, before anything queued
        state.timeouts += 1
        if state.timeouts >= self.max_timeouts:
            self.drop_peer(peer)
            return True
        return False

    def _release(self, peer: PeerId, cid: bytes) -> None:
        asked = self._flight.get(cid)
        if asked is None:
            return
        if peer in asked:
            asked.remove(peer)
        if not asked:
            del self._flight[cid]
            self._queue = {cid: None} | self._queue

    # -- decisions -----------------------------------------------------------------------------

    def next_requests(self) -> list[Request]:
        """Requests to send now, filling every peer's window."""
        out: list[Request] = []
        if not self._peers:
            return out
        for cid in list(self._queue):
            peer = self._pick(cid, exclude=())
            if peer is None:
                if self._all_full():
                    break
                continue
            del self._queue[cid]
            self._flight[cid] = [peer]
            self._ask(peer, cid)
            out.append(Request(peer, cid))
        # endgame only for the last few blocks: with deep windows to many peers, "everything asked"
        # comes early, and copying every block in flight would double the traffic
        if not self._queue and self.endgame_copies > 1 and len(self._flight) <= len(self._peers):
            out += self._endgame()
        return out

    def _endgame(self) -> list[Request]:
        out = []
        for cid, asked in list(self._flight.items()):
            if len(asked) >= self.endgame_copies:
                continue
            peer = self._pick(cid, exclude=asked)
            if peer is None:
                if self._all_full():
                    break
                continue
            asked.append(peer)
            self._ask(peer, cid)
            out.append(Request(peer, cid))
        return out

    def _ask(self, peer: PeerId, cid: bytes) -> None:
        state = self._peers[peer]
        state.open[cid] = None
        state.cancelled.discard(cid)  # a new request: a late answer to the old one now answers it
        if self._blind_for(state, cid):
            self._blind[cid] = self._blind.get(cid, 0) + 1
        state.has.discard(cid)

    @staticmethod
    def _blind_for(state: PeerState, cid: bytes) -> bool:
        """Asking this peer for ``cid`` would be a guess: it is a downloader and never said HAVE for it."""
        return state.partial and cid not in state.has

    def _closed_to(self, state: PeerState, cid: bytes) -> bool:
        """This peer cannot be asked for ``cid``: it lacks it, or it is a downloader already guessed at
        by ``blind_asks`` others (each miss subscribes the asker to a HAVE, so a few are enough)."""
        if cid in state.missing:
            return True
        return self._blind_for(state, cid) and self._blind.get(cid, 0) >= self.blind_asks

    def _pick(self, cid: bytes, exclude: list[PeerId] | tuple[()]) -> PeerId | None:
        best: tuple[bool, bool, int, int, int, PeerId] | None = None
        for peer, state in self._peers.items():
            if len(state.open) >= self.window or peer in exclude or self._closed_to(state, cid):
                continue
            # a peer that already failed this block comes last, then one that may well not have it
            # (a downloader without a HAVE for it), then the least busy, the most reliable
            blind = self._blind_for(state, cid)
            rank = (cid in state.cancelled, blind, len(state.open), state.timeouts, state.received, peer)
            if best is None or rank < best:
                best = rank
        return None if best is None else best[-1]

    def _all_full(self) -> bool:
        return all(len(state.open) >= self.window for state in self._peers.values())

    def unavailable(self) -> list[bytes]:
        """Wanted blocks that no current peer can give now (each said not found, or is a downloader
        that may only say HAVE later, or there are no peers)."""
        if not self._flight and not self._peers:
            return list(self._queue)
        return [cid for cid in self._queue if all(self._closed_to(s, cid) for s in self._peers.values())]
