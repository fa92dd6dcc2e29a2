"""The libp2p host: real hosts on 127.0.0.1, port 0, in this process. Nothing is dialed but loopback."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP

from node.net.errors import NetworkError
from node.net.host import (
    Peer,
    connect,
    listen_addrs,
    load_identity,
    new_identity,
    open_host,
    open_stream,
    set_handler,
)
from tests.helpers import peer_id_of

ECHO = "/sealbox-test/reverse/1"
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


async def reverse_handler(stream: INetStream) -> None:
    """Read until the writer closes, answer with the bytes reversed."""
    data = await read_all(stream)
    await stream.write(data[::-1])
    await stream.close()


async def read_all(stream: INetStream) -> bytes:
    out = b""
    while True:
        try:
            out += await stream.read(65536)
        except StreamEOF:
            return out


async def test_two_hosts_connect_and_a_custom_protocol_round_trips_bytes() -> None:
    payload = bytes(range(256)) * 1000 + b"end"
    with trio.fail_after(10):
        async with open_host(new_identity()) as a, open_host(new_identity()) as b:
            set_handler(b, ECHO, reverse_handler)
            peer = await connect(a, listen_addrs(b)[0])
            assert peer == b.get_id().to_base58()
            assert a.get_connected_peers() == [b.get_id()]

            stream = await open_stream(a, peer, ECHO)
            await stream.write(payload)
            await stream.close()
            assert await read_all(stream) == payload[::-1]

            # one connection per peer: connecting again, or from the other side, reuses it
            await connect(a, listen_addrs(b)[0])
            await connect(b, Peer(a.get_id().to_base58(), tuple(listen_addrs(a))))
            assert len(a.get_network().get_connections(b.get_id())) == 1


async def test_listen_addrs_carry_the_real_port_and_the_peer_id() -> None:
    identity = new_identity()
    with trio.fail_after(10):
        async with open_host(identity, [LOOPBACK]) as host, open_host(new_identity()) as other:
            [text] = listen_addrs(host)
            addr = multiaddr.Multiaddr(text)
            assert addr.value_for_protocol("ip4") == "127.0.0.1"
            port = int(addr.value_for_protocol("tcp"))
            assert port > 0
            assert text == f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(identity)}"
            assert listen_addrs(other)[0] != text
            # the address is really where the host listens: another host connects to it
            assert await connect(other, text) == peer_id_of(identity)


async def test_a_closed_host_no_longer_listens() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as gone:
            port = int(multiaddr.Multiaddr(listen_addrs(gone)[0]).value_for_protocol("tcp"))
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


def test_identity_bytes_round_trip_to_the_same_peer_id() -> None:
    identity = new_identity()
    assert isinstance(identity, bytes) and len(identity) == 32
    again = bytes(bytearray(identity))
    assert peer_id_of(again) == peer_id_of(identity)
    assert peer_id_of(identity).startswith("12D3KooW")  # Ed25519, identity multihash
    assert load_identity(again).public_key.to_bytes() == load_identity(identity).public_key.to_bytes()
    assert peer_id_of(new_identity()) != peer_id_of(identity)


async def test_the_host_runs_under_the_identity_it_is_given() -> None:
    identity = new_identity()
    with trio.fail_after(10):
        async with open_host(identity) as host:
            assert host.get_id().to_base58() == peer_id_of(identity)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64])
def test_a_malformed_identity_is_a_network_error(bad: bytes) -> None:
    with pytest.raises(NetworkError, match="identity"):
        load_identity(bad)


async def test_a_plaintext_only_peer_is_refused_both_ways() -> None:
    """No downgrade: a host offering only /plaintext/2.0.0 cannot connect to ours, nor ours to it."""
    key_pair = load_identity(new_identity())
    plaintext = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
    )
    with trio.fail_after(15):
        async with open_host(new_identity()) as ours, plaintext.run([multiaddr.Multiaddr(LOOPBACK)]):
            try:
                set_handler(ours, ECHO, reverse_handler)
                with pytest.raises(NetworkError, match="cannot connect"):
                    await connect(plaintext, listen_addrs(ours)[0])
                plaintext_addr = f"{plaintext.get_transport_addrs()[0]}/p2p/{plaintext.get_id().to_base58()}"
                with pytest.raises(NetworkError, match="cannot connect"):
                    await connect(ours, plaintext_addr)
                assert ours.get_connected_peers() == []
                assert plaintext.get_connected_peers() == []
            finally:
                await plaintext.close()  # leaving run() alone would leave its listener open


async def test_dialing_a_closed_port_fails_within_the_deadline() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as a:
            async with open_host(new_identity()) as gone:
                addr = listen_addrs(gone)[0]
            with pytest.raises(NetworkError, match="cannot connect") as failure:
                await connect(a, addr)
            # refused at once, not ended by the dial's CONNECT_TIMEOUT
            assert "timed out" not in str(failure.value)


async def test_opening_a_protocol_the_peer_does_not_speak_is_a_network_error() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as a, open_host(new_identity()) as b:
            peer = await connect(a, listen_addrs(b)[0])
            with pytest.raises(NetworkError, match="cannot open"):
                await open_stream(a, peer, "/sealbox-test/nobody-speaks-this/1")


@pytest.mark.parametrize(
    "addr",
    [
        "not an address",
        "/ip4/127.0.0.1/tcp/4001",  # no /p2p/<id>: the peer could not be authenticated
        "/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",  # no transport
        "/ip4/127.0.0.1/tcp/4001/p2p/not-a-peer-id",
    ],
)
async def test_a_malformed_peer_address_is_a_network_error(addr: str) -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as host:
            with pytest.raises(NetworkError):
                await connect(host, addr)


@pytest.mark.parametrize("listen", ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0/ws", "garbage"])
async def test_only_tcp_listen_addresses_are_accepted(listen: str) -> None:
    with pytest.raises(NetworkError, match="listen"):
        async with open_host(new_identity(), [listen]):
            pass


async def test_a_port_in_use_is_refused() -> None:
    """The transport binds with SO_REUSEPORT; without the check a second node would share the port."""
    with trio.fail_after(10):
        async with open_host(new_identity()) as first:
            port = multiaddr.Multiaddr(listen_addrs(first)[0]).value_for_protocol("tcp")
            with pytest.raises(NetworkError, match="cannot listen"):
                async with open_host(new_identity(), [f"/ip4/127.0.0.1/tcp/{port}"]):
                    pass


async def test_an_address_not_on_this_machine_cannot_be_listened_on() -> None:
    with pytest.raises(NetworkError, match="cannot listen"):
        async with open_host(new_identity(), ["/ip4/192.0.2.1/tcp/0"]):  # TEST-NET-1: binds, sends nothing
            pass


async def test_an_error_inside_the_block_comes_out_as_itself() -> None:
    """Not wrapped in the exception groups of the host's nurseries."""
    with trio.fail_after(10), pytest.raises(KeyError, match="mine"):
        async with open_host(new_identity()):
            raise KeyError("mine")


async def test_a_host_does_not_connect_to_itself() -> None:
    with trio.fail_after(10):
        async with open_host(new_identity()) as host:
            with pytest.raises(NetworkError, match="itself"):
                await connect(host, listen_addrs(host)[0])
