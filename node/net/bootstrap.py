"""Staying joined: a node that lost its bootstrap peers dials them again, with backoff, until they answer.

A daemon joins the DHT through its bootstrap peers once at start (``Dht.bootstrap``). If one of them
restarts, or was not up yet, or the network went away for a while, the node would stay cut off for
good ("bootstrap: reached 0 of 1 peer(s)", never recovered). :func:`keep_bootstrap` watches the
connections to those peers (a swarm notifee wakes it when one closes; a check every
``BOOTSTRAP_CHECK`` seconds catches what the notifee cannot see) and dials the missing ones after
1 s, doubling up to 5 min, each pause jittered so that many nodes that lost the same peer do not all
dial it at the same instant. It logs each reconnection ("bootstrap: reconnected to 1 of 1 peer(s)").
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import NoReturn

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from node.net.dht import Dht
from node.net.host import parse_peer_addr

log = logging.getLogger(__name__)

REDIAL_FIRST = 1.0  # seconds after a bootstrap peer is lost before it is dialed again, doubling to
REDIAL_MAX = 300.0
REDIAL_JITTER = 0.2  # each pause is drawn within +-20% of its nominal length
BOOTSTRAP_CHECK = 60.0  # seconds between checks while every bootstrap peer is connected


class _Watch(INotifee):
    """Sets :attr:`lost` when a connection to one of ``peers`` closes."""

    def __init__(self, peers: set[ID]) -> None:
        self.peers = peers
        self.lost = trio.Event()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        if getattr(conn.muxed_conn, "peer_id", None) in self.peers:
            self.lost.set()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


async def keep_bootstrap(
    dht: Dht,
    addrs: Sequence[str],
    *,
    first: float = REDIAL_FIRST,
    most: float = REDIAL_MAX,
    check: float = BOOTSTRAP_CHECK,
) -> NoReturn:
    """Keep ``dht``'s node connected to the bootstrap peers ``addrs`` (full multiaddrs) for ever."""
    peers = {parse_peer_addr(addr).peer_id: addr for addr in addrs}
    network = dht.host.get_network()
    watch = _Watch(set(peers))
    network.register_notifee(watch)
    try:
        pause = first
        while True:
            connected = set(dht.host.get_connected_peers())
            missing = [addr for peer, addr in peers.items() if peer not in connected]
            if not missing:
                pause = first
                watch.lost = trio.Event()
                with trio.move_on_after(check):
                    await watch.lost.wait()
                continue
            # jitter, not secrecy: a plain generator is right here
            await trio.sleep(pause * random.uniform(1 - REDIAL_JITTER, 1 + REDIAL_JITTER))  # noqa: S311
            await dht.bootstrap(missing)  # dials, adds them to the routing table, makes us known
            connected = set(dht.host.get_connected_peers())
            back = sum(1 for peer, addr in peers.items() if addr in missing and peer in connected)
            if back:
                log.info("bootstrap: reconnected to %d of %d peer(s)", back, len(missing))
            if back < len(missing):
                pause = min(pause * 2, most)
                log.info(
                    "bootstrap: %d peer(s) unreachable; next try in about %.0f s", len(missing) - back, pause
                )
            else:
                pause = first
    finally:
        network.remove_notifee(watch)
