#!/usr/bin/env python3
"""Simulate the Kademlia DHT we run on 1,000 and 10,000 nodes in one process, with no network at all.

    scripts/sim_dht.py [--nodes 1000 10000] [--churn 0 10 30 50] [--lookups 1000] [--provides 200]
                       [--seed 1] [--rtt 0.1] [--dead timeout|refused] [--jobs N] [--json FILE]
                       [--find-timeout 30] [--query-timeout 3]      # what-ifs; defaults are the real values
                       [--readme | --readme-preview] [--from-json FILE]

``--readme`` rewrites the block between ``<!-- sim_dht -->`` and ``<!-- /sim_dht -->`` in
docs/performance.md with this run's table (``--readme-preview`` prints it instead); with ``--from-json``
the block comes from an earlier run's ``--json`` file and nothing is simulated.

Measured per network size and churn level: hops per lookup (distribution and histogram), messages per
lookup and per provide, and how often a lookup finds the provider record of a root once 10%, 30% or 50%
of the nodes have vanished. Goals (issue): median hops <= 4 at 10,000 nodes; >= 99% of lookups succeed
at 30% churn.

What runs: the library's own DHT code and ours, minus the network
-----------------------------------------------------------------
Every node is a real py-libp2p 0.8.1 ``KadDHT`` (its ``RoutingTable`` of ``KBucket``s, ``PeerRouting``,
``ProviderStore``) wrapped in our own ``node.net.dht.Dht``. Announcing is ``Dht.provide`` (the library's
``ProviderStore.provide``: an iterative lookup, then ADD_PROVIDER to the 20 closest peers found); finding
is ``Dht.find_providers``: our scratch-store ``_Collector`` walks towards the key asking GET_PROVIDERS
from the first round (``_Collector._walk``: ALPHA = 10 queries per round to the closest peers not yet
asked, each answer naming providers and closer peers with their addresses, until a provider is known and
the 2 s grace has passed, or the 20 closest known peers have all been asked), within our 30 s deadline;
only if the walk finds nothing does the library's ``ProviderStore.find_providers`` run (a full FIND_NODE
lookup, then GET_PROVIDERS in batches of ALPHA). Announcing uses the library's
``find_closest_peers_network`` as is: ALPHA = 10 queries per round (py-libp2p's value; the Kademlia
paper's is 3), k = 20, BETA = 3, at most 20 rounds, a 30 s cap, and its termination rules (stop when a
round brings no new peer and none of the 20 closest is unqueried, or when the 20 closest do not change).
Bucket rules are the library's: any full bucket splits, up to 256 buckets (so a table is a partition of
the whole key space with up to 20 peers per part, not Kademlia's "split only the bucket holding our own
id"); when a bucket cannot split, its least recently seen peer is pinged and replaced if it does not
answer; the per-subnet diversity cap is checked (every simulated node has its own private 10.x address,
which the library exempts).

Replaced: only what touches the network. Five methods that open a libp2p stream are swapped for in-memory
versions that follow the real code line by line, minus protobuf and signed-record checks:
``node.net.dht._Collector._ask_providers`` (our GET_PROVIDERS: providers, and closer peers whose addresses go
into the peerstore), ``PeerRouting._query_peer_for_closest`` (FIND_NODE; the library's
``move_on_after(QUERY_TIMEOUT)`` around it, adding the peer to the table before the query and removing it
when the dial fails, adding every returned peer with addresses to the peerstore and the table),
``ProviderStore._get_providers_from_peer_with_closers`` (GET_PROVIDERS, for the fallback),
``ProviderStore._send_add_provider`` (ADD_PROVIDER, fire-and-forget) and ``KBucket._ping_peer`` (answers
at once: alive or not). The answering side repeats what ``KadDHT._do_handle_stream`` does: add the sender
to the routing table (which works only if its addresses are already known, as in the library), then take
in its signed peer record (its address), answer with ``routing_table.find_local_closest_peers(key, 20)``
minus the sender, each with the addresses the server's peerstore holds (FIND_NODE puts a known target
first), and store or return provider records in its real ``ProviderStore``. The host is a stand-in
exposing only what this code touches (``get_id``, ``get_addrs``, ``get_peerstore``,
``get_connected_peers``, ``set_stream_handler``); its peerstore is a dict with the library
``PeerStore``'s cap of 1,000 peers and its eviction order (oldest first; ``--peerstore-cap 0`` lifts it);
addresses never expire here.

Made fast without changing a result (the library's versions spend most of a run on Python-level
``ID.__eq__`` / SHA-256 calls): the memoised ``routing_table.peer_id_to_key`` and ``_subnet_key``; a
``sort_peer_ids_by_distance`` (as imported by ``peer_routing`` and ``provider_store``),
``RoutingTable.find_local_closest_peers`` and ``find_bucket`` that read ``ID.xor_id`` (the ID's own cached
SHA-256 as an int); ``PeerRouting._query_single_peer_for_closest`` with a set instead of its O(n^2) list
scans; and a KBucket lock that does not yield (the real ``trio.Lock`` guards ``KBucket.add_peer`` across
its ping, which here never yields either, so the section stays whole; the yield alone cost 40% of the
run). At start the script compares each function with the library's own on random samples and stops
on any difference.

Time is virtual (trio's ``MockClock``, autojump): an RPC to a live node takes ``--rtt`` x U(0.5, 1.5)
seconds; a vanished node never answers, so the query timeout ends the query (the library's
``QUERY_TIMEOUT``, 10 s, which ``node/net/libp2p_patches/kad_dht.py`` sets to ``DHT_QUERY_TIMEOUT`` = 3 s)
and the peer stays in the routing table, since the library drops a peer only when its dial fails
(``--dead refused``: the dial fails after one rtt instead, and the peer is dropped). A round waits for
all its queries, so one vanished peer in a round costs the whole round that timeout. Lookups run one after
another, each with the library's concurrency inside it.

The network and the experiment
------------------------------
Nodes join one at a time, each through a random node that joined before it, as ``Dht.bootstrap`` does:
connect (Identify tells both sides the other's address), add the peer, look up our own id twice. A
server adds a requester to its table only if it already knows the requester's address (from Identify on
the bootstrap connection, an earlier request, or an answer that named it), as the handler does. Not
modelled: the library's routing-table refresh every 10 minutes (tables here hold only what joining and
the measured lookups taught them), connection reuse (a peer can be dialled only if its address is in
the dialler's peerstore, or it is the bootstrap connection), the ADD_PROVIDER rate limit (``Dht``
spaces announcements; here ``provide_spacing`` is 0) and the 12-stream inbound cap (one lookup at a
time). Then ``--lookups`` random roots are announced by random nodes (no churn). For each churn level a
forked copy of that network (so every scenario starts from the same state) loses that share of its
nodes at random, nothing repairs the tables (stale entries stay until a lookup trips on them), and
``--lookups`` finds run from random live nodes for roots whose provider is live (not the provider
itself), then ``--provides`` new roots are announced by random live nodes.

Definitions. A *round* is one batch of queries sent in parallel and waited for together (a round of the
walk, a ``find_closest_peers_network`` round or a ``find_providers`` GET_PROVIDERS batch); **hops** =
rounds until the provider record arrived (0: the finder held it). *Path hops* = length of the chain of
answers that led to the node holding the record. *Messages* = RPCs sent (FIND_NODE, GET_PROVIDERS,
ADD_PROVIDER), those to vanished nodes included; dials that fail for want of an address and pings are
counted apart. *Success* = ``Dht.find_providers`` returned the provider. *True 20 closest* = the 20 live
nodes closest to the key by the library's distance (XOR of SHA-256 of key and peer id), against what a
FIND_NODE lookup returned (a provide's, or a find's fallback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from _readme import PERFORMANCE, WRAP, markers, update_block  # noqa: E402 - standard library only
from _repo_venv import reexec_in_venv  # noqa: E402 - standard library only

if __name__ == "__main__":
    reexec_in_venv(__file__)

import argparse  # noqa: E402
import contextvars  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import heapq  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib.metadata import version  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any, cast  # noqa: E402

import trio  # noqa: E402
from libp2p.abc import IHost  # noqa: E402
from libp2p.kad_dht import peer_routing as peer_routing_module  # noqa: E402
from libp2p.kad_dht import provider_store as provider_store_module  # noqa: E402
from libp2p.kad_dht import routing_table as routing_table_module  # noqa: E402
from libp2p.kad_dht import utils as kad_utils  # noqa: E402
from libp2p.kad_dht.common import ALPHA, BETA, BUCKET_SIZE, MAXIMUM_BUCKETS, QUERY_TIMEOUT  # noqa: E402
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT  # noqa: E402
from libp2p.kad_dht.peer_routing import MAX_PEER_LOOKUP_ROUNDS, PeerRouting  # noqa: E402
from libp2p.kad_dht.provider_store import ProviderStore  # noqa: E402
from libp2p.kad_dht.routing_table import KBucket, RoutingTable  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import PeerInfo  # noqa: E402
from libp2p.peer.peerstore import PeerStoreError  # noqa: E402
from multiaddr import Multiaddr  # noqa: E402
from trio.testing import MockClock  # noqa: E402

sys.path.insert(0, str(ROOT))

from node.net.dht import (  # noqa: E402
    BOOTSTRAP_LOOKUP_TIMEOUT,
    DHT_QUERY_TIMEOUT,
    FIND_GRACE,
    FIND_LIMIT,
    FIND_TIMEOUT,
    PROVIDE_TIMEOUT,
    Dht,
    _Collector,
    provider_key,
)
from node.net.errors import NetworkError  # noqa: E402
from protocol.cid import CID_PREFIX  # noqa: E402

FIND_NODE = "FIND_NODE"
GET_PROVIDERS = "GET_PROVIDERS"
ADD_PROVIDER = "ADD_PROVIDER"
KINDS = (FIND_NODE, GET_PROVIDERS, ADD_PROVIDER)
PEERSTORE_CAP = 1000  # libp2p.peer.peerstore.PeerStore(max_peers=1000), what new_host() builds
DISCOVERED_ADDR_TTL = 3600  # what the library passes for addresses learnt from a FIND_NODE answer
SIGNED_RECORD_TTL = 7200  # what maybe_consume_signed_record passes
ED25519_ID_HEADER = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])  # identity multihash of an Ed25519 key
GOAL_MEDIAN_HOPS = 4
GOAL_HOPS_NODES = 10_000
GOAL_SUCCESS = 0.99
GOAL_SUCCESS_CHURN = 30

log = logging.getLogger("sim_dht")
_query_timeout = DHT_QUERY_TIMEOUT  # the node's value; --query-timeout (what-if) replaces it


# ---------------------------------------------------------------------------------------------------
# Per-operation accounting (a context variable: trio's child tasks inherit it)


@dataclass(eq=False)
class Op:
    """Counters of one provide or find, filled in by the in-memory RPCs it causes."""

    start: float
    provider: ID | None = None  # a find: the provider we look for
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rounds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    to_vanished: int = 0  # RPCs sent to a node that is gone
    no_address: int = 0  # dials that failed at once: no address known
    rounds_waiting: int = 0  # rounds with at least one RPC to a vanished node
    pings: int = 0
    delivered: int = 0  # ADD_PROVIDER that reached a live node
    depth: dict[ID, int] = field(default_factory=dict)
    closest: list[ID] | None = None  # what the first FIND_NODE lookup returned
    found_time: float | None = None
    found_hops: int = 0
    found_path: int = 0
    found_messages: int = 0
    _batch: object = None
    _batch_waits: bool = False

    def messages(self) -> int:
        return sum(self.sent.values())

    def enter_round(self, kind: str) -> None:
        """Count a new round when this RPC runs in another nursery than the previous one."""
        task = trio.lowlevel.current_task()
        batch = task.parent_nursery
        if batch is not self._batch:
            self._batch = batch
            self._batch_waits = False
            self.rounds[kind] += 1

    def vanished(self) -> None:
        self.to_vanished += 1
        if not self._batch_waits:
            self._batch_waits = True
            self.rounds_waiting += 1

    def learnt(self, via: ID, peers: Sequence[ID]) -> None:
        """Peers named by ``via``'s answer are one hop further than ``via``."""
        d = self.depth.get(via, 0) + 1
        depth = self.depth
        for peer in peers:
            if depth.get(peer, d + 1) > d:
                depth[peer] = d


_OP: contextvars.ContextVar[Op] = contextvars.ContextVar("sim_dht_op")


def _op() -> Op:
    op = _OP.get(None)
    if op is None:  # an RPC outside a measured operation (not expected): count it nowhere
        op = Op(0.0)
    return op


# ---------------------------------------------------------------------------------------------------
# The in-memory network: peerstore and host stand-ins, nodes, RPC delivery


class SimPeerStore:
    """What the DHT code asks of a peerstore: addresses by peer, with the library's cap and eviction.

    ``PeerStore.add_addrs`` evicts when it holds more than ``max_peers`` (1,000) peers: peers without
    addresses first, then expired ones, then in insertion order (a stable sort). Here every peer has its
    one address and none expires, so the oldest entry goes.
    """

    __slots__ = ("_addrs", "cap", "evicted")

    def __init__(self, cap: int) -> None:
        self._addrs: dict[ID, list[Multiaddr]] = {}
        self.cap = cap
        self.evicted = 0

    def addrs(self, peer_id: ID) -> list[Multiaddr]:
        found = self._addrs.get(peer_id)
        if found is None:
            raise PeerStoreError("peer ID not found")
        return found

    def known_addrs(self, peer_id: ID) -> list[Multiaddr]:
        return self._addrs.get(peer_id) or []

    def knows(self, peer_id: ID) -> bool:
        return peer_id in self._addrs

    def add_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr], ttl: int = 0) -> None:
        if peer_id in self._addrs or not addrs:
            return  # a simulated node has one address for life
        self._addrs[peer_id] = list(addrs)
        if self.cap and len(self._addrs) > self.cap:
            del self._addrs[next(iter(self._addrs))]
            self.evicted += 1

    def peer_ids(self) -> list[ID]:
        return list(self._addrs)

    def get_protocols(self, peer_id: ID) -> list[str]:
        # Identify's protocol list; empty makes RoutingTable.add_peer skip its server-mode check, which
        # every simulated node would pass anyway (all are DHT servers)
        if peer_id not in self._addrs:
            raise PeerStoreError("peer ID not found")
        return []

    def __len__(self) -> int:
        return len(self._addrs)


class SimHost:
    """The parts of a libp2p host that KadDHT, its routing table, peer routing and provider store use."""

    __slots__ = ("addrs", "connected", "net", "peer_id", "peerstore")

    def __init__(self, net: Network, peer_id: ID, addrs: list[Multiaddr], peerstore_cap: int) -> None:
        self.net = net
        self.peer_id = peer_id
        self.addrs = addrs
        self.peerstore = SimPeerStore(peerstore_cap)
        self.connected: set[ID] = set()

    def get_id(self) -> ID:
        return self.peer_id

    def get_addrs(self) -> list[Multiaddr]:
        return self.addrs

    def get_peerstore(self) -> SimPeerStore:
        return self.peerstore

    def get_connected_peers(self) -> list[ID]:
        return list(self.connected)

    def set_stream_handler(self, protocol_id: object, handler: object) -> None:
        """KadDHT registers its handler here; requests reach :meth:`SimNode.serve` instead."""


def _sim_host(host: object) -> SimHost:
    assert isinstance(host, SimHost)
    return host


class SimNode:
    """One DHT server: a stand-in host, a real KadDHT (with our fast routing table) and our Dht."""

    __slots__ = ("alive", "dht", "host", "kad", "peer_id")

    def __init__(self, net: Network, peer_id: ID, addr: Multiaddr, peerstore_cap: int) -> None:
        self.peer_id = peer_id
        self.host = SimHost(net, peer_id, [addr], peerstore_cap)
        ihost = cast(IHost, self.host)
        kad = KadDHT(ihost, DHTMode.SERVER)
        kad.routing_table = SimRoutingTable(peer_id, ihost)
        kad.peer_routing = SimPeerRouting(ihost, kad.routing_table)
        kad.provider_store = ProviderStore(host=ihost, peer_routing=kad.peer_routing)
        self.kad = kad
        self.dht = Dht(ihost, kad, provide_spacing=0.0)
        self.alive = True

    async def serve(self, sender: SimHost, key: bytes, kind: str) -> list[tuple[ID, list[Multiaddr]]]:
        """The answering side of one request, as ``KadDHT._do_handle_stream`` handles it."""
        # the handler adds the sender first: this works only if its addresses are known already...
        await self.kad.add_peer(sender.peer_id, skip_server_mode_check=True)
        # ...then takes in the signed peer record the request carries
        self.host.peerstore.add_addrs(sender.peer_id, sender.addrs, SIGNED_RECORD_TTL)
        if kind == ADD_PROVIDER:
            return []
        closest = self.kad.routing_table.find_local_closest_peers(key, BUCKET_SIZE)
        if kind == FIND_NODE:
            target = ID(key)
            if target == self.peer_id or self.host.peerstore.knows(target):
                closest = [target, *(p for p in closest if p != target)]
        known = self.host.peerstore.known_addrs
        return [(p, known(p)) for p in closest if p != sender.peer_id]


class Network:
    """All nodes, by id, and the delivery of one RPC: who can be dialled, who answers, how long it takes."""

    def __init__(self, nodes: int, seed: int, rtt: float, dead: str, peerstore_cap: int) -> None:
        rng = random.Random(f"{seed}:ids:{nodes}")
        self.rtt = rtt
        self.dead = dead
        self.latency_rng = random.Random(f"{seed}:latency:{nodes}")
        self.nodes: list[SimNode] = []
        self.by_id: dict[ID, SimNode] = {}
        for i in range(nodes):
            # an Ed25519 peer id (identity multihash of the public key); random bytes stand in for the
            # key: the DHT only ever sees SHA-256 of the id, as uniform either way
            peer_id = ID(ED25519_ID_HEADER + rng.randbytes(32))
            register_peer(peer_id)
            addr = Multiaddr(f"/ip4/10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/tcp/4001")
            node = SimNode(self, peer_id, addr, peerstore_cap)
            self.nodes.append(node)
            self.by_id[peer_id] = node

    def latency(self) -> float:
        return self.rtt * self.latency_rng.uniform(0.5, 1.5)

    async def rpc(self, client: SimHost, peer: ID, kind: str) -> SimNode | None:
        """Deliver one request; the answering node, or None when the dial fails.

        A vanished node never answers (``--dead timeout``): the caller's ``QUERY_TIMEOUT`` cancels the
        wait, as it would for a real dial that hangs.
        """
        op = _op()
        op.enter_round(kind)
        target = self.by_id.get(peer)
        if target is None or not (peer in client.connected or client.peerstore.knows(peer)):
            op.no_address += 1
            return None
        op.sent[kind] += 1
        if not target.alive:
            op.vanished()
            if self.dead == "timeout":
                await trio.sleep_forever()
            await trio.sleep(self.latency())
            return None
        await trio.sleep(self.latency())
        return target


# ---------------------------------------------------------------------------------------------------
# The in-memory replacements of the library's network I/O


class SimPeerRouting(PeerRouting):
    """``PeerRouting`` with FIND_NODE answered in memory, and the lookup's result kept for the report."""

    def __init__(self, host: IHost, routing_table: RoutingTable) -> None:
        super().__init__(host, routing_table)
        self._round: list[ID] | None = None
        self._seen: set[ID] = set()

    async def find_closest_peers_network(self, target_key: bytes, count: int = 20) -> list[ID]:
        result = await super().find_closest_peers_network(target_key, count)
        op = _op()
        if op.closest is None:
            op.closest = list(result)
        return result

    async def _query_single_peer_for_closest(self, peer: ID, target_key: bytes, new_peers: list[ID]) -> None:
        # the library's version, its O(n^2) list scans (and a list built only for a debug log line) done
        # with a set: the same peers appended in the same order
        try:
            result = await self._query_peer_for_closest(peer, target_key)
        except Exception as exc:  # noqa: BLE001 - as the library does
            log.debug("query to peer %s failed: %s", peer, exc)
            return
        # new_peers is this round's list: cleared by the lookup, appended to only here
        if new_peers is not self._round or len(self._seen) != len(new_peers):
            self._round = new_peers
            self._seen = set(new_peers)
        seen = self._seen
        for peer_id in result:
            if peer_id not in seen:
                seen.add(peer_id)
                new_peers.append(peer_id)

    async def _query_peer_for_closest(self, peer: ID, target_key: bytes) -> list[ID]:
        # PeerRouting._query_peer_for_closest, the stream replaced by Network.rpc + SimNode.serve
        host = _sim_host(self.host)
        local_id = host.peer_id
        if peer == local_id:
            return []
        results: list[ID] = []
        in_results: set[ID] = set()
        with trio.move_on_after(_query_timeout):
            # the library adds the peer to the routing table regardless of the query's outcome
            addrs = host.peerstore.known_addrs(peer)
            if addrs:
                await self.routing_table.add_peer(PeerInfo(peer, addrs))
            server = await host.net.rpc(host, peer, FIND_NODE)
            if server is None:
                # "Per spec: remove peer from routing table if connection fails"
                self.routing_table.remove_peer(peer)
                return []
            answer = await server.serve(host, target_key, FIND_NODE)
            _op().learnt(peer, [p for p, _ in answer])
            for new_peer_id, new_addrs in answer:
                if new_peer_id == local_id:
                    continue
                if new_peer_id not in in_results:
                    in_results.add(new_peer_id)
                    results.append(new_peer_id)
                if new_addrs:
                    host.peerstore.add_addrs(new_peer_id, new_addrs, DISCOVERED_ADDR_TTL)
                    await self.routing_table.add_peer(PeerInfo(new_peer_id, new_addrs))
        return results


async def _sim_get_providers(
    host: SimHost, peer_id: ID, key: bytes
) -> tuple[list[PeerInfo], list[tuple[ID, list[Multiaddr]]]] | None:
    """One GET_PROVIDERS in memory: the providers ``peer_id`` holds for ``key`` (their addresses, from
    the providers' signed peer records, go into our peerstore) and the closer peers it names with their
    addresses; None when the dial fails."""
    server = await host.net.rpc(host, peer_id, GET_PROVIDERS)
    if server is None:
        return None
    records = server.kad.provider_store.get_providers(key)
    answer = await server.serve(host, key, GET_PROVIDERS)
    providers = []
    for record in records:
        host.peerstore.add_addrs(record.peer_id, record.addrs, SIGNED_RECORD_TTL)
        providers.append(PeerInfo(record.peer_id, record.addrs))
    return providers, answer


async def _sim_get_providers_from_peer_with_closers(
    self: ProviderStore, peer_id: ID, key: bytes
) -> tuple[list[PeerInfo], list[ID]]:
    """``ProviderStore._get_providers_from_peer_with_closers`` (GET_PROVIDERS) in memory."""
    got = await _sim_get_providers(_sim_host(self.host), peer_id, key)
    if got is None:
        return [], []
    providers, answer = got
    closer = [p for p, _ in answer if p != self.local_peer_id]
    _answered(peer_id, closer, providers)
    return providers, closer


def _answered(peer_id: ID, closer: list[ID], providers: list[PeerInfo]) -> None:
    """Count a GET_PROVIDERS answer: the peers it names are a hop further; the record may be in it."""
    op = _op()
    op.learnt(peer_id, closer)
    if op.found_time is None and any(p.peer_id == op.provider for p in providers):
        op.found_time = trio.current_time() - op.start
        op.found_hops = op.rounds[FIND_NODE] + op.rounds[GET_PROVIDERS]
        op.found_path = op.depth.get(peer_id, 0) + 1
        op.found_messages = op.messages()


async def _sim_ask_providers(self: _Collector, peer_id: ID) -> list[ID]:
    """``node.net.dht._Collector._ask_providers`` (GET_PROVIDERS, closer peers' addresses kept) in memory."""
    host = _sim_host(self.host)
    got = await _sim_get_providers(host, peer_id, self.key)
    if got is None:
        return []
    providers, answer = got
    closer = []
    for peer, addrs in answer:
        if peer != host.peer_id and addrs:
            host.peerstore.add_addrs(peer, addrs, DISCOVERED_ADDR_TTL)
            closer.append(peer)
    _answered(peer_id, closer, providers)
    for provider in providers:
        self.add_provider(self.key, provider)
    return closer


async def _sim_send_add_provider(self: ProviderStore, peer_id: ID, key: bytes) -> bool:
    """``ProviderStore._send_add_provider`` (ADD_PROVIDER, fire-and-forget) in memory."""
    host = _sim_host(self.host)
    server = await host.net.rpc(host, peer_id, ADD_PROVIDER)
    if server is None:
        return False
    await server.serve(host, key, ADD_PROVIDER)
    server.kad.provider_store.add_provider(key, PeerInfo(host.peer_id, host.addrs))
    _op().delivered += 1
    return True


async def _sim_ping_peer(self: KBucket, peer_id: ID) -> bool:
    """``KBucket._ping_peer``: the least recently seen peer of a full bucket answers if it is alive."""
    host = _sim_host(self.host)
    _op().pings += 1
    node = host.net.by_id.get(peer_id)
    return node is not None and node.alive


# ---------------------------------------------------------------------------------------------------
# Pure functions made fast (checked against the library's own by check_fast_paths)

_KEYS: dict[ID, bytes] = {}  # peer id -> SHA-256 of it (routing_table.peer_id_to_key)
_SUBNETS: dict[ID, str | None] = {}
_LIBRARY_PEER_ID_TO_KEY = routing_table_module.peer_id_to_key
_LIBRARY_SUBNET_KEY = routing_table_module._subnet_key
_LIBRARY_SORT = kad_utils.sort_peer_ids_by_distance


def register_peer(peer_id: ID) -> None:
    _KEYS[peer_id] = _LIBRARY_PEER_ID_TO_KEY(peer_id)
    _ = peer_id.xor_id  # ID's own cached SHA-256 of the id as an int: the key, read without hashing the ID


def _peer_key(peer_id: ID) -> bytes:
    key = _KEYS.get(peer_id)
    return _LIBRARY_PEER_ID_TO_KEY(peer_id) if key is None else key


def _subnet_key(peer_info: PeerInfo) -> str | None:
    # a simulated node keeps one address for life, so its subnet is a function of its id
    peer_id = peer_info.peer_id
    if peer_id in _SUBNETS:
        return _SUBNETS[peer_id]
    subnet = _LIBRARY_SUBNET_KEY(peer_info)
    _SUBNETS[peer_id] = subnet
    return subnet


def _target_int(key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(key).digest(), "big")


def _sort_peer_ids_by_distance(target_key: bytes, peer_ids: list[ID]) -> list[ID]:
    target = _target_int(target_key)
    return sorted(peer_ids, key=lambda p: p.xor_id ^ target)


class SimRoutingTable(RoutingTable):
    """The library's routing table; two read-only lookups computed from cached keys."""

    def find_local_closest_peers(self, key: bytes, count: int = 20) -> list[ID]:
        target = _target_int(key)
        # dict.keys reads a bucket's OrderedDict without a hash lookup per key (OrderedDict's own iterator
        # makes one); the order differs, which the result does not depend on (no two peers are equally far)
        peers = [p for bucket in self.buckets for p in dict.keys(bucket.peers)]
        return heapq.nsmallest(count, peers, key=lambda p: p.xor_id ^ target)

    def find_bucket(self, peer_id: ID) -> KBucket:
        value = peer_id.xor_id
        for bucket in self.buckets:
            if bucket.min_range <= value < bucket.max_range:
                return bucket
        return self.buckets[0]


class _NoWaitLock:
    """Stands in for a KBucket's ``trio.Lock``.

    The lock guards ``KBucket.add_peer`` across its one await, the ping of the oldest peer; that ping is
    answered here without yielding to the scheduler, so the section runs whole either way. The real lock
    yields on every acquire (one scheduler pass per peer added: 40% of the run time).
    """

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_WAIT_LOCK = _NoWaitLock()
_LIBRARY_KBUCKET_INIT = KBucket.__init__


def _kbucket_init(self: KBucket, *args: Any, **kwargs: Any) -> None:
    _LIBRARY_KBUCKET_INIT(self, *args, **kwargs)
    self._lock = cast(trio.Lock, _NO_WAIT_LOCK)


def install(query_timeout: float) -> None:
    """Swap the library's network I/O and its hot pure functions for the in-memory ones (this process)."""
    global _query_timeout
    _query_timeout = query_timeout
    setattr(provider_store_module, "QUERY_TIMEOUT", query_timeout)  # noqa: B010 - as node/net/libp2p_patches does
    setattr(KBucket, "__init__", _kbucket_init)  # noqa: B010
    setattr(ProviderStore, "_get_providers_from_peer_with_closers", _sim_get_providers_from_peer_with_closers)  # noqa: B010
    setattr(ProviderStore, "_send_add_provider", _sim_send_add_provider)  # noqa: B010
    setattr(_Collector, "_ask_providers", _sim_ask_providers)  # noqa: B010
    setattr(KBucket, "_ping_peer", _sim_ping_peer)  # noqa: B010
    routing_table_module.peer_id_to_key = _peer_key
    setattr(routing_table_module, "_subnet_key", _subnet_key)  # noqa: B010
    setattr(peer_routing_module, "sort_peer_ids_by_distance", _sort_peer_ids_by_distance)  # noqa: B010
    setattr(provider_store_module, "sort_peer_ids_by_distance", _sort_peer_ids_by_distance)  # noqa: B010
    # the library logs a warning for every ADD_PROVIDER that did not get through, and an INFO line per lookup
    logging.getLogger("libp2p").setLevel(logging.ERROR)


def check_fast_paths(net: Network, rng: random.Random, samples: int) -> int:
    """Compare every fast path with the library's own function on random inputs; raise on a difference."""
    checked = 0
    for _ in range(samples):
        node = rng.choice(net.nodes)
        table = node.kad.routing_table
        key = provider_key(CID_PREFIX + rng.randbytes(32))
        peer = rng.choice(net.nodes).peer_id
        peers = [n.peer_id for n in rng.sample(net.nodes, min(50, len(net.nodes)))]
        pairs: list[tuple[str, object, object]] = [
            ("peer_id_to_key", _peer_key(peer), hashlib.sha256(peer.to_bytes()).digest()),
            ("ID.xor_id", peer.xor_id, int.from_bytes(hashlib.sha256(peer.to_bytes()).digest(), "big")),
            (
                "_subnet_key",
                _subnet_key(PeerInfo(peer, net.by_id[peer].host.addrs)),
                _LIBRARY_SUBNET_KEY(PeerInfo(peer, net.by_id[peer].host.addrs)),
            ),
            ("sort_peer_ids_by_distance", _sort_peer_ids_by_distance(key, peers), _LIBRARY_SORT(key, peers)),
            (
                "find_local_closest_peers",
                table.find_local_closest_peers(key, BUCKET_SIZE),
                RoutingTable.find_local_closest_peers(table, key, BUCKET_SIZE),
            ),
            ("find_bucket", table.find_bucket(peer), RoutingTable.find_bucket(table, peer)),
        ]
        for name, fast, library in pairs:
            if fast != library:
                raise RuntimeError(f"fast path {name} differs from the library's")
            checked += 1
    return checked


# ---------------------------------------------------------------------------------------------------
# Phases: build, announce, churn + measure


def _seed_trio_scheduler(seed: str) -> None:
    """trio shuffles its run queue with a module-level Random: seed it so that a run repeats exactly."""
    scheduler_random = cast(random.Random, importlib.import_module("trio._core._run")._r)
    scheduler_random.seed(seed)


def _run(fn: Callable[[], Any], seed: str) -> Any:
    _seed_trio_scheduler(seed)
    return trio.run(fn, clock=MockClock(autojump_threshold=0))


async def join(node: SimNode, bootstrap: SimNode) -> Op:
    """``Dht.bootstrap`` through one peer, minus the dial: connect, add it, look up our own id twice."""
    op = Op(trio.current_time())
    token = _OP.set(op)
    try:
        # connecting runs Identify: each side learns the other's addresses
        node.host.peerstore.add_addrs(bootstrap.peer_id, bootstrap.host.addrs, SIGNED_RECORD_TTL)
        bootstrap.host.peerstore.add_addrs(node.peer_id, node.host.addrs, SIGNED_RECORD_TTL)
        node.host.connected.add(bootstrap.peer_id)
        bootstrap.host.connected.add(node.peer_id)
        if await node.kad.add_peer(bootstrap.peer_id):
            me = node.peer_id.to_bytes()
            with trio.move_on_after(BOOTSTRAP_LOOKUP_TIMEOUT):
                for _ in range(2):
                    await node.kad.peer_routing.find_closest_peers_network(me)
    finally:
        _OP.reset(token)
    return op


async def provide(node: SimNode, root: bytes) -> tuple[Op, bool]:
    """``Dht.provide``; False if it gave up at its PROVIDE_TIMEOUT (what was sent by then stays sent)."""
    op = Op(trio.current_time())
    token = _OP.set(op)
    try:
        node.dht._next_provide = 0.0  # provide_spacing is 0; a forked run's clock starts again at 0
        await node.dht.provide(root)
    except NetworkError:
        return op, False
    finally:
        _OP.reset(token)
    return op, True


async def find(node: SimNode, root: bytes, provider: ID, deadline: float) -> tuple[Op, bool, float]:
    op = Op(trio.current_time(), provider=provider)
    if any(p.peer_id == provider for p in node.kad.provider_store.get_providers(provider_key(root))):
        op.found_time = 0.0  # the finder holds the record: Dht.find_providers has it before any RPC
    token = _OP.set(op)
    try:
        found = await node.dht.find_providers(root, timeout=deadline)
    finally:
        _OP.reset(token)
    return op, any(p.peer_id == provider.to_base58() for p in found), trio.current_time() - op.start


def true_closest(net: Network, key: bytes, live: list[SimNode], k: int = BUCKET_SIZE) -> set[ID]:
    target = _target_int(key)
    return {n.peer_id for n in heapq.nsmallest(k, live, key=lambda n: n.peer_id.xor_id ^ target)}


def closest_live(key: bytes, live: list[SimNode]) -> ID:
    target = _target_int(key)
    return min(live, key=lambda n: n.peer_id.xor_id ^ target).peer_id


def provide_row(
    net: Network, op: Op, completed: bool, root: bytes, live: list[SimNode], seconds: float
) -> dict[str, Any]:
    truth = true_closest(net, provider_key(root), live)
    return {
        "completed": completed,
        "rounds": op.rounds[FIND_NODE],
        "messages": op.messages(),
        "find_node": op.sent[FIND_NODE],
        "add_provider": op.sent[ADD_PROVIDER],
        "delivered": op.delivered,
        "to_vanished": op.to_vanished,
        "no_address": op.no_address,
        "seconds": seconds,
        "true_closest": len(truth & set(op.closest or [])),
    }


@dataclass
class Built:
    roots: list[tuple[bytes, int]]  # (root, index of its provider)
    build_seconds: float
    join_messages: list[int]
    join_rounds: list[int]
    provides: list[dict[str, Any]]
    provide_seconds: float


def build_network(net: Network, args: argparse.Namespace) -> Built:
    n = len(net.nodes)
    rng = random.Random(f"{args.seed}:build:{n}")

    async def build() -> tuple[list[int], list[int]]:
        messages, rounds = [], []
        for i in range(1, n):
            op = await join(net.nodes[i], net.nodes[rng.randrange(i)])
            messages.append(op.messages())
            rounds.append(op.rounds[FIND_NODE])
            if args.progress and i % 1000 == 0:
                print(f"    joined {i:,} of {n:,} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        return messages, rounds

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    join_messages, join_rounds = _run(build, f"{args.seed}:build:{n}")
    build_seconds = time.process_time() - cpu0

    roots = [(CID_PREFIX + rng.randbytes(32), rng.randrange(n)) for _ in range(args.lookups)]

    async def announce() -> list[dict[str, Any]]:
        rows = []
        for root, owner in roots:
            start = trio.current_time()
            op, completed = await provide(net.nodes[owner], root)
            rows.append(provide_row(net, op, completed, root, net.nodes, trio.current_time() - start))
        return rows

    cpu1 = time.process_time()
    provides = _run(announce, f"{args.seed}:announce:{n}")
    return Built(roots, build_seconds, join_messages, join_rounds, provides, time.process_time() - cpu1)


def run_scenario(
    net: Network, built: Built, churn: int, dead: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One churn level on this (forked) copy of the network: nodes vanish, then finds and provides."""
    n = len(net.nodes)
    net.dead = dead
    rng = random.Random(f"{args.seed}:churn:{n}:{churn}")
    net.latency_rng.seed(f"{args.seed}:latency:{n}:{churn}")
    for index in rng.sample(range(n), round(n * churn / 100)):
        net.nodes[index].alive = False
    live = [node for node in net.nodes if node.alive]
    roots = [(root, owner) for root, owner in built.roots if net.nodes[owner].alive]
    t0 = time.process_time()

    async def measure() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        finds = []
        for _ in range(args.lookups):
            root, owner = rng.choice(roots)
            provider = net.nodes[owner]
            finder = rng.choice(live)
            while finder is provider:
                finder = rng.choice(live)
            op, success, seconds = await find(finder, root, provider.peer_id, args.find_timeout)
            truth = true_closest(net, provider_key(root), live)
            result = op.closest or []
            finds.append(
                {
                    "success": success,
                    "deadline_hit": seconds >= args.find_timeout - 1e-6,
                    "hops": op.found_hops if op.found_time is not None else None,
                    "path": op.found_path if op.found_time is not None else None,
                    "find_node_rounds": op.rounds[FIND_NODE],
                    "get_providers_batches": op.rounds[GET_PROVIDERS],
                    "messages_to_record": op.found_messages if op.found_time is not None else None,
                    "messages": op.messages(),
                    "to_vanished": op.to_vanished,
                    "rounds_waiting": op.rounds_waiting,
                    "no_address": op.no_address,
                    "pings": op.pings,
                    "seconds_to_record": op.found_time,
                    "seconds": seconds,
                    "true_closest": len(truth & set(result)) if op.closest is not None else None,
                    "live_in_result": (
                        sum(1 for p in result if net.by_id[p].alive) if op.closest is not None else None
                    ),
                    "closest_found": (closest_live(provider_key(root), live) in result)
                    if op.closest is not None
                    else None,
                }
            )
        provides = []
        for _ in range(args.provides):
            root = CID_PREFIX + rng.randbytes(32)
            start = trio.current_time()
            op, completed = await provide(rng.choice(live), root)
            provides.append(provide_row(net, op, completed, root, live, trio.current_time() - start))
        return finds, provides

    finds, provides = _run(measure, f"{args.seed}:measure:{n}:{churn}")
    return {
        "churn_percent": churn,
        "dead": dead,
        "vanished": n - len(live),
        "finds": finds,
        "provides": provides,
        "cpu_seconds": time.process_time() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _scenario_child(
    conn: Connection, net: Network, built: Built, churn: int, dead: str, args: argparse.Namespace
) -> None:
    try:
        conn.send(run_scenario(net, built, churn, dead, args))
    except BaseException as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        conn.close()


def run_scenarios(net: Network, built: Built, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each (churn, --dead) pair in a forked child: the same starting network, nothing carried over."""
    context = multiprocessing.get_context("fork")
    gc.freeze()  # the children never touch the parent's objects for a collection: less copy-on-write
    results: list[dict[str, Any]] = []
    # with no node gone, every --dead mode is the same run: churn 0 runs once
    pending = [(c, d) for i, d in enumerate(args.dead) for c in args.churn if not (i and c == 0)]
    while pending:
        wave, pending = pending[: max(1, args.jobs)], pending[max(1, args.jobs) :]
        running = []
        for churn, dead in wave:
            reader, writer = context.Pipe(duplex=False)
            proc = context.Process(target=_scenario_child, args=(writer, net, built, churn, dead, args))
            proc.start()
            writer.close()
            running.append((reader, proc))
        for reader, proc in running:
            results.append(reader.recv())
            proc.join()
    gc.unfreeze()
    return _checked(results)


def _checked(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for result in results:
        if "error" in result:
            raise RuntimeError(f"a scenario failed: {result['error']}")
    return results


# ---------------------------------------------------------------------------------------------------
# Statistics and the report


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (the median of an even count is the lower middle value)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def dist(values: Sequence[float | None]) -> dict[str, float]:
    present = [v for v in values if v is not None]
    if not present:
        return {"n": 0}
    return {
        "n": len(present),
        "median": percentile(present, 50),
        "p90": percentile(present, 90),
        "p99": percentile(present, 99),
        "max": max(present),
        "mean": round(sum(present) / len(present), 3),
    }


def histogram(values: Sequence[int | None]) -> dict[str, int]:
    present = [v for v in values if v is not None]
    if not present:
        return {}
    return {str(h): sum(1 for v in present if v == h) for h in range(max(present) + 1)}


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _line(d: dict[str, float], unit: str = "") -> str:
    if not d.get("n"):
        return "n/a"
    return (
        f"median {_fmt(d['median'])}{unit}, p90 {_fmt(d['p90'])}{unit}, p99 {_fmt(d['p99'])}{unit}, "
        f"max {_fmt(d['max'])}{unit} (mean {d['mean']:.2f})"
    )


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    finds: list[dict[str, Any]] = result["finds"]
    provides: list[dict[str, Any]] = result["provides"]
    count = len(finds)

    def col(rows: list[dict[str, Any]], name: str) -> list[Any]:
        return [row[name] for row in rows]

    true_closest = [v for v in col(finds, "true_closest") if v is not None]
    return {
        "churn_percent": result["churn_percent"],
        "dead": result["dead"],
        "vanished": result["vanished"],
        "lookups": count,
        "success_rate": sum(col(finds, "success")) / count if count else None,
        "failed_at_deadline": sum(1 for r in finds if r["deadline_hit"] and not r["success"]),
        "hops": dist(col(finds, "hops")),
        "hops_histogram": histogram(col(finds, "hops")),
        "path_hops": dist(col(finds, "path")),
        "find_node_rounds": dist(col(finds, "find_node_rounds")),
        "find_node_rounds_histogram": histogram(col(finds, "find_node_rounds")),
        "get_providers_batches": dist(col(finds, "get_providers_batches")),
        "messages_to_record": dist(col(finds, "messages_to_record")),
        "messages_per_lookup": dist(col(finds, "messages")),
        "to_vanished_per_lookup": dist(col(finds, "to_vanished")),
        "rounds_waiting_per_lookup": dist(col(finds, "rounds_waiting")),
        "no_address_per_lookup": dist(col(finds, "no_address")),
        "pings_per_lookup": dist(col(finds, "pings")),
        "seconds_to_record": dist(col(finds, "seconds_to_record")),
        "seconds_per_lookup": dist(col(finds, "seconds")),
        "true_closest_all_rate": (
            sum(1 for v in true_closest if v == BUCKET_SIZE) / len(true_closest) if true_closest else None
        ),
        "true_closest": dist(true_closest),
        "live_in_result": dist(col(finds, "live_in_result")),
        "closest_found_rate": (
            sum(1 for v in col(finds, "closest_found") if v) / len(true_closest) if true_closest else None
        ),
        "provides": len(provides),
        "provide_timeout_rate": (
            sum(1 for row in provides if not row["completed"]) / len(provides) if provides else None
        ),
        "provide_rounds": dist(col(provides, "rounds")),
        "messages_per_provide": dist(col(provides, "messages")),
        "provide_find_node": dist(col(provides, "find_node")),
        "provide_delivered": dist(col(provides, "delivered")),
        "provide_to_vanished": dist(col(provides, "to_vanished")),
        "provide_seconds": dist(col(provides, "seconds")),
        "provide_true_closest": dist(col(provides, "true_closest")),
        "cpu_seconds": round(result["cpu_seconds"], 1),
        "peak_rss_mb": round(result["peak_rss_mb"]),
    }


def network_stats(net: Network) -> dict[str, Any]:
    tables = [n.kad.routing_table.size() for n in net.nodes]
    buckets = [len(n.kad.routing_table.buckets) for n in net.nodes]
    stores = [len(n.host.peerstore) for n in net.nodes]
    evicted = [n.host.peerstore.evicted for n in net.nodes]
    return {
        "routing_table_peers": dist(tables) | {"p10": percentile(tables, 10), "min": min(tables)},
        "buckets": dist(buckets),
        "peerstore_peers": dist(stores),
        "nodes_with_peerstore_evictions": sum(1 for e in evicted if e),
        "peerstore_evictions": sum(evicted),
    }


def print_histogram(hist: dict[str, int], indent: str) -> None:
    total = sum(hist.values())
    if not total:
        return
    peak = max(hist.values())
    for hops, count in hist.items():
        bar = "#" * max(1 if count else 0, round(40 * count / peak))
        print(f"{indent}{hops:>3} | {count:>5} {100 * count / total:5.1f}% {bar}")


def print_provides(s: dict[str, Any], indent: str, title: str) -> None:
    timeouts = s["provide_timeout_rate"] or 0.0
    print(
        f"{indent}{title}: {s['provides']};"
        f" {100 * timeouts:.1f}% hit Dht.provide's {PROVIDE_TIMEOUT:.0f} s timeout (NetworkError)"
    )
    print(f"{indent}  FIND_NODE rounds: {_line(s['provide_rounds'])}")
    print(f"{indent}  messages per provide: {_line(s['messages_per_provide'])}")
    print(f"{indent}    of which FIND_NODE: {_line(s['provide_find_node'])}")
    print(f"{indent}  ADD_PROVIDER delivered to live nodes: {_line(s['provide_delivered'])}")
    print(f"{indent}  RPCs to vanished nodes: {_line(s['provide_to_vanished'])}")
    print(f"{indent}  true 20 closest live nodes among the 20 found: {_line(s['provide_true_closest'])}")
    print(f"{indent}  virtual time per provide: {_line(s['provide_seconds'], ' s')}")


def print_scenario(s: dict[str, Any]) -> None:
    ind = "    "
    how = "never answer" if s["dead"] == "timeout" else "refuse dials"
    print(
        f"  churn {s['churn_percent']}%: {s['vanished']:,} nodes vanished (they {how});"
        f" {s['lookups']} lookups"
    )
    rate = s["success_rate"]
    failed = s["lookups"] - round(rate * s["lookups"])
    print(
        f"{ind}success (Dht.find_providers returned the provider): {100 * rate:.1f}%"
        f" ({failed} failed, {s['failed_at_deadline']} of them cut off by the find deadline)"
    )
    print(f"{ind}hops (rounds until the record arrived): {_line(s['hops'])}")
    print_histogram(s["hops_histogram"], ind + "  ")
    print(f"{ind}  of which FIND_NODE rounds (whole lookup): {_line(s['find_node_rounds'])}")
    print(f"{ind}  GET_PROVIDERS batches (whole lookup): {_line(s['get_providers_batches'])}")
    print(f"{ind}path hops (chain of answers to the record holder): {_line(s['path_hops'])}")
    print(f"{ind}messages per lookup until the record: {_line(s['messages_to_record'])}")
    print(f"{ind}messages per lookup, all sent: {_line(s['messages_per_lookup'])}")
    print(f"{ind}  RPCs to vanished nodes: {_line(s['to_vanished_per_lookup'])}")
    waited = "that waited on a vanished node" if s["dead"] == "timeout" else "with a refused dial"
    print(f"{ind}  rounds {waited}: {_line(s['rounds_waiting_per_lookup'])}")
    print(f"{ind}  dials with no known address: {_line(s['no_address_per_lookup'])}")
    print(f"{ind}virtual time to the record: {_line(s['seconds_to_record'], ' s')}")
    print(f"{ind}virtual time per lookup: {_line(s['seconds_per_lookup'], ' s')}")
    if s["true_closest_all_rate"] is not None:
        print(
            f"{ind}FIND_NODE phase (the library's 20 closest):"
            f" held the closest live node in {100 * s['closest_found_rate']:.1f}% of lookups,"
            f" all of the true 20 closest live nodes in {100 * s['true_closest_all_rate']:.1f}%"
        )
        print(f"{ind}  true 20 closest live nodes among them: {_line(s['true_closest'])}")
        print(f"{ind}  live nodes among them (the rest vanished): {_line(s['live_in_result'])}")
    print_provides(s, ind, "provides after churn (new roots, from random live nodes)")
    print(f"{ind}(scenario CPU {s['cpu_seconds']} s, peak RSS {s['peak_rss_mb']} MB)")


def markdown(report: dict[str, Any]) -> str:
    """The docs/performance.md block (markers included) for a run's report."""
    start, end = markers("sim_dht")
    p, info = report["parameters"], report["machine"]
    sizes = " and ".join(f"{n['nodes']:,}" for n in report["networks"])
    intro = (
        "`scripts/sim_dht.py` runs the DHT we run (py-libp2p's `KadDHT`, routing tables and lookups, in our "
        f"`node.net.dht.Dht`) on {sizes} simulated nodes in one process, over an in-memory transport with "
        f"virtual time (an RPC takes {0.5 * p['rtt_s']:g}-{1.5 * p['rtt_s']:g} s; a vanished node never "
        f"answers, and a query gives up after {p['query_timeout_s']:g} s). Each node joins through an "
        f"earlier one; then {'-'.join(str(c) for c in (min(p['churn_percent']), max(p['churn_percent'])))}% "
        f"of the nodes vanish, without any repair, and {p['lookups']:,} lookups of announced roots run "
        f"from random live nodes. Run {report['date'][:10]} on {info['cpus']} cores ({info['cpu_model']}), "
        f"Python {info['python']}, libp2p {info['libp2p']}, {report['wall_seconds']:.0f} s; seed "
        f"{p['seed']}; medians (p90):"
    )
    lines = [start, "", textwrap.fill(intro, WRAP, break_on_hyphens=False), ""]
    lines += [
        "| nodes, churn | lookups that found the provider | hops: rounds (path hops) | messages per lookup "
        "| time to the record |",
        "|---|---|---|---|---|",
    ]
    provide_costs = []
    for net in report["networks"]:
        for s in net["scenarios"]:
            lines.append(
                f"| {net['nodes']:,}, {s['churn_percent']}% | {100 * s['success_rate']:.1f}%"
                f" | {_fmt(s['hops']['median'])} ({_fmt(s['path_hops']['median'])})"
                f" | {_fmt(s['messages_to_record']['median'])} ({_fmt(s['messages_to_record']['p90'])})"
                f" | {s['seconds_to_record']['median']:.2f} s |"
            )
        calm = [s for s in net["scenarios"] if s["churn_percent"] == 0 and s["messages_per_provide"]]
        if calm:
            median = _fmt(calm[0]["messages_per_provide"]["median"])
            provide_costs.append(f"{median} at {net['nodes']:,} nodes")
    if provide_costs:
        provide_costs[0] = provide_costs[0].replace(" at ", " messages at ", 1)
    notes = []
    if provide_costs:
        notes.append(
            "A provide (lookup + 20 ADD_PROVIDER) costs a median of " + " and ".join(provide_costs) + "."
        )
    notes.append(
        '"Rounds" counts every round of parallel queries until the record arrives (the lookup asks '
        "GET_PROVIDERS from its first round; only when that finds nothing does py-libp2p's FIND_NODE-first "
        "lookup run); path hops: the chain of answers that led to the record's holder."
    )
    for goal in report.get("goals", []):
        notes.append(f"Goal {goal['goal']}: {'met' if goal['pass'] else 'NOT met'} ({goal['value']}).")
    lines += ["", textwrap.fill(" ".join(notes), WRAP, break_on_hyphens=False), "", end]
    return "\n".join(lines)


def publish(report: dict[str, Any], args: argparse.Namespace) -> None:
    if args.readme_preview:
        print("\n--- docs/performance.md block (--readme would write this) ---")
        print(markdown(report))
    if args.readme:
        PERFORMANCE.write_text(update_block(PERFORMANCE.read_text(), "sim_dht", markdown(report)))
        print("\ndocs/performance.md updated (<!-- sim_dht --> ... <!-- /sim_dht -->)")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libp2p": version("libp2p"),
        "trio": version("trio"),
    }


def _nodes_list(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 2:
        raise argparse.ArgumentTypeError("at least 2 nodes")
    return value


def _churn(text: str) -> int:
    value = int(text)
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError("a percentage in [0, 100)")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="See the module docstring for the model and its fidelity.",
    )
    parser.add_argument("--nodes", type=_nodes_list, nargs="+", default=[1000, 10_000])
    parser.add_argument("--churn", type=_churn, nargs="+", default=[0, 10, 30, 50], help="percent")
    parser.add_argument("--lookups", type=int, default=1000, help="finds per scenario (and roots announced)")
    parser.add_argument("--provides", type=int, default=200, help="new announcements per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rtt", type=float, default=0.1, help="mean seconds per RPC to a live node")
    parser.add_argument(
        "--dead",
        choices=["timeout", "refused"],
        nargs="+",
        default=["timeout"],
        help="how vanished nodes fail: never answer (the QUERY_TIMEOUT ends the query) or refuse the dial",
    )
    parser.add_argument("--peerstore-cap", type=int, default=PEERSTORE_CAP, help="0: no cap")
    parser.add_argument(
        "--find-timeout", type=float, default=FIND_TIMEOUT, help="what-if: Dht.find_providers' deadline"
    )
    parser.add_argument(
        "--query-timeout",
        type=float,
        default=DHT_QUERY_TIMEOUT,
        help=f"what-if: the DHT query timeout (the node sets {DHT_QUERY_TIMEOUT:g} s; py-libp2p's default is "
        f"{QUERY_TIMEOUT} s)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="scenarios run at once")
    parser.add_argument("--check-samples", type=int, default=500)
    parser.add_argument("--progress", action="store_true", help="report joins on stderr")
    parser.add_argument("--json", type=Path)
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument(
        "--readme", action="store_true", help="rewrite the sim_dht block of docs/performance.md"
    )
    readme.add_argument("--readme-preview", action="store_true", help="print that block instead")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="publish an earlier run's --json")
    args = parser.parse_args()
    if args.lookups < 1:
        parser.error("--lookups must be at least 1")
    if args.from_json:
        try:
            loaded: dict[str, Any] = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--from-json: {exc}")
        day = datetime.datetime.fromtimestamp(args.from_json.stat().st_mtime, datetime.UTC)
        loaded.setdefault("date", day.isoformat(timespec="seconds"))  # files from before "date"
        publish(loaded, args)
        return 0

    wall0 = time.perf_counter()
    install(args.query_timeout)
    info = machine()
    print("sim_dht: py-libp2p's Kademlia DHT in one process over an in-memory transport (no sockets)")
    print(
        f"machine: {info['cpus']} cpu(s) {info['cpu_model']}; {info['platform']}; Python {info['python']};"
        f" libp2p {info['libp2p']}; trio {info['trio']}"
    )
    params = {
        "bucket_size_k": BUCKET_SIZE,
        "alpha": ALPHA,
        "beta": BETA,
        "max_lookup_rounds": MAX_PEER_LOOKUP_ROUNDS,
        "max_buckets": MAXIMUM_BUCKETS,
        "peerstore_cap": args.peerstore_cap,
        "find_deadline_s": args.find_timeout,
        "query_timeout_s": args.query_timeout,
        "find_grace_s": FIND_GRACE,
        "find_limit": FIND_LIMIT,
        "rtt_s": args.rtt,
        "dead": args.dead,
        "seed": args.seed,
        "lookups": args.lookups,
        "provides": args.provides,
        "churn_percent": args.churn,
        "nodes": args.nodes,
    }
    print(
        f"library: k={BUCKET_SIZE}, ALPHA={ALPHA}, BETA={BETA}, at most {MAX_PEER_LOOKUP_ROUNDS} rounds,"
        f" QUERY_TIMEOUT {args.query_timeout:g} s, at most {MAXIMUM_BUCKETS} buckets, peerstore cap"
        f" {args.peerstore_cap or 'none'}; node/net/dht.py: find deadline {args.find_timeout:g} s,"
        f" grace {FIND_GRACE:.0f} s, limit {FIND_LIMIT}"
    )
    print(
        f"model: RPC to a live node {args.rtt} s x U(0.5,1.5) virtual; vanished nodes "
        + " / ".join(
            "never answer (QUERY_TIMEOUT ends the query)" if d == "timeout" else "refuse the dial at once"
            for d in args.dead
        )
        + f"; seed {args.seed}; {args.lookups} lookups and {args.provides} provides per scenario"
    )
    print(
        "hops = rounds of parallel RPCs until the provider record arrived"
        " (GET_PROVIDERS rounds of the walk, + FIND_NODE rounds and GET_PROVIDERS batches of a fallback)"
    )
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report: dict[str, Any] = {"date": date, "machine": info, "parameters": params, "networks": []}
    goal_rows: list[tuple[str, bool, str]] = []
    for n in args.nodes:
        print(f"\n=== {n:,} nodes ===")
        t0 = time.perf_counter()
        net = Network(n, args.seed, args.rtt, args.dead[0], args.peerstore_cap)
        built = build_network(net, args)
        checked = check_fast_paths(net, random.Random(f"{args.seed}:check:{n}"), args.check_samples)
        stats = network_stats(net)
        rt = stats["routing_table_peers"]
        print(
            f"  built: {n:,} nodes joined one by one, each through a random earlier node (Dht.bootstrap:"
            f" add it, look up our own id twice) in {built.build_seconds:.0f} s CPU"
        )
        print(f"    join: FIND_NODE messages {_line(dist(built.join_messages))}")
        print(
            f"    routing table peers: median {_fmt(rt['median'])}, p10 {_fmt(rt['p10'])},"
            f" p90 {_fmt(rt['p90'])}, min {rt['min']}, max {_fmt(rt['max'])};"
            f" buckets median {_fmt(stats['buckets']['median'])}, max {_fmt(stats['buckets']['max'])}"
        )
        print(
            f"    peerstore peers: {_line(stats['peerstore_peers'])};"
            f" {stats['nodes_with_peerstore_evictions']:,} nodes evicted"
            f" {stats['peerstore_evictions']:,} entries at the cap"
        )
        print(f"    fast paths checked against the library's functions: {checked:,} comparisons, identical")
        announce = summarise(
            {
                "churn_percent": 0,
                "dead": "",
                "vanished": 0,
                "finds": [],
                "provides": built.provides,
                "cpu_seconds": built.provide_seconds,
                "peak_rss_mb": 0,
            }
        )
        print_provides(announce, "  ", f"roots announced before churn ({built.provide_seconds:.0f} s CPU)")
        results = run_scenarios(net, built, args)
        scenarios = [summarise(r) for r in results]
        for s in scenarios:
            print_scenario(s)
        total = time.perf_counter() - t0
        print(f"  {n:,} nodes: {total:.0f} s wall in all")
        report["networks"].append(
            {
                "nodes": n,
                "build_cpu_seconds": round(built.build_seconds, 1),
                "join_messages": dist(built.join_messages),
                "join_rounds": dist(built.join_rounds),
                "network": stats,
                "announce": {k: v for k, v in announce.items() if k.startswith("provide")},
                "scenarios": scenarios,
                "wall_seconds": round(total, 1),
            }
        )
        for s in scenarios:
            mode = f" (vanished nodes: {s['dead']})" if len(args.dead) > 1 else ""
            if s["churn_percent"] == 0 and n >= GOAL_HOPS_NODES and s["dead"] == args.dead[0]:
                median = s["hops"].get("median", math.inf)
                goal = f"median hops <= {GOAL_MEDIAN_HOPS} at {n:,} nodes"
                path = s["path_hops"].get("median", math.nan)
                value = f"median {_fmt(median)} rounds (path hops median {_fmt(path)})"
                goal_rows.append((goal, median <= GOAL_MEDIAN_HOPS, value))
            if s["churn_percent"] == GOAL_SUCCESS_CHURN:
                rate = s["success_rate"]
                goal = f">= {100 * GOAL_SUCCESS:.0f}% of lookups succeed at {GOAL_SUCCESS_CHURN}% churn"
                goal += f", {n:,} nodes{mode}"
                goal_rows.append((goal, rate >= GOAL_SUCCESS, f"{100 * rate:.1f}%"))
        del net, built
        gc.collect()

    print("\ngoals:")
    if not goal_rows:
        print("  (not measured by this choice of --nodes / --churn)")
    for text, ok, value in goal_rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}: {value}")
    report["goals"] = [{"goal": t, "pass": ok, "value": v} for t, ok, v in goal_rows]
    wall = time.perf_counter() - wall0
    report["wall_seconds"] = round(wall, 1)
    print(f"\nrun time: {wall:.0f} s wall")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    publish(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
