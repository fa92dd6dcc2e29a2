"""Getting a link over the network: real hosts and DHT nodes on 127.0.0.1 (port 0), in this process."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from node.files.add import add_path
from node.files.get import get_link
from node.net.dht import Dht, open_dht
from node.net.exchange import BlockServer, FetchError
from node.net.host import DEFAULT_LISTEN, listen_addrs, new_identity, open_host
from node.net.netget import fetch_link, get_from_network
from node.net.progress import FetchProgress
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.errors import ManifestError
from protocol.link import ShareLink
from protocol.seal import new_key
from protocol.walk import MAX_DEPTH
from tests.files.test_tree_limits import chain, duplicated_number, stored_tree

if TYPE_CHECKING:
    # trio-typing (a py-libp2p dependency) installs trio-stubs, which mypy reads instead of trio's own
    from trio_typing import TaskStatus


@dataclass
class SwarmNode:
    dht: Dht
    repo: Repo
    server: BlockServer
    stop: trio.Event
    stopped: trio.Event

    @property
    def addr(self) -> str:
        return listen_addrs(self.dht.host)[0]


async def run_peer(
    path: Path,
    stop: trio.Event,
    listen: Sequence[str] = DEFAULT_LISTEN,
    *,
    task_status: TaskStatus[SwarmNode],
) -> None:
    repo = Repo.open(path)
    stopped = trio.Event()
    try:
        async with open_host(new_identity(), listen) as host, open_dht(host) as dht:
            server = BlockServer(repo.blocks)
            server.install(host)
            task_status.started(SwarmNode(dht, repo, server, stop, stopped))
            await stop.wait()
    finally:
        repo.close()
        stopped.set()


@asynccontextmanager
async def swarm(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[SwarmNode]]]:
    """A factory of full nodes (host, DHT, block server, repo), each in a task of its own; the first is
    everyone's bootstrap peer."""
    peers: list[SwarmNode] = []
    async with trio.open_nursery() as nursery:

        async def new_peer() -> SwarmNode:
            peer: SwarmNode = await nursery.start(run_peer, tmp_path / f"node-{len(peers)}", trio.Event())
            if peers:
                assert await peer.dht.bootstrap([peers[0].addr]) == 1
            peers.append(peer)
            return peer

        try:
            yield new_peer
        finally:
            for peer in peers:
                peer.stop.set()


def make_tree(root: Path) -> Path:
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "deep" / "big.bin").write_bytes(os.urandom(700_000))
    (root / "docs" / "deep" / "empty").write_bytes(b"")
    (root / "docs" / "run.sh").write_text("#!/bin/sh\n")
    (root / "docs" / "run.sh").chmod(0o755)
    return root / "docs"


def same_tree(a: Path, b: Path) -> bool:
    def listing(p: Path) -> dict[str, tuple[bytes, bool]]:
        return {
            str(f.relative_to(p)): (f.read_bytes() if f.is_file() else b"/", bool(f.stat().st_mode & 0o100))
            for f in sorted(p.rglob("*"))
        }

    return listing(a) == listing(b)


async def test_a_folder_added_on_one_node_is_got_on_another_through_the_dht_only(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with swarm(tmp_path) as new_peer:
            nodes = [await new_peer() for _ in range(5)]
            source = make_tree(tmp_path)
            link = add_path(nodes[1].repo, source, chunk_size=16 * 1024).link
            assert await nodes[1].dht.provide(link.root)
            stored: list[int] = []
            report = await fetch_link(
                nodes[4].dht.host, nodes[4].dht, nodes[4].repo, link, on_bytes=stored.append
            )
            assert report.pinned and report.providers >= 1 and report.rounds >= 3
            assert report.stats is not None and report.stats.blocks > 40
            assert len(stored) == report.stats.blocks and sum(stored) == report.stats.bytes
            out = get_link(nodes[4].repo, link, tmp_path / "out")
            assert same_tree(source, out.path)
            # the fetcher is now a seed: with the uploader gone, a third node still gets the folder
            nodes[1].stop.set()
            await nodes[1].stopped.wait()
            again = await fetch_link(nodes[3].dht.host, nodes[3].dht, nodes[3].repo, link)
            assert again.stats is not None
            assert set(again.stats.received_from) == {nodes[4].dht.host.get_id().to_base58()}
            assert same_tree(source, get_link(nodes[3].repo, link, tmp_path / "out3").path)


async def test_a_link_nobody_provides_fails_clearly_in_bounded_time(tmp_path: Path) -> None:
    async with swarm(tmp_path) as new_peer:
        nodes = [await new_peer() for _ in range(3)]
        link = ShareLink(cid_of(b"never added"), new_key())
        # the default lookup deadline is 30 s: only find_timeout ends the fetch before this bound
        with trio.fail_after(25), pytest.raises(FetchError, match="no providers found"):
            await fetch_link(nodes[2].dht.host, nodes[2].dht, nodes[2].repo, link, find_timeout=5)


async def test_a_node_with_no_peer_and_a_link_without_hints_says_so_at_once(tmp_path: Path) -> None:
    async with swarm(tmp_path) as new_peer:
        lone = await new_peer()  # the first node: it has no bootstrap peer
        link = ShareLink(cid_of(b"never added"), new_key())
        with trio.fail_after(5), pytest.raises(FetchError, match="connected to no peer and the link has no"):
            await fetch_link(lone.dht.host, lone.dht, lone.repo, link)  # default: a 30 s lookup


async def test_peer_hints_in_the_link_connect_nodes_that_share_no_bootstrap(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with swarm(tmp_path / "a") as first, swarm(tmp_path / "b") as second:
            uploader = await first()
            source = tmp_path / "hello.txt"
            source.write_bytes(os.urandom(100_000))
            added = add_path(uploader.repo, source).link
            link = ShareLink(added.root, added.key, peers=(uploader.addr,))
            fetcher = await second()  # a network of its own: only the hint joins them
            await fetch_link(fetcher.dht.host, None, fetcher.repo, link)
            out = get_link(fetcher.repo, link, tmp_path / "copy.txt")
            assert out.path.read_bytes() == source.read_bytes()


async def test_a_temporary_node_gets_a_link_with_only_a_bootstrap_address(tmp_path: Path) -> None:
    """What `sealbox get` does without a daemon: a temporary node, one bootstrap address, the link."""
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(300_000))
    with trio.fail_after(60):
        async with swarm(tmp_path / "up") as new_peer:
            node = await new_peer()
            link = add_path(node.repo, source).link
            await node.dht.provide(link.root)  # no other DHT node yet: it can only keep the record itself
            temp = Repo.open(tmp_path / "temp")
            try:
                # get_from_network runs its own event loop, as the CLI does: give it a thread
                fetch = functools.partial(get_from_network, temp, link, bootstrap=[node.addr])
                report = await trio.to_thread.run_sync(fetch)
                assert report.pinned
                out = get_link(temp, link, tmp_path / "got.bin")
            finally:
                temp.close()
    assert out.path.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("defect", ["a node number used twice", "a node at depth 256"])
async def test_a_fetch_refuses_a_tree_that_breaks_the_formats_rules(tmp_path: Path, defect: str) -> None:
    """The fetch's walk (node/store/tree_walk.py) holds the same rules as the local get."""
    with trio.fail_after(30):
        async with swarm(tmp_path / "a") as first, swarm(tmp_path / "b") as second:
            uploader = await first()
            if defect == "a node at depth 256":
                link = stored_tree(uploader.repo, chain(MAX_DEPTH + 1))
                match = "nested too deeply"
            else:
                link = duplicated_number(uploader.repo)
                match = "reuses a node number"
            fetcher = await second()
            hinted = ShareLink(link.root, link.key, peers=(uploader.addr,))
            with pytest.raises(ManifestError, match=match):
                await fetch_link(fetcher.dht.host, None, fetcher.repo, hinted)
            assert fetcher.repo.pins() == []


async def test_a_block_gc_removes_before_the_fetch_leases_it_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fetcher holds the whole tree unpinned (an earlier ``get --no-seed``). A real gc runs in the
    window between the walk finding the first block held and that block's lease reaching disk: it
    removes every block. The pin finds it out, and one more walk fetches them all again."""
    import node.net.netget as netget
    from node.store.tree_walk import Frontier

    source = make_tree(tmp_path)
    with trio.fail_after(60):
        async with swarm(tmp_path) as new_peer:
            uploader, fetcher = await new_peer(), await new_peer()
            link = add_path(uploader.repo, source, chunk_size=16 * 1024).link
            link = ShareLink(link.root, link.key, peers=(uploader.addr,))
            await fetch_link(fetcher.dht.host, None, fetcher.repo, link, pin=False)
            freed: list[tuple[int, int]] = []

            def gc_first(lease: Callable[[list[bytes]], None]) -> Callable[[list[bytes]], None]:
                def add(cids: list[bytes]) -> None:
                    if not freed:
                        freed.append(fetcher.repo.gc())  # the lease holds nothing on disk yet
                    lease(cids)

                return add

            monkeypatch.setattr(
                netget,
                "Frontier",
                lambda blocks, link, lease, selection: Frontier(blocks, link, gc_first(lease), selection),
            )
            report = await fetch_link(fetcher.dht.host, None, fetcher.repo, link)
            assert freed and freed[0][0] > 40  # every block went
            # the blocks the first walk still saw came again, and the one it had found held just before
            assert report.pinned and report.stats is not None and report.stats.blocks == freed[0][0]
            assert same_tree(source, get_link(fetcher.repo, link, tmp_path / "out").path)


async def run_block_host(path: Path, *, task_status: TaskStatus[tuple[str, Repo]]) -> None:
    """A host that serves blocks and speaks no DHT at all (a lookup through it gets no answer)."""
    repo = Repo.open(path)
    try:
        async with open_host(new_identity()) as host:
            BlockServer(repo.blocks).install(host)
            task_status.started((listen_addrs(host)[0], repo))
            await trio.sleep_forever()
    finally:
        repo.close()


async def test_a_hinted_peer_serves_the_fetch_without_waiting_for_the_dht_lookup(tmp_path: Path) -> None:
    """The link names a peer that holds the tree and answers no DHT request; the fetcher's DHT knows
    nothing of the root, so its lookup would run out its whole deadline. The fetch starts from the hint
    at once: with a 600 s lookup deadline, waiting for it would trip the bound."""
    source = tmp_path / "two-blocks.bin"
    source.write_bytes(os.urandom(300_000))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, swarm(tmp_path / "dht") as new_peer:
            addr, holder = await nursery.start(run_block_host, tmp_path / "holder")
            added = add_path(holder, source).link
            link = ShareLink(added.root, added.key, peers=(addr,))
            fetcher = [await new_peer() for _ in range(2)][1]  # a DHT that knows nothing of the root
            progress = FetchProgress()
            report = await fetch_link(
                fetcher.dht.host, fetcher.dht, fetcher.repo, link, find_timeout=600, progress=progress
            )
            assert report.pinned and report.providers == 1
            assert (progress.phase, progress.providers_known, progress.peers) == ("done", 1, 1)
            assert report.stats is not None and set(report.stats.received_from) == {addr.split("/")[-1]}
            assert get_link(fetcher.repo, link, tmp_path / "out").path.read_bytes() == source.read_bytes()
            nursery.cancel_scope.cancel()


async def test_every_provider_offline_is_said_as_soon_as_their_dials_fail(tmp_path: Path) -> None:
    """The DHT names the provider, which is gone: the fetch says how many were known and how long it
    looked, without running out a 600 s lookup deadline."""
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(1000))
    async with swarm(tmp_path) as new_peer:
        nodes = [await new_peer() for _ in range(3)]
        link = add_path(nodes[1].repo, source).link
        assert await nodes[1].dht.provide(link.root)
        nodes[1].stop.set()
        await nodes[1].stopped.wait()
        with trio.fail_after(60), pytest.raises(FetchError, match=r"1 provider\(s\) known, none reachable"):
            await fetch_link(nodes[2].dht.host, nodes[2].dht, nodes[2].repo, link, find_timeout=600)


async def test_a_lookup_whose_dht_peers_all_went_away_ends_without_waiting_its_deadline(
    tmp_path: Path,
) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(1000))
    async with swarm(tmp_path) as new_peer:
        first, fetcher = await new_peer(), await new_peer()
        link = add_path(first.repo, source).link  # never announced: the fetcher has no record of it
        first.stop.set()
        await first.stopped.wait()
        with (
            trio.fail_after(60),
            pytest.raises(FetchError, match=r"none of this node's DHT peers answered \(looked for"),
        ):
            await fetch_link(fetcher.dht.host, fetcher.dht, fetcher.repo, link, find_timeout=600)
