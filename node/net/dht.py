"""Content routing on the Kademlia DHT: announce and find the peers that hold a root.

py-libp2p's ``KadDHT`` (0.8.1) wrapped in one place. Only roots are announced (one provider record per
shared file or folder), never blocks: the library provides one key at a time.

Keys. A provider record is keyed by the **multihash** of the root, as kubo and go-libp2p do (a CID's
version and codec are not part of the key, so a lookup by any CID of the same hash meets the same
records). A Sealbox root is a binary CIDv1 ``01 55 12 20 <sha-256>``; its key is ``12 20 <sha-256>``.
The library's own string-keyed ``provide`` / ``find_providers`` do the same for a CID string; we call
its provider store with the bytes directly.

Lifetimes. The library drops a provider record 48 h after it was received
(``PROVIDER_RECORD_EXPIRATION_INTERVAL`` in ``libp2p/kad_dht/provider_store.py``, go-libp2p's value).
``serve_reprovider`` announces every root at start and then every ``REPROVIDE_INTERVAL`` = 12 h: four
announcements per lifetime, so a record survives a missed round or a day offline. It is the only
schedule: the library would also republish every key it ever announced (10 min after start, then every
22 h, even roots no longer shared), so ``provide`` takes the key out of the library's own list.

Workarounds for the library's known defects (docs/py-libp2p.md, "DHT"):

- The DHT must exist before the host connects to anyone: a peer is added to the routing table only if
  its Identify lists ``/ipfs/kad/1.0.0``, and Identify runs once, right after connecting. ``open_dht``
  refuses a host that already has connections.
- Nothing adds a connected peer to the routing table: ``Dht.bootstrap`` connects, adds the peers, and
  looks up our own id twice so that they add us in turn (a server adds the sender of a request only if
  it already knows the sender's addresses, which the first request carries).
- ``find_providers`` returns the same peer once per DHT node that answered, counts those copies towards
  its limit, and answers from the local store alone whenever it holds any record for the key (so a node
  that has seen one provider never looks for more). ``Dht.find_providers`` runs the network lookup in a
  scratch store, stops it as soon as ``limit`` distinct providers are known, merges it with the local
  records, removes duplicates and the local peer, and keeps what it found so far when its deadline
  strikes. (The library's lookup otherwise ends only when it runs out of peers to ask.)
- The inbound handler logs a warning for every request because ``stream.read()`` raises ``StreamEOF`` at
  the normal end of a stream: a logging filter drops exactly that record (a patch:
  ``node/net/libp2p_patches/kad_dht.py``).
- ADD_PROVIDER is fire-and-forget (no answer, as in kubo): an announcement is "sent", not "stored". And
  contrary to the notes, 0.8.1 does rate-limit it: a DHT server takes at most 10 per 10 s from one peer
  and silently drops the rest (measured: 14 quick provides, 10 stored). ``Dht.provide`` therefore
  spaces announcements ``PROVIDE_SPACING`` = 1.1 s apart, whoever calls it: a full reprovide round of
  N roots takes ~1.1 N s (39,000 roots fit in the 12 h interval).
- Each round of the library's iterative lookup sends ALPHA = 10 queries and waits for all of them, each
  bounded by ``QUERY_TIMEOUT`` = 10 s: one vanished peer in a round costs the round 10 s, so with 30%
  of nodes gone a lookup in 10,000 nodes outlived our 30 s find deadline 92% of the time
  (``scripts/sim_dht.py``). The library's ``QUERY_TIMEOUT`` is set to ``DHT_QUERY_TIMEOUT`` = 3 s (a
  patch: ``node/net/libp2p_patches/kad_dht.py``); with it, every simulated lookup succeeds at 10-50% churn.
- The library's provider lookup first completes a whole FIND_NODE lookup and only then asks
  GET_PROVIDERS, because its GET_PROVIDERS client drops the addresses of the closer peers an answer
  names: 5 rounds to a record at 10,000 nodes where the path is 3 hops. ``_Collector``
  (node/net/dht_lookup.py) asks GET_PROVIDERS from the first round and keeps those addresses (kubo's way),
  and falls back to the library's lookup only when that finds nothing.
- What a remote peer can make us hold or do (values, message sizes, provider records, ADD_PROVIDER
  rate) is bounded by ``node/net/dht_guard.py``; Sealbox uses no DHT values and refuses them.
- Not worked around: the inbound handler resets streams past 12 concurrent ones (callers should not
  run many lookups at once).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.provider_store import PROVIDER_RECORD_EXPIRATION_INTERVAL
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.tools.anyio_service import background_trio_service

from node.errors import single_exception
from node.net.dht_guard import CappedProviderStore, DhtGuard
from node.net.dht_lookup import _Collector as _Collector
from node.net.errors import NetworkError
from node.net.host import Peer, connect
from node.net.libp2p_patches.kad_dht import DHT_QUERY_TIMEOUT as DHT_QUERY_TIMEOUT
from protocol.cid import cid_multihash

if TYPE_CHECKING:
    # trio-typing (a py-libp2p dependency) installs trio-stubs, which mypy reads instead of trio's own types
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

RECORD_LIFETIME = float(PROVIDER_RECORD_EXPIRATION_INTERVAL)  # 48 h
REPROVIDE_INTERVAL = 12 * 60 * 60.0
PROVIDE_TIMEOUT = 60.0
BOOTSTRAP_LOOKUP_TIMEOUT = 10.0
FIND_TIMEOUT = 30.0
FIND_LIMIT = 20
FIND_GRACE = 2.0  # seconds a lookup goes on for more providers once it knows one
FIND_RETRY_FIRST = 0.5  # seconds before a lookup that found nothing is tried again (then doubling)
# a DHT server (py-libp2p 0.8.1) takes at most 10 ADD_PROVIDER per 10 s from one peer and drops the rest
PROVIDE_SPACING = 1.1
REPROVIDE_RETRY_FIRST = 60.0  # seconds before a round that left a record with no DHT peer is tried again
assert REPROVIDE_INTERVAL * 3 < RECORD_LIFETIME


def provider_key(root: bytes) -> bytes:
    """The DHT key of a root: the multihash inside its CID (raises ``CidError`` if it is not a root)."""
    return cid_multihash(root)


class Dht:
    """A running DHT node on a host. Make it with :func:`open_dht`."""

    def __init__(
        self,
        host: IHost,
        kad: KadDHT,
        provide_spacing: float = PROVIDE_SPACING,
        guard: DhtGuard | None = None,
    ) -> None:
        self.host = host
        self.kad = kad
        self.guard = guard
        self.provide_spacing = provide_spacing
        self._provide_lock = trio.Lock()
        self._next_provide = 0.0

    async def bootstrap(self, addrs: Iterable[str]) -> int:
        """Connect to known peers (full multiaddrs), add them, and make ourselves known to them.

        Returns how many were reached; unreachable ones are logged and skipped.
        """
        reached = 0
        for addr in addrs:
            try:
                peer_id = await connect(self.host, addr)
            except NetworkError as exc:
                log.info("bootstrap peer skipped: %s", exc)
                continue
            if await self.kad.add_peer(ID.from_base58(peer_id)):
                reached += 1
        if reached:
            # A lookup of our own id makes us known. Twice: a DHT server adds the sender of a request to
            # its routing table only if it already knows the sender's addresses, which the first request
            # delivers (in its signed peer record) when Identify has not done so yet.
            me = self.host.get_id().to_bytes()
            with trio.move_on_after(BOOTSTRAP_LOOKUP_TIMEOUT):
                for _ in range(2):
                    await self.kad.peer_routing.find_closest_peers_network(me)
        return reached

    def routing_table_size(self) -> int:
        return int(self.kad.get_routing_table_size())

    async def provide(self, root: bytes) -> bool:
        """Announce that this node holds ``root``. True if at least one DHT peer was sent the record.

        The record is kept locally either way; ``serve_reprovider`` announces it again.
        """
        key = provider_key(root)
        async with self._provide_lock:
            # a DHT server drops ADD_PROVIDER past 10 per 10 s from one peer (see the module docstring)
            await trio.sleep_until(self._next_provide)
            try:
                with trio.fail_after(PROVIDE_TIMEOUT):
                    sent = await self.kad.provider_store.provide(key)
            except trio.TooSlowError:
                raise NetworkError("announcing a root on the DHT timed out") from None
            finally:
                # the reprovider owns the schedule (see the module docstring)
                self.kad.provider_store.providing_keys.discard(key)
                self._next_provide = trio.current_time() + self.provide_spacing
        return bool(sent)

    async def find_providers(
        self,
        root: bytes,
        *,
        limit: int = FIND_LIMIT,
        timeout: float = FIND_TIMEOUT,  # noqa: ASYNC109 - on the deadline we return what was found so far
        grace: float = FIND_GRACE,
    ) -> list[Peer]:
        """Up to ``limit`` distinct peers (not this one) that announced ``root``, found within ``timeout``.

        Once one provider is known, the lookup goes on for at most ``grace`` seconds more: a DHT peer that
        does not answer (gone, cut off) must not hold up a fetch that already has somewhere to start. A
        lookup that ends with nothing (its peers all failed or knew nothing: the table may be stale, a
        record may be on its way) is tried again, 0.5 s later and then at doubling intervals, until the
        deadline, unless no peer is connected any more (none is left to ask). Returns what was found
        when the deadline strikes, possibly ``[]``; never raises for a miss.
        """
        if limit < 1:
            return []
        deadline = trio.current_time() + timeout
        pause = FIND_RETRY_FIRST
        while True:
            found = await self._find_once(provider_key(root), limit, deadline, grace)
            left = deadline - trio.current_time()
            if found or left <= 0:
                return found[:limit]
            if not self.host.get_connected_peers():
                # every DHT peer this node knew failed (the swarm then refuses them for 60 s): another
                # try would ask no one, so a fetch can say so now rather than at the deadline
                return []
            await trio.sleep(min(pause, left))
            pause *= 2

    def local_providers(self, root: bytes) -> list[Peer]:
        """The providers of ``root`` this node's own provider store holds (no lookup): a fetch dials
        them at once while the lookup looks for more."""
        return _distinct(self.kad.provider_store.get_providers(provider_key(root)), self.host)

    async def _find_once(self, key: bytes, limit: int, deadline: float, grace: float) -> list[Peer]:
        store = self.kad.provider_store
        found = _distinct(store.get_providers(key), self.host)
        if len(found) < limit:
            scratch = _Collector(self.host, self.kad, key, {p.peer_id for p in found}, limit)
            with trio.move_on_at(deadline):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(scratch.lookup, nursery.cancel_scope)
                    if not found:
                        await scratch.first.wait()
                    with trio.move_on_after(grace):
                        await scratch.enough.wait()
                    nursery.cancel_scope.cancel()
            found = _distinct([*store.get_providers(key), *scratch.get_providers(key)], self.host)
        return found


@asynccontextmanager
async def open_dht(
    host: IHost, *, server: bool = True, provide_spacing: float = PROVIDE_SPACING
) -> AsyncIterator[Dht]:
    """Run a Kademlia DHT node on ``host`` (which must not be connected to anyone yet).

    ``server=False`` makes a client: it queries and announces but does not answer other peers (for a
    node others cannot dial). ``provide_spacing`` is the least time between two announcements.
    """
    if host.get_connected_peers():
        raise RuntimeError("create the DHT before the host connects to any peer")
    kad = KadDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT)
    # bounds on what remote peers can make us hold or do (node/net/dht_guard.py)
    kad.provider_store = CappedProviderStore(host, kad.peer_routing)
    guard = DhtGuard(kad)
    if server:
        host.set_stream_handler(TProtocol(KAD_PROTOCOL_ID), guard.handle_stream)
    try:
        async with background_trio_service(kad):
            yield Dht(host, kad, provide_spacing, guard)
    except BaseExceptionGroup as group:
        # the service's nursery wraps whatever crosses it, our own body's exceptions included: unwrap one
        leaf = single_exception(group)
        if leaf is group:
            raise
        raise leaf from None


async def serve_reprovider(
    dht: Dht,
    roots: Callable[[], Iterable[bytes]],
    interval: float = REPROVIDE_INTERVAL,
    *,
    announced: Callable[[bytes, bool], None] | None = None,
    retry: float = REPROVIDE_RETRY_FIRST,
    task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Announce every root in ``roots()`` now and then every ``interval`` seconds, one at a time.

    ``roots`` is called afresh each round, so roots added or removed in between are followed. A round in
    which no DHT peer took some record (the node is cut off, or has not joined yet) is followed by
    another one ``retry`` seconds later, doubling up to ``interval``, not ``interval`` later: a record
    nobody holds would otherwise be missing for 12 h. ``announced(root, sent)`` is called after each
    announcement (for logs and tests). One log line per round says what the round did.
    """
    if not 0 < interval < RECORD_LIFETIME:
        raise ValueError("the reprovide interval must be positive and shorter than a record's lifetime")
    task_status.started()
    pause = retry
    while True:
        sent_count, total = 0, 0
        for root in list(roots()):
            try:
                sent = await dht.provide(root)
            except NetworkError as exc:
                log.warning("reprovide: %s", exc)
                sent = False
            if announced is not None:
                announced(root, sent)
            sent_count += sent
            total += 1
        if sent_count == total:
            wait = interval
            pause = retry
            what = f"announced {total} root(s)" if total else "no pinned root to announce"
        else:
            wait = min(pause, interval)
            pause = min(pause * 2, interval)
            what = (
                f"announced {sent_count} of {total} root(s); no DHT peer took the other {total - sent_count}"
            )
        log.info("reprovide: %s; next round in %.0f s", what, wait)
        await trio.sleep(wait)


def _distinct(infos: Iterable[PeerInfo], host: IHost) -> list[Peer]:
    """One :class:`Peer` per peer id, in first-seen order, merging addresses; never the local peer."""
    me = host.get_id()
    merged: dict[str, list[str]] = {}
    for info in infos:
        if info.peer_id == me:
            continue
        peer_id = info.peer_id.to_base58()
        addrs = merged.setdefault(peer_id, [])
        for addr in info.addrs:
            full = _with_peer_id(addr, peer_id)
            if full is not None and full not in addrs:
                addrs.append(full)
    return [Peer(peer_id, tuple(addrs)) for peer_id, addrs in merged.items()]


def _with_peer_id(addr: multiaddr.Multiaddr, peer_id: str) -> str | None:
    """``addr`` ending in ``/p2p/<peer_id>``; None if it names another peer."""
    try:
        named = addr.get_peer_id()
    except ValueError:
        return None
    if named is None:
        return f"{addr}/p2p/{peer_id}"
    return str(addr) if named == peer_id else None
