"""The provider lookup behind ``Dht.find_providers`` (node/net/dht.py): a scratch provider store that asks
GET_PROVIDERS from the first round and keeps the closer peers' addresses, as kubo does.

It reads the library's ``QUERY_TIMEOUT`` and ``sort_peer_ids_by_distance`` at call time, as a patch
(node/net/libp2p_patches/kad_dht.py) sets the one and ``scripts/sim_dht.py`` replaces the other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.kad_dht import provider_store as _provider_store_module
from libp2p.kad_dht.common import ALPHA, BUCKET_SIZE, MAX_DHT_MESSAGE_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message as KadMessage
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.kad_dht.utils import maybe_consume_signed_record
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

log = logging.getLogger(__name__)

CLOSER_ADDR_TTL = 3600  # seconds a closer peer's address, learnt from a lookup, stays (the library's)


class _Collector(ProviderStore):
    """A scratch provider store for one lookup: it starts empty, so the library asks the network.

    ``first`` is set once one provider (other than us) is known, ``enough`` once ``want`` distinct ones are,
    ending the lookup early.

    The lookup asks GET_PROVIDERS from its first round, as kubo does (:meth:`_walk`): each answer names
    providers and closer peers, and the next round asks the closest peers not yet asked. py-libp2p's own
    lookup cannot do that, because its GET_PROVIDERS client drops the closer peers' addresses: it first
    completes a whole FIND_NODE lookup and only then asks GET_PROVIDERS, two to three rounds more in a
    network of 10,000 (``scripts/sim_dht.py``). :meth:`_ask_providers` is the library's request with
    those addresses kept. When the walk finds no provider, the library's lookup runs as a fallback.
    """

    def __init__(self, host: IHost, kad: KadDHT, key: bytes, known: set[str], want: int) -> None:
        super().__init__(host=host, peer_routing=kad.peer_routing)
        self.key = key
        self.seen = set(known)
        self.want = want
        self.first = trio.Event()
        self.enough = trio.Event()
        if self.seen:
            self.first.set()

    async def lookup(self, done: trio.CancelScope) -> None:
        await self._walk()
        if not self.first.is_set():
            # the library stops at ``count`` answers, duplicates included: ask for more than it will get
            await self.find_providers(self.key, self.want * ALPHA)
        done.cancel()

    async def _walk(self) -> None:
        """Kademlia's iterative lookup with GET_PROVIDERS: ALPHA queries per round to the closest peers
        not yet asked, until ``want`` providers are known or the BUCKET_SIZE closest peers have all
        been asked."""
        me = self.host.get_id()
        routing_table = self.peer_routing.routing_table
        known = set(routing_table.find_local_closest_peers(self.key, BUCKET_SIZE))
        if len(known) < BUCKET_SIZE:  # a young node's table is thin: its connections are a start
            known.update(self.host.get_connected_peers())
        known.discard(me)
        asked: set[ID] = set()
        while not self.enough.is_set():
            # looked up at call time: scripts/sim_dht.py puts a faster, equal version in the library
            sort = getattr(_provider_store_module, "sort_peer_ids_by_distance")  # noqa: B009
            nearest = sort(self.key, list(known))[:BUCKET_SIZE]
            batch = [peer for peer in nearest if peer not in asked][:ALPHA]
            if not batch:
                return
            asked.update(batch)
            learnt: list[ID] = []
            async with trio.open_nursery() as nursery:
                for peer in batch:
                    nursery.start_soon(self._query, peer, learnt)
            known.update(peer for peer in learnt if peer != me)

    async def _query(self, peer: ID, learnt: list[ID]) -> None:
        # the library's QUERY_TIMEOUT, which a patch (libp2p_patches/kad_dht.py) and the simulation set
        with trio.move_on_after(getattr(_provider_store_module, "QUERY_TIMEOUT")):  # noqa: B009
            learnt.extend(await self._ask_providers(peer))

    async def _ask_providers(self, peer: ID) -> list[ID]:
        """Send GET_PROVIDERS for our key to ``peer``; add the providers it names; keep the addresses of
        the closer peers it names in the peer store and return those peers. A peer that fails or answers
        nonsense yields nothing (the lookup goes on without it)."""
        host = self.host
        closer: list[ID] = []
        try:
            stream = await host.new_stream(peer, [TProtocol(KAD_PROTOCOL_ID)])
        except Exception as exc:  # noqa: BLE001 - dialing an untrusted peer fails in many library ways
            log.debug("GET_PROVIDERS: cannot open a stream to %s: %s", peer, exc)
            return closer
        try:
            request = KadMessage()
            request.type = KadMessage.MessageType.GET_PROVIDERS
            request.key = self.key
            request.senderRecord = env_to_send_in_RPC(host)[0]
            await stream.write(encode_varint_prefixed(request.SerializeToString()))
            answer = KadMessage()
            answer.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE))
            if answer.type != KadMessage.MessageType.GET_PROVIDERS:
                return closer
            if not maybe_consume_signed_record(answer, host, peer):
                return closer
            for record in answer.providerPeers:
                if record.id and maybe_consume_signed_record(record, host):
                    self.add_provider(self.key, PeerInfo(ID(record.id), _multiaddrs(record.addrs)))
            for record in answer.closerPeers:
                if not record.id or not maybe_consume_signed_record(record, host):
                    continue
                closer_id, addrs = ID(record.id), _multiaddrs(record.addrs)
                if closer_id != host.get_id() and addrs:
                    host.get_peerstore().add_addrs(closer_id, addrs, CLOSER_ADDR_TTL)
                    closer.append(closer_id)
        except Exception as exc:  # noqa: BLE001 - an untrusted answer: protobuf, records, stream errors
            log.debug("GET_PROVIDERS to %s failed: %s", peer, exc)
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        return closer

    def add_provider(self, key: bytes, provider: PeerInfo) -> None:
        super().add_provider(key, provider)
        if key == self.key and provider.peer_id != self.local_peer_id:
            self.seen.add(provider.peer_id.to_base58())
            self.first.set()
            if len(self.seen) >= self.want:
                self.enough.set()


def _multiaddrs(raw: Iterable[bytes]) -> list[multiaddr.Multiaddr]:
    out = []
    for item in raw:
        with contextlib.suppress(Exception):  # an unparsable address is skipped, as the library does
            out.append(multiaddr.Multiaddr(item))
    return out
