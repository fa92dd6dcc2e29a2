"""The control API's endpoints (served by ``node/daemon/api.py``, run by ``node/daemon/main.py``).

- ``GET /v1/status`` -> ``{peer_id, addrs, peers, blocks, stored_bytes, storage_limit, roots,
  roots_announced, last_reprovide, seed}``
- ``GET /v1/peers`` -> ``{peers: [{peer_id, addrs}]}``
- ``POST /v1/add {path, entry_name?, name?, with_size?, peer_hints?}`` or ``{paths, as_folder, ...}`` (one
  folder of them all) -> what ``add --json`` prints, plus ``warnings``
- ``GET /v1/ls`` -> ``{pins: [what ls --json prints for each pin], damaged: [one line per damaged pin]}``
- ``POST /v1/rm {roots: [root CID text]}`` -> ``{unpinned: [root CID text]}``
- ``POST /v1/fetch {link, seed?}`` -> ``{root, providers, rounds, blocks, bytes, pinned}``; with
  ``seed: false`` the root is neither announced nor pinned (``get --no-seed``)
- ``GET /v1/fetching`` -> ``{fetches: [{root, bytes}]}``: the fetches running now (``get``'s progress bar)
- ``POST /v1/gc {}`` -> ``{blocks_removed, bytes_freed}``: gc in the daemon, where it is safe against the
  daemon's own fetches and serving (``Repo.gc``); ``sealbox gc`` comes here while a daemon runs

Errors are ``{"error": "one line"}`` with 400 (bad request), 401 (token), 404 (not found / no such
endpoint), 405, 408, 413, 502 (network), 503 (all request slots busy), 507 (storage full or over the
limit). Bodies are decoded by ``node/daemon/api_json.py``: depth capped, repeated keys refused. Nothing here
logs a link, a key, a path or a name: roots and counts only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.peerstore import PeerStoreError

from node.daemon.api import Routes
from node.daemon.config import Config
from node.daemon.errors import ApiError
from node.daemon.views import add_json, iso_time, pin_json
from node.files.add import MAX_ADD_PATHS, add_paths
from node.net import netget
from node.net.dht import Dht
from node.net.errors import NetworkError
from node.net.exchange import BlockServer, FetchStats
from node.net.host import listen_addrs
from node.store.repo import Repo
from protocol.cid import cid_from_text, cid_to_text
from protocol.link import MAX_PEER_LEN, MAX_PEERS, parse_link

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
        self.fetching: dict[bytes, list[int]] = {}  # root -> [bytes stored so far, fetches running]

    def routes(self) -> Routes:
        return {
            ("GET", "/v1/status"): self.status,
            ("GET", "/v1/peers"): self.peers,
            ("POST", "/v1/add"): self.add,
            ("GET", "/v1/ls"): self.ls,
            ("POST", "/v1/rm"): self.rm,
            ("POST", "/v1/fetch"): self.fetch,
            ("GET", "/v1/fetching"): self.fetches,
            ("POST", "/v1/gc"): self.gc,
        }

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

    async def add(self, args: dict[str, Any]) -> dict[str, Any]:
        as_folder = _text(args, "as_folder", optional=True)
        paths = _add_paths(args, several=as_folder is not None)
        entry_name = _text(args, "entry_name", optional=True)
        name = _text(args, "name", optional=True)
        with_size = _flag(args, "with_size")
        hints = self.peer_hints() if _flag(args, "peer_hints") else ()
        await self._check_room()
        warnings: list[str] = []
        [result] = await trio.to_thread.run_sync(
            partial(
                add_paths,
                self.repo,
                paths,
                as_folder=as_folder,
                entry_name=entry_name,
                display_name=name,
                with_size=with_size,
                warn=warnings.append,
            )
        )
        link = dataclasses.replace(result.link, peers=hints) if hints else result.link
        log.info("added root %s (%d new blocks)", cid_to_text(result.pin.root), result.new_blocks)
        if self.config.seed:
            self.nursery.start_soon(self._announce, result.pin.root)
        return add_json(result, str(link)) | {"warnings": warnings}

    def peer_hints(self) -> tuple[str, ...]:
        """This node's listen addresses others could dial (not 0.0.0.0 or ::), for a link's ``pe=``."""
        hints = []
        for addr in listen_addrs(self.host):
            try:
                ma = multiaddr.Multiaddr(addr)
                ip = ma.value_for_protocol(ma.protocols()[0].name)
                if ipaddress.ip_address(ip).is_unspecified:
                    continue
            except ValueError:
                continue
            if len(addr) <= MAX_PEER_LEN:
                hints.append(addr)
        if not hints:
            raise ApiError("this node listens on no address a peer could dial: set listen addresses")
        return tuple(hints[:MAX_PEERS])

    async def _announce(self, root: bytes) -> None:
        try:
            sent = await self.dht.provide(root)
        except NetworkError as exc:
            log.warning("announcing root %s: %s", cid_to_text(root), exc)
            sent = False
        self.state.on_announced(root, sent)
        log.info("announced root %s to %s", cid_to_text(root), "the DHT" if sent else "no DHT peer yet")

    async def _check_room(self) -> None:
        limit = self.config.storage_limit
        if limit is None:
            return
        _blocks, stored = await trio.to_thread.run_sync(self.repo.blocks.stats)
        if stored >= limit:
            raise ApiError(
                f"the repo holds {stored} bytes, at its storage limit ({limit}): 'sealbox rm' and 'gc' first",
                507,
            )

    async def ls(self, _args: dict[str, Any]) -> dict[str, Any]:
        damaged: list[str] = []
        pins = await trio.to_thread.run_sync(partial(self.repo.pins, on_damaged=damaged.append))
        return {"pins": [pin_json(p) for p in pins], "damaged": damaged}

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

    async def fetch(self, args: dict[str, Any]) -> dict[str, Any]:
        link = parse_link(_text(args, "link"))
        wanted = args.get("seed", True)
        if not isinstance(wanted, bool):
            raise ApiError("seed must be true or false")
        seed = self.config.seed and wanted
        await self._check_room()
        progress = self.fetching.setdefault(link.root, [0, 0])
        progress[1] += 1

        def stored(size: int) -> None:
            progress[0] += size

        try:
            report = await netget.fetch_link(
                self.host, self.dht, self.repo, link, announce=seed, pin=wanted, on_bytes=stored
            )
        finally:
            progress[1] -= 1
            if not progress[1]:
                del self.fetching[link.root]
        if seed and report.pinned:
            self.nursery.start_soon(self._announce, link.root)  # fetch_link announced it at the start
        stats = report.stats or FetchStats()  # none when every block was held already
        log.info(
            "fetched root %s from %d provider(s): %d blocks, %d not-found answers, %d haves",
            cid_to_text(link.root),
            report.providers,
            stats.blocks,
            stats.not_found,
            stats.haves,
        )
        return {
            "root": cid_to_text(report.root),
            "providers": report.providers,
            "rounds": report.rounds,
            "blocks": stats.blocks,
            "bytes": stats.bytes,
            "pinned": report.pinned,
        }

    async def gc(self, _args: dict[str, Any]) -> dict[str, Any]:
        """Collect garbage in a worker thread: it waits for adds and pins to end (the repo lock), never
        for fetches, which their leases and pack locks protect."""
        removed, freed = await trio.to_thread.run_sync(self.repo.gc)
        log.info("gc: removed %d unpinned blocks, freed %d bytes", removed, freed)
        return {"blocks_removed": removed, "bytes_freed": freed}

    async def fetches(self, _args: dict[str, Any]) -> dict[str, Any]:
        """The fetches running now: each root and the bytes stored for it so far (for progress bars)."""
        return {
            "fetches": [
                {"root": cid_to_text(root), "bytes": done} for root, (done, _) in self.fetching.items()
            ]
        }


def _text(args: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"{name} must be a non-empty string")
    return value


def _add_paths(args: dict[str, Any], *, several: bool) -> list[Path]:
    """An add's ``path``, or with ``as_folder`` its ``paths`` (1 to MAX_ADD_PATHS), each absolute."""
    paths = args.get("paths") if several else [_text(args, "path")]
    if not isinstance(paths, list) or not 0 < len(paths) <= MAX_ADD_PATHS:
        raise ApiError(f"paths must be a list of 1 to {MAX_ADD_PATHS} paths")
    if not all(isinstance(p, str) and Path(p).is_absolute() for p in paths):
        raise ApiError("path must be absolute (the daemon does not share the client's directory)")
    return [Path(p) for p in paths]


def _flag(args: dict[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise ApiError(f"{name} must be true or false")
    return value
