"""What a node tells others about itself: a node listening on 0.0.0.0 advertises its interface
addresses (node/net/host.py ``dialable``), in Identify, peer routing and DHT provider records."""

from __future__ import annotations

import functools
from pathlib import Path

import trio

from node.files.add import add_path
from node.files.get import get_link
from node.net.addresses import expand, interface_ips
from node.net.host import advertised_addrs, listen_addrs, new_identity, open_host
from node.net.netget import fetch_link
from tests.net.test_netget import SwarmNode, make_tree, run_peer, same_tree

ANY_IP4 = "/ip4/0.0.0.0/tcp/0"


def port_of(addr: str) -> str:
    return addr.split("/")[4]


async def test_a_host_on_0000_advertises_its_interface_addresses_and_its_real_port() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity(), [ANY_IP4]) as host:
            listening = listen_addrs(host)
            advertised = advertised_addrs(host)
    assert len(listening) == 1 and listening[0].startswith("/ip4/0.0.0.0/tcp/")  # what status shows
    port = port_of(listening[0])
    assert port != "0"
    assert advertised and all("/0.0.0.0/" not in a for a in advertised)
    assert all(port_of(a) == port and a.endswith(f"/p2p/{host.get_id()}") for a in advertised)
    assert f"/ip4/127.0.0.1/tcp/{port}/p2p/{host.get_id()}" in advertised  # loopback, last
    assert advertised == expand(listening, interface_ips())


async def test_a_host_on_a_given_address_advertises_just_that() -> None:
    async with open_host(new_identity()) as host:
        assert advertised_addrs(host) == listen_addrs(host)


async def test_a_node_on_0000_is_found_and_fetched_from_through_the_dht_by_a_peer_never_told_its_address(
    tmp_path: Path,
) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            stops = [trio.Event() for _ in range(3)]
            start = functools.partial(nursery.start, run_peer)
            a: SwarmNode = await start(tmp_path / "a", stops[0], [ANY_IP4])
            b: SwarmNode = await start(tmp_path / "b", stops[1])
            c: SwarmNode = await start(tmp_path / "c", stops[2])
            a_id = a.dht.host.get_id().to_base58()
            a_loopback = a.addr.replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/")
            assert await b.dht.bootstrap([a_loopback]) == 1
            assert await c.dht.bootstrap([b.addr]) == 1  # C is told B's address only
            # B joined A's DHT once A's Identify arrived: what it told B of A has no 0.0.0.0 in it
            known = [str(addr) for addr in b.dht.host.get_peerstore().addrs(a.dht.host.get_id())]
            assert a_loopback in known
            assert all("/0.0.0.0/" not in addr for addr in known)
            source = make_tree(tmp_path)
            link = add_path(a.repo, source, chunk_size=16 * 1024).link
            assert await a.dht.provide(link.root)
            found = await c.dht.find_providers(link.root)
            assert [p.peer_id for p in found] == [a_id]
            assert found[0].addrs and all("/0.0.0.0/" not in addr for addr in found[0].addrs)
            assert a_loopback in found[0].addrs
            report = await fetch_link(c.dht.host, c.dht, c.repo, link)
            assert report.pinned and report.stats is not None
            assert set(report.stats.received_from) == {a_id}
            assert same_tree(source, get_link(c.repo, link, tmp_path / "out").path)
            for stop in stops:
                stop.set()
