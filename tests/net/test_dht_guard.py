"""A peer attacking our DHT node's memory: a real host on 127.0.0.1 speaking the real DHT protocol
(the library's own message encoding), against a real DHT node in this process (``node/net/dht_guard.py``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio
import trio.testing
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message as KadMessage
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

from node.net.dht import RECORD_LIFETIME, Dht, open_dht, provider_key
from node.net.dht_guard import (
    ADD_PROVIDER_BURST,
    MAX_INBOUND_MESSAGE,
    MAX_PROVIDER_ADDRS,
    CappedProviderStore,
)
from node.net.host import connect, listen_addrs, new_identity, open_host
from protocol.cid import cid_of
from tests.helpers import peer_id_of

ANSWER_LIMIT = 4 * 1024 * 1024


@asynccontextmanager
async def victim() -> AsyncIterator[Dht]:
    async with open_host(new_identity()) as host, open_dht(host) as dht:
        yield dht


@asynccontextmanager
async def attacker(target: Dht) -> AsyncIterator[IHost]:
    async with open_host(new_identity()) as host:
        await connect(host, listen_addrs(target.host)[0])
        yield host


async def ask(host: IHost, target: Dht, message: KadMessage, *, raw: bytes | None = None) -> bool:
    """Send one request on a new DHT stream; True if answered, False if the stream was reset/closed."""
    stream = await host.new_stream(target.host.get_id(), [TProtocol(KAD_PROTOCOL_ID)])
    try:
        await stream.write(raw if raw is not None else encode_varint_prefixed(message.SerializeToString()))
        await read_varint_prefixed_bytes_limited(stream, ANSWER_LIMIT)
        return True
    except (StreamError, OSError, ValueError, EOFError):  # reset, EOF, IncompleteReadError
        return False
    finally:
        await stream.reset()


def put_value(host: IHost, key: bytes, value: bytes) -> KadMessage:
    message = KadMessage()
    message.type = KadMessage.MessageType.PUT_VALUE
    message.key = key
    message.record.key = key
    message.record.value = value
    message.senderRecord = env_to_send_in_RPC(host)[0]
    return message


def add_provider(host: IHost, key: bytes, addrs: list[bytes] | None = None) -> KadMessage:
    """The library's own ADD_PROVIDER (``ProviderStore._send_add_provider``), addresses as given."""
    envelope = env_to_send_in_RPC(host)[0]
    message = KadMessage()
    message.type = KadMessage.MessageType.ADD_PROVIDER
    message.key = key
    message.senderRecord = envelope
    provider = message.providerPeers.add()
    provider.id = host.get_id().to_bytes()
    provider.addrs.extend(addrs if addrs is not None else [a.to_bytes() for a in host.get_addrs()])
    provider.signedRecord = envelope
    return message


def random_key() -> bytes:
    return provider_key(cid_of(os.urandom(32)))


def remote_records(dht: Dht) -> int:
    store = dht.kad.provider_store
    return sum(len(p) for p in store.providers.values()) - len(store.get_provided_keys(dht.host.get_id()))


async def test_values_are_refused_and_nothing_is_stored() -> None:
    """1 MB values under a namespace with no validator: stored by py-libp2p 0.8.1, refused here."""
    with trio.fail_after(60):
        async with victim() as dht, attacker(dht) as bad:
            for i in range(20):
                key = f"/junk/{i}".encode()
                assert not await ask(
                    bad, dht, put_value(bad, key, os.urandom(1_000_000 if i % 2 else 30_000))
                )
            get = KadMessage()
            get.type = KadMessage.MessageType.GET_VALUE
            get.key = b"/junk/0"
            assert not await ask(bad, dht, get)
            assert dht.kad.get_value_store_size() == 0
            # and the refused requests' bytes are not kept by the connection either
            # (drop_what_a_reset_stream_holds, node/net/libp2p_patches/yamux.py)
            [conn] = dht.host.get_network().get_connections(bad.get_id())
            buffers: dict[int, bytearray] = getattr(conn.muxed_conn, "stream_buffers")  # noqa: B009
            assert sum(len(b) for b in buffers.values()) < 64 * 1024
            assert dht.guard is not None
            assert dht.guard.refused["PUT_VALUE"] == dht.guard.refused["too large"] == 10
            assert dht.guard.refused["GET_VALUE"] == 1
            # the DHT itself still answers
            ping = KadMessage()
            ping.type = KadMessage.MessageType.PING
            assert await ask(bad, dht, ping)


async def test_a_message_over_the_cap_is_refused_from_its_length_alone() -> None:
    """Only the length prefix of a 1 MiB request is sent: the stream is reset without waiting for it."""
    with trio.fail_after(60):
        async with victim() as dht, attacker(dht) as bad:
            assert not await ask(bad, dht, KadMessage(), raw=encode_uvarint(1024 * 1024))
            assert not await ask(bad, dht, KadMessage(), raw=encode_uvarint(MAX_INBOUND_MESSAGE + 1))
            ping = KadMessage()
            ping.type = KadMessage.MessageType.PING
            assert await ask(bad, dht, ping)


async def test_provider_records_are_capped_per_peer_in_total_and_a_real_root_still_gets_in() -> None:
    with trio.fail_after(120):
        async with victim() as dht:
            store = dht.kad.provider_store
            assert isinstance(store, CappedProviderStore)
            store.max_records, store.max_per_provider = 30, 5  # the defaults, scaled down
            attackers = []
            for _ in range(10):
                async with attacker(dht) as bad:
                    answered = [await ask(bad, dht, add_provider(bad, random_key())) for _ in range(8)]
                    assert all(answered)  # accepted on the wire (the cap is silent, as the library's)
                    assert store.records_of(bad.get_id()) <= 5
                    attackers.append(bad.get_id())
            assert store.remote_records == remote_records(dht) == 30
            assert max(store.records_of(p) for p in attackers) <= 5
            assert store.total_bytes <= store.max_bytes

            # a real node announces a root: it takes the place of a flooder's oldest record
            async with open_host(new_identity()) as host, open_dht(host) as honest:
                assert await honest.bootstrap(listen_addrs(dht.host)) == 1
                root = cid_of(os.urandom(32))
                assert await honest.provide(root)
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                assert honest.host.get_id() in {p.peer_id for p in store.get_providers(provider_key(root))}
                assert store.remote_records == 30
                # and it refreshes its record however full the store is (the 12 h reprovide)
                assert await honest.provide(root)
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                assert store.records_of(honest.host.get_id()) == 1


async def test_a_record_keeps_a_few_short_addresses() -> None:
    with trio.fail_after(60):
        async with victim() as dht, attacker(dht) as bad:
            addrs = [f"/ip4/10.0.{i // 256}.{i % 256}/tcp/4001".encode() for i in range(500)]
            raw = [Multiaddr(a.decode()).to_bytes() for a in addrs]
            key = random_key()
            assert await ask(bad, dht, add_provider(bad, key, raw))
            [record] = dht.kad.provider_store.get_providers(key)
            assert len(record.addrs) == MAX_PROVIDER_ADDRS


async def test_add_provider_is_rate_limited_per_peer() -> None:
    with trio.fail_after(60):
        async with victim() as dht, attacker(dht) as bad, attacker(dht) as other:
            assert dht.guard is not None
            dht.guard.provide_rate = 1e-6  # no refill while the test runs, however slow the machine
            answered = [await ask(bad, dht, add_provider(bad, random_key())) for _ in range(25)]
            assert answered.count(True) == ADD_PROVIDER_BURST
            assert dht.guard.refused["ADD_PROVIDER rate"] == 25 - ADD_PROVIDER_BURST
            # another peer is not held back by the first one's flood
            assert await ask(other, dht, add_provider(other, random_key()))


async def test_the_store_accounting_follows_expiry_refresh_and_eviction() -> None:
    with trio.fail_after(30):
        async with open_host(new_identity()) as host:
            store = CappedProviderStore(host, None, max_records=4, max_per_provider=3)
            peers = [open_peer() for _ in range(3)]
            keys = [random_key() for _ in range(6)]
            for key in keys[:3]:
                store.add_provider(key, peers[0])
            store.add_provider(keys[3], peers[1])
            assert store.remote_records == 4 and store.records_of(peers[0].peer_id) == 3
            store.add_provider(keys[0], peers[0])  # a refresh when full: taken, nothing evicted
            assert store.remote_records == 4
            store.add_provider(keys[4], peers[2])  # full: the biggest holder's oldest record makes room
            assert store.records_of(peers[0].peer_id) == 2 and store.records_of(peers[2].peer_id) == 1
            assert store.get_providers(keys[1]) == []  # peers[0]'s oldest after the refresh of keys[0]
            store.add_provider(keys[5], peers[2])  # 2 against 2: no one to crowd out, refused
            assert store.records_of(peers[2].peer_id) == 1
            for records in store.providers.values():
                for record in records.values():
                    record.timestamp -= RECORD_LIFETIME + 1
            assert store.get_providers(keys[0]) == []
            store.cleanup_expired()
            assert store.remote_records == 0 and store.total_bytes == 0 and store.providers == {}


def open_peer() -> PeerInfo:
    peer = ID.from_base58(peer_id_of(new_identity()))
    return PeerInfo(peer, [Multiaddr("/ip4/127.0.0.1/tcp/4001")])


async def test_idle_streams_of_one_peer_do_not_shut_others_out_and_time_out() -> None:
    """The library serves 12 inbound DHT streams at once and waits for a request for ever: one peer's
    12 silent streams used to take them all."""
    with trio.fail_after(60):
        async with victim() as dht, attacker(dht) as bad, attacker(dht) as other:
            assert dht.guard is not None
            dht.guard.read_timeout = 0.5  # the default, 10 s, scaled down
            streams = []
            for _ in range(12):  # silent streams; past 4, the node resets them as they open
                with suppress(StreamFailure):
                    streams.append(await bad.new_stream(dht.host.get_id(), [TProtocol(KAD_PROTOCOL_ID)]))
            ping = KadMessage()
            ping.type = KadMessage.MessageType.PING
            assert await ask(other, dht, ping)
            for stream in streams:  # each silent stream ends: refused at once, or reset once idle
                try:
                    await read_varint_prefixed_bytes_limited(stream, ANSWER_LIMIT)
                    raise AssertionError("a silent stream got an answer")
                except (StreamError, OSError, ValueError, EOFError):
                    pass
            assert dht.guard.refused["streams"] + dht.guard.refused["idle"] == 12
            assert dht.guard.refused["idle"] <= 4
