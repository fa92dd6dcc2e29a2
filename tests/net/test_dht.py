"""Content routing on real DHT nodes: hosts on 127.0.0.1, port 0, in this process, bootstrapped in a star.

ADD_PROVIDER is fire-and-forget (as in kubo), so a test that looks into another node's store first waits
until every task in the process is idle (``settle``): by then the message has been read and stored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import _encode_key
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from node.net.dht import (
    PROVIDE_SPACING,
    RECORD_LIFETIME,
    REPROVIDE_INTERVAL,
    Dht,
    _Collector,
    open_dht,
    provider_key,
    serve_reprovider,
)
from node.net.host import connect, listen_addrs, new_identity, open_host, set_handler
from protocol.cid import CID_PREFIX, cid_of, cid_to_text
from protocol.errors import CidError

if TYPE_CHECKING:
    from trio_typing import TaskStatus


def new_root() -> bytes:
    return cid_of(os.urandom(32))


def peer_id(dht: Dht) -> str:
    return dht.host.get_id().to_base58()


def stored_providers(dht: Dht, root: bytes) -> set[str]:
    """The providers of ``root`` in this node's own provider store."""
    return {info.peer_id.to_base58() for info in dht.kad.provider_store.get_providers(provider_key(root))}


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def run_node(
    stop: trio.Event, spacing: float, *, task_status: TaskStatus[Dht] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_host(new_identity()) as host, open_dht(host, provide_spacing=spacing) as node:
        task_status.started(node)
        await stop.wait()


@asynccontextmanager
async def network(spacing: float = PROVIDE_SPACING) -> AsyncIterator[Callable[[], Awaitable[Dht]]]:
    """A factory of DHT nodes, each in its own task; on exit all of them shut down at once."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def new_node() -> Dht:
            node: Dht = await nursery.start(run_node, stop, spacing)
            return node

        try:
            yield new_node
        finally:
            stop.set()


async def link_star(nodes: list[Dht]) -> None:
    """Nodes 1..n-1 bootstrap from node 0."""
    for node in nodes[1:]:
        assert await node.bootstrap(listen_addrs(nodes[0].host)) == 1


@asynccontextmanager
async def star(n: int, spacing: float = PROVIDE_SPACING) -> AsyncIterator[list[Dht]]:
    async with network(spacing) as new_node:
        nodes = [await new_node() for _ in range(n)]
        await link_star(nodes)
        yield nodes


def test_the_dht_key_of_a_root_is_its_multihash() -> None:
    root = new_root()
    assert provider_key(root) == bytes([0x12, 0x20]) + root[len(CID_PREFIX) :]
    # the key the library (like kubo) derives from the CID's text form
    assert _encode_key(cid_to_text(root)) == provider_key(root)
    with pytest.raises(CidError):
        provider_key(b"\x01\x71" + root[2:])  # dag-cbor: not a Sealbox root


def test_the_reprovide_interval_is_well_inside_a_records_lifetime() -> None:
    assert RECORD_LIFETIME == 48 * 3600
    assert REPROVIDE_INTERVAL * 4 <= RECORD_LIFETIME


async def test_a_provider_is_found_across_the_star() -> None:
    with trio.fail_after(15):
        async with star(5) as nodes:
            assert all(node.routing_table_size() == 4 for node in nodes)
            root = new_root()
            assert await nodes[2].provide(root)
            found = await nodes[4].find_providers(root, timeout=5)
            assert [p.peer_id for p in found] == [peer_id(nodes[2])]
            assert set(found[0].addrs) == set(listen_addrs(nodes[2].host))
            # the provider itself is never among the answers
            assert await nodes[2].find_providers(root, timeout=5) == []


async def test_the_lookup_asks_get_providers_from_its_first_round() -> None:
    """The walk alone (no FIND_NODE lookup first) finds a provider: the first peers it asks hold the
    record, as the nodes a provide reached are the closest ones."""
    with trio.fail_after(15):
        async with star(5) as nodes:
            root = new_root()
            assert await nodes[2].provide(root)
            await settle()
            finder = nodes[4]
            collector = _Collector(finder.host, finder.kad, provider_key(root), set(), want=1)
            await collector._walk()
            assert collector.first.is_set()
            assert collector.seen == {peer_id(nodes[2])}


async def test_a_get_providers_answer_teaches_the_closer_peers_addresses() -> None:
    """py-libp2p's own GET_PROVIDERS client drops them; the walk needs them to dial the next round."""
    with trio.fail_after(15):
        async with star(3) as nodes:
            asker, hub, other = nodes[1], nodes[0], nodes[2]
            other_id = other.host.get_id()
            asker.host.get_peerstore().clear_addrs(other_id)
            asker.kad.routing_table.remove_peer(other_id)
            collector = _Collector(asker.host, asker.kad, provider_key(new_root()), set(), want=1)
            closer = await collector._ask_providers(hub.host.get_id())
            assert other_id in closer
            learnt = {str(a).rsplit("/p2p/", 1)[0] for a in asker.host.get_peerstore().addrs(other_id)}
            assert learnt == {a.rsplit("/p2p/", 1)[0] for a in listen_addrs(other.host)}
            assert not collector.first.is_set()  # nobody provides this root


async def test_a_peer_that_does_not_speak_the_dht_yields_nothing_and_no_error() -> None:
    with trio.fail_after(15):
        async with star(2) as nodes, open_host(new_identity()) as stranger:
            stranger_id = await connect(nodes[1].host, listen_addrs(stranger)[0])
            collector = _Collector(nodes[1].host, nodes[1].kad, provider_key(new_root()), set(), want=1)
            assert await collector._ask_providers(ID.from_base58(stranger_id)) == []


async def test_find_providers_returns_each_provider_once() -> None:
    """A node with no record of its own asks every other node; each answers with the same providers."""
    with trio.fail_after(15):
        async with network() as new_node:
            nodes = [await new_node() for _ in range(5)]
            await link_star(nodes)
            root = new_root()
            assert await nodes[1].provide(root)
            assert await nodes[2].provide(root)
            await settle()
            assert all(stored_providers(n, root) >= {peer_id(nodes[1]), peer_id(nodes[2])} for n in nodes)

            late = await new_node()
            await link_star([nodes[0], late])
            assert stored_providers(late, root) == set()
            found = await late.find_providers(root, timeout=5)
            ids = [p.peer_id for p in found]
            assert sorted(ids) == sorted([peer_id(nodes[1]), peer_id(nodes[2])])
            for peer in found:
                assert len(peer.addrs) == len(set(peer.addrs)) >= 1
                assert all(addr.endswith(f"/p2p/{peer.peer_id}") for addr in peer.addrs)

            # limit counts distinct peers
            assert len(await late.find_providers(root, limit=1, timeout=5)) == 1


async def test_an_unknown_root_returns_nothing_within_its_deadline() -> None:
    """Even when a DHT peer never answers (the library would wait 10 s for it)."""

    async def silent(stream: INetStream) -> None:
        try:
            while await stream.read(4096):
                pass
        except StreamError:
            pass

    with trio.fail_after(15):
        async with star(3) as nodes, open_host(new_identity()) as mute:
            set_handler(mute, KAD_PROTOCOL_ID, silent)
            await connect(nodes[2].host, listen_addrs(mute)[0])
            assert await nodes[2].kad.add_peer(ID.from_base58(mute.get_id().to_base58()))

            # py-libp2p waits 10 s for a peer that never answers: only the lookup's own deadline can
            # end it before this bound (an event bound, not a budget: 16 x the deadline)
            with trio.fail_after(8):
                assert await nodes[2].find_providers(new_root(), timeout=0.5) == []


async def test_the_reprovider_announces_again_each_round() -> None:
    with trio.fail_after(15):
        async with star(5, spacing=0.01) as nodes, trio.open_nursery() as nursery:
            first, second = new_root(), new_root()
            shared = [first]
            log: list[tuple[bytes, bool]] = []
            changed = trio.Event()

            def announced(root: bytes, sent: bool) -> None:
                nonlocal changed
                log.append((root, sent))
                changed.set()
                changed = trio.Event()

            async def rounds_after(count: int, root: bytes) -> None:
                """Wait until ``root`` is announced after the first ``count`` announcements."""
                while all(r != root for r, _ in log[count:]):
                    await changed.wait()

            reprovider = partial(serve_reprovider, announced=announced)
            await nursery.start(reprovider, nodes[2], lambda: list(shared), 0.2)
            await rounds_after(0, first)
            await settle()
            others = [n for i, n in enumerate(nodes) if i != 2]
            assert all(peer_id(nodes[2]) in stored_providers(n, first) for n in others)

            # records vanish (as if expired) and a root is added: the next round restores and adds
            for node in others:
                node.kad.provider_store.providers.pop(provider_key(first), None)
            shared.append(second)
            mark = len(log)
            await rounds_after(mark, first)
            await rounds_after(mark, second)
            await settle()
            for root in (first, second):
                assert all(peer_id(nodes[2]) in stored_providers(n, root) for n in others)
            assert all(sent for _, sent in log)
            # the library's own republish list stays empty: the reprovider owns the schedule
            assert not nodes[2].kad.provider_store.providing_keys
            nursery.cancel_scope.cancel()


async def test_announcements_are_spaced_to_stay_under_the_servers_rate_limit() -> None:
    """A server drops ADD_PROVIDER past a rate limit (10 per 10 s; tightened here to 2 per 0.3 s)."""
    with trio.fail_after(15):
        async with star(3, spacing=0.16) as nodes:
            for node in nodes:
                node.kad._provider_rate_max = 2
                node.kad._provider_rate_window = 0.3
            roots = [new_root() for _ in range(4)]
            for root in roots:
                assert await nodes[1].provide(root)
            await settle()
            for node in (nodes[0], nodes[2]):
                assert all(peer_id(nodes[1]) in stored_providers(node, root) for root in roots)


async def test_the_reprovider_refuses_an_interval_longer_than_a_record_lives() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as host, open_dht(host) as node:
            with pytest.raises(ValueError):
                await serve_reprovider(node, list, RECORD_LIFETIME)


async def test_an_error_inside_the_block_comes_out_as_itself() -> None:
    with trio.fail_after(10), pytest.raises(KeyError, match="mine"):
        async with open_host(new_identity()) as host, open_dht(host):
            raise KeyError("mine")


async def test_the_dht_must_exist_before_the_host_connects() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as a, open_host(new_identity()) as b:
            await connect(a, listen_addrs(b)[0])
            with pytest.raises(RuntimeError, match="before"):
                async with open_dht(a):
                    pass


async def test_the_reprovider_says_when_no_peer_took_a_record_and_tries_again_soon(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line per round, and a true one: a node that knows no DHT peer announced nothing, and says
    when it tries again (soon, doubling), not "announced" and 12 h."""
    caplog.set_level(logging.INFO, logger="node.net.dht")
    with trio.fail_after(15):
        async with network(spacing=0.01) as new_node, trio.open_nursery() as nursery:
            alone, other = await new_node(), await new_node()
            rounds: list[bool] = []
            two, taken = trio.Event(), trio.Event()

            def announced(_root: bytes, sent: bool) -> None:
                rounds.append(sent)
                if len(rounds) == 2:
                    two.set()
                if sent:
                    taken.set()

            reprovider = partial(serve_reprovider, announced=announced, retry=0.05)
            await nursery.start(reprovider, alone, lambda: [new_root()], 3600.0)
            await two.wait()
            assert await alone.bootstrap(listen_addrs(other.host)) == 1
            await taken.wait()
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reprovide:")]
    assert lines[:2] == [
        "reprovide: announced 0 of 1 root(s); no DHT peer took the other 1; next round in 0 s",
        "reprovide: announced 0 of 1 root(s); no DHT peer took the other 1; next round in 0 s",
    ]
    assert lines[-1] == "reprovide: announced 1 root(s); next round in 3600 s"
    assert not any("retrying next round" in line for line in lines)
