"""The control API's endpoints (served by ``node/daemon/api.py``, run by ``node/daemon/main.py``).

- ``GET /v1/status`` -> ``{peer_id, addrs, peers, blocks, stored_bytes, storage_limit, roots,
  roots_announced, last_reprovide, seed}``
- ``GET /v1/peers`` -> ``{peers: [{peer_id, addrs}]}``
- ``GET /v1/address`` -> ``{peer_id, addrs, loopback_only, listen_example}``: the addresses a peer can
  dial (``0.0.0.0`` expanded into this machine's interface addresses; node/net/addresses.py)
- ``GET /v1/ls`` -> ``{pins: [what ls --json prints for each pin], damaged: [one line per damaged pin]}``
- ``POST /v1/rm {roots: [root CID text]}`` -> ``{unpinned: [root CID text]}``
- ``POST /v1/tree {link}`` -> what ``ls LINK --json`` prints (node/daemon/tree_routes.py)
- ``POST /v1/gc {}`` -> ``{blocks_removed, bytes_freed}``: gc in the daemon, where it is safe against the
  daemon's own fetches and serving (``Repo.gc``); ``sealbox gc`` comes here while a daemon runs
- ``POST /v1/add``, ``POST /v1/fetch``, ``GET /v1/transfers``, ``POST /v1/transfers/cancel``, ``GET
  /v1/fetching``: the transfers, in ``node/daemon/transfers.py`` (whose docstring lists them); a fetch's
  ``keep_key`` and ``path`` fields: see node/daemon/tree_routes.py

Errors are ``{"error": "one line"}`` with 400 (bad request), 401 (token), 404 (not found / no such
endpoint), 405, 408, 409 (a cancelled transfer), 413, 502 (network), 503 (all request slots busy), 507
(storage full or over the limit). Bodies are decoded by ``node/daemon/api_json.py``: depth capped,
repeated keys refused. Nothing here logs a link, a key, a path or a name: roots and counts only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.peerstore import PeerStoreError

from node.daemon.api import Routes
from node.daemon.config import Config
from node.daemon.errors import ApiError
from node.daemon.transfers import Transfers
from node.daemon.tree_routes import tree_route
from node.daemon.views import iso_time, listed_pins
from node.net.addresses import address_report, is_unspecified
from node.net.dht import Dht
from node.net.errors import NetworkError
from node.net.exchange import BlockServer
from node.net.host import advertised_addrs, listen_addrs
from node.store.repo import Repo
from protocol.cid import cid_from_text, cid_to_text
from protocol.link import MAX_PEER_LEN, MAX_PEERS

log = logging.getLogger(__name__)


@dataclass
class NodeState:
    """What the daemon remembers for ``status``: announcements made by the reprovider and by adds."""

    announced: set[bytes] = field(default_factory=set)
    last_reprovide: float | None = None  # wall-clock time of the last announcement sent to the DHT

    def on_announced(self, root: bytes, sent: bool) -> None:
        if sent:
            self.announced.add(root)
            self.last_reprovide = time.time()
        else:
            self.announced.discard(root)


class Control:
    """The endpoints, bound to a running node. ``nursery`` owns the announcements adds start."""

    def __init__(
        self,
        repo: Repo,
        host: IHost,
        dht: Dht,
        config: Config,
        state: NodeState,
        nursery: trio.Nursery,
        server: BlockServer,
    ) -> None:
        self.server = server
        self.repo = repo
        self.host = host
        self.dht = dht
        self.config = config
        self.state = state
        self.nursery = nursery
        self.transfers = Transfers(self)

    def routes(self) -> Routes:
        return {
            ("GET", "/v1/status"): self.status,
            ("GET", "/v1/peers"): self.peers,
            ("GET", "/v1/address"): self.address,
            ("GET", "/v1/ls"): self.ls,
            ("POST", "/v1/rm"): self.rm,
            ("POST", "/v1/gc"): self.gc,
            ("POST", "/v1/tree"): tree_route(self.repo, self.host, self.dht),
        } | dict(self.transfers.routes())

    async def status(self, _args: dict[str, Any]) -> dict[str, Any]:
        blocks, stored = await trio.to_thread.run_sync(self.repo.blocks.stats)
        pins = await trio.to_thread.run_sync(self.repo.pins)
        pinned = {p.root for p in pins}
        last = self.state.last_reprovide
        return {
            "peer_id": self.host.get_id().to_base58(),
            "addrs": listen_addrs(self.host),
            "peers": len(self.host.get_connected_peers()),
            "blocks": blocks,
            "stored_bytes": stored,
            "storage_limit": self.config.storage_limit,
            "roots": len(pinned),
            "roots_announced": len(self.state.announced & pinned),
            "last_reprovide": iso_time(last) if last is not None else None,
            "seed": self.config.seed,
            "served_blocks": self.server.served_blocks,
            "served_bytes": self.server.served_bytes,
        }

    async def peers(self, _args: dict[str, Any]) -> dict[str, Any]:
        store = self.host.get_peerstore()
        out = []
        for peer in self.host.get_connected_peers():
            peer_id = peer.to_base58()
            try:
                known = store.addrs(peer)
            except PeerStoreError:
                known = []
            addrs: list[str] = []
            for addr in known:
                try:
                    full = str(addr) if addr.get_peer_id() else f"{addr}/p2p/{peer_id}"
                except ValueError:
                    continue
                if full not in addrs:
                    addrs.append(full)
            out.append({"peer_id": peer_id, "addrs": addrs})
        return {"peers": sorted(out, key=lambda p: str(p["peer_id"]))}

    def peer_hints(self) -> tuple[str, ...]:
        """The addresses this node advertises (0.0.0.0 or :: expanded into this machine's interface
        addresses, non-loopback first; node/net/host.py ``dialable``), for a link's ``pe=``."""
        hints = [
            addr
            for addr in advertised_addrs(self.host)
            if not is_unspecified(addr) and len(addr) <= MAX_PEER_LEN
        ]
        if not hints:
            raise ApiError("this node listens on no address a peer could dial: set listen addresses")
        return tuple(hints[:MAX_PEERS])

    async def announce(self, root: bytes) -> None:
        try:
            sent = await self.dht.provide(root)
        except NetworkError as exc:
            log.warning("announcing root %s: %s", cid_to_text(root), exc)
            sent = False
        self.state.on_announced(root, sent)
        log.info("announced root %s to %s", cid_to_text(root), "the DHT" if sent else "no DHT peer yet")

    async def check_room(self) -> None:
        limit = self.config.storage_limit
        if limit is None:
            return
        _blocks, stored = await trio.to_thread.run_sync(self.repo.blocks.stats)
        if stored >= limit:
            raise ApiError(
                f"the repo holds {stored} bytes, at its storage limit ({limit}): 'sealbox rm' and 'gc' first",
                507,
            )

    async def address(self, _args: dict[str, Any]) -> dict[str, Any]:
        return address_report(self.host.get_id().to_base58(), listen_addrs(self.host))

    async def ls(self, _args: dict[str, Any]) -> dict[str, Any]:
        damaged: list[str] = []
        pins = await trio.to_thread.run_sync(partial(listed_pins, self.repo, damaged.append))
        return {"pins": pins, "damaged": damaged}

    async def rm(self, args: dict[str, Any]) -> dict[str, Any]:
        roots = args.get("roots")
        if not isinstance(roots, list) or not roots or not all(isinstance(r, str) for r in roots):
            raise ApiError("roots must be a non-empty list of root CIDs")
        parsed = [cid_from_text(r.strip()) for r in roots]

        def unpin() -> list[str]:
            with self.repo.lock():
                return [cid_to_text(self.repo.unpin(root).root) for root in parsed]

        removed = await trio.to_thread.run_sync(unpin)
        for root in parsed:
            self.state.announced.discard(root)
        log.info("unpinned %d root(s)", len(removed))
        return {"unpinned": removed}

    async def gc(self, _args: dict[str, Any]) -> dict[str, Any]:
        """Collect garbage in a worker thread: it waits for adds and pins to end (the repo lock), never
        for fetches, which their leases and pack locks protect."""
        removed, freed = await trio.to_thread.run_sync(self.repo.gc)
        log.info("gc: removed %d unpinned blocks, freed %d bytes", removed, freed)
        return {"blocks_removed": removed, "bytes_freed": freed}
