"""Looking for a fetch's providers (node/net/netget.py): the link's peer hints and the DHT, at once.

A link may name peers that hold its root (peer hints). They are dialed at once, in parallel with the
DHT lookup, and the fetch starts from the first provider that connects: a hinted peer that serves the
blocks never waits for a lookup (which, when no DHT peer knows the root, runs out its whole deadline).
When nothing can be reached the error says why and how long it looked: how many providers were known
(hints and DHT records), or that no DHT peer answered, or that the node is connected to no peer.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost

from node.net.dht import Dht
from node.net.errors import NetworkError
from node.net.exchange import FetchError
from node.net.host import Peer, connect, parse_peer_addr
from node.net.progress import FetchProgress
from protocol.link import ShareLink

log = logging.getLogger(__name__)


class ProviderSearch:
    """Looking for a fetch's providers: the link's peer hints are dialed at once, in parallel with the DHT
    lookup, and each provider the lookup names is dialed as soon as it is known. :attr:`ready` is set
    when the first provider connects (the fetch starts from it: a hinted peer that serves the blocks
    never waits for the lookup) or when every attempt is over; providers that connect later join the
    running fetch (netget's ``_Rounds._more``). ``peers`` is the fetch's own dict of connected providers."""

    def __init__(
        self,
        host: IHost,
        dht: Dht | None,
        link: ShareLink,
        peers: dict[str, None],
        find_timeout: float,
        progress: FetchProgress | None = None,
    ) -> None:
        self.progress = progress  # its providers_known and peers are this search's to write
        self.host = host
        self.dht = dht
        self.link = link
        self.peers = peers
        self.find_timeout = find_timeout
        self.named: set[str] = set()  # the providers the hints and the DHT named (providers_known)
        self.ready = trio.Event()
        self.over = trio.Event()
        self.started = trio.current_time()
        # a DHT lookup with no one to ask would only run out its deadline
        self.lookup = dht is not None and (dht.routing_table_size() > 0 or bool(host.get_connected_peers()))

    async def first(self, nursery: trio.Nursery) -> dict[str, None]:
        """Start the search in ``nursery``; return the providers connected once the first one is (or
        raise, saying why, once every hint and the lookup have failed)."""
        if not self.link.peers and self.dht is not None and not self.lookup:
            raise FetchError(
                "this node is connected to no peer and the link has no peer hints"
                ": give it a bootstrap peer (--bootstrap MULTIADDR, or 'bootstrap' in the repo's config.toml)"
            )
        nursery.start_soon(self.run)
        await self.ready.wait()
        if not self.peers:
            raise self.failure()
        return self.peers

    async def look_again(self) -> None:
        """A new DHT lookup (once the first search is over): the providers it names that connect join."""
        if self.dht is not None:
            async with trio.open_nursery() as nursery:
                await self._look_up(nursery)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for hint in self.link.peers:
                    nursery.start_soon(self._dial, hint, "peer hint")
                if self.lookup:
                    nursery.start_soon(self._look_up, nursery)
        finally:
            self.over.set()
            self.ready.set()

    async def _look_up(self, nursery: trio.Nursery) -> None:
        assert self.dht is not None
        dialed: set[str] = set()

        def dial(providers: list[Peer]) -> None:
            for provider in providers:
                if provider.peer_id not in self.peers and provider.peer_id not in dialed:
                    dialed.add(provider.peer_id)
                    nursery.start_soon(self._dial, provider, "provider")

        dial(self.dht.local_providers(self.link.root))  # at once, not after the lookup
        dial(await self.dht.find_providers(self.link.root, timeout=self.find_timeout))

    async def _dial(self, target: str | Peer, what: str) -> None:
        try:
            self.named.add(target.peer_id if isinstance(target, Peer) else _peer_id(target))
            self._report()
            peer = await connect(self.host, target)
        except NetworkError as exc:
            log.info("%s unreachable: %s", what, exc)
            return
        self.peers[peer] = None
        self._report()
        self.ready.set()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress.providers_known = len(self.named)
            self.progress.peers = len(self.peers)

    def failure(self) -> FetchError:
        """Why no provider could be reached: how many were known, and how long it looked."""
        looked = f"looked for {trio.current_time() - self.started:.1f} s"
        if self.dht is not None and not self.lookup:
            # a DHT lookup would have had no one to ask: said at once, not after its whole deadline
            return FetchError(
                "this node is connected to no peer (the link's peer hints did not answer)"
                ": give it a bootstrap peer (--bootstrap MULTIADDR, or 'bootstrap' in the repo's config.toml)"
            )
        if self.named:
            return FetchError(f"{len(self.named)} provider(s) known, none reachable ({looked})")
        if self.dht is not None and not self.host.get_connected_peers():
            return FetchError(f"no providers found: none of this node's DHT peers answered ({looked})")
        return FetchError(
            "no providers found: no reachable peer has announced this link,"
            f" and it carries no reachable peer address ({looked})"
        )


def _peer_id(addr: str) -> str:
    """The peer id a full multiaddr names (raises NetworkError for anything else)."""
    return parse_peer_addr(addr).peer_id.to_base58()
