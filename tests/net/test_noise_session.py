"""The buffered Noise session (node/net/noise_session.py): same bytes on the wire as py-libp2p's own.

Sessions run over trio's in-memory streams (delivering data in whatever pieces the test says) with
cipher states from a real Noise XX handshake; the interoperability test runs real hosts on loopback,
one of them with py-libp2p's stock Noise transport.
"""

from __future__ import annotations

import os

import multiaddr
import pytest
import trio
import trio.testing
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as StockNoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from node.net.host import connect, load_identity, new_identity, open_host, open_stream, set_handler
from node.net.noise_session import RECV_SIZE, BufferedSession
from tests.net.test_host import ECHO, read_all, reverse_handler

LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def noise_pair() -> tuple[NoiseConnection, NoiseConnection]:
    """Two Noise states that finished an XX handshake with each other."""
    sides = []
    for initiator in (True, False):
        state = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
        state.set_as_initiator() if initiator else state.set_as_responder()
        state.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
        state.start_handshake()
        sides.append(state)
    a, b = sides
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    assert a.handshake_finished and b.handshake_finished
    return a, b


def session(stream: trio.abc.Stream, state: NoiseConnection, *, buffered: bool) -> SecureSession:
    """A secure session over ``stream``: py-libp2p's own, or ours built from it."""
    key = load_identity(new_identity())
    transport = NoiseTransportReadWriter(RawConnection(TrioTCPStream(stream), initiator=True), state)  # type: ignore[arg-type]
    stock = SecureSession(
        local_peer=ID.from_pubkey(key.public_key),
        local_private_key=key.private_key,
        remote_peer=ID.from_pubkey(key.public_key),
        remote_permanent_pubkey=key.public_key,
        is_initiator=True,
        conn=transport,
    )
    return BufferedSession(stock, transport) if buffered else stock


def pair(*, a_buffered: bool = True, b_buffered: bool = True) -> tuple[SecureSession, SecureSession]:
    left, right = trio.testing.memory_stream_pair()
    a_state, b_state = noise_pair()
    return session(left, a_state, buffered=a_buffered), session(right, b_state, buffered=b_buffered)


@pytest.mark.parametrize(("a_buffered", "b_buffered"), [(True, True), (True, False), (False, True)])
async def test_bytes_cross_both_ways_and_with_the_stock_session(a_buffered: bool, b_buffered: bool) -> None:
    """Ours and py-libp2p's session read each other's messages: the wire format is the same."""
    a, b = pair(a_buffered=a_buffered, b_buffered=b_buffered)
    big = os.urandom(3 * MAX_PLAINTEXT_LENGTH + 7)  # several Noise messages in one write
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.write, big)
            assert await b.read(len(big)) == big
            nursery.start_soon(b.write, b"small")
            assert await a.read(5) == b"small"
            nursery.start_soon(a.write, b"after")
            assert await b.read(5) == b"after"


async def test_an_empty_message_is_no_data_not_the_end() -> None:
    a, b = pair()
    with trio.fail_after(10):
        await a.write(b"")
        await a.write(b"then this")
        assert await b.read() == b"then this"


async def test_reads_of_any_size_return_the_stream_in_order() -> None:
    """Small reads (a yamux header is 12 bytes) and reads spanning messages and socket reads."""
    a, b = pair()
    data = os.urandom(RECV_SIZE + 5 * MAX_PLAINTEXT_LENGTH)
    got = bytearray()
    sizes = [12, 1, MAX_PLAINTEXT_LENGTH + 3, 65536, RECV_SIZE, 7]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for start in range(0, len(data), 100_000):
                nursery.start_soon(a.write, data[start : start + 100_000])
                await trio.testing.wait_all_tasks_blocked()
            i = 0
            while len(got) < len(data):
                got += await b.read(min(sizes[i % len(sizes)], len(data) - len(got)))
                i += 1
    assert bytes(got) == data


async def test_a_message_delivered_a_byte_at_a_time_is_read_whole() -> None:
    left, right = trio.testing.lockstep_stream_pair()  # every send waits for its receive
    a_state, b_state = noise_pair()
    b = session(right, b_state, buffered=True)
    message = a_state.encrypt(b"hello, noise")
    wire = len(message).to_bytes(2, "big") + message

    async def trickle() -> None:
        for byte in wire:
            await left.send_all(bytes([byte]))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            assert await b.read(12) == b"hello, noise"


async def test_a_damaged_message_is_refused_and_nothing_of_it_is_returned() -> None:
    left, right = trio.testing.memory_stream_pair()
    a_state, b_state = noise_pair()
    b = session(right, b_state, buffered=True)
    message = bytearray(a_state.encrypt(b"secret payload"))
    message[3] ^= 0x01
    await left.send_all(len(message).to_bytes(2, "big") + bytes(message))
    with trio.fail_after(10), pytest.raises(NoiseInvalidMessage):
        await b.read(14)


async def test_the_end_of_the_connection_is_reported_like_the_stock_session() -> None:
    left, right = trio.testing.memory_stream_pair()
    a_state, b_state = noise_pair()
    b = session(right, b_state, buffered=True)
    message = a_state.encrypt(b"last words")
    with trio.fail_after(10):
        await left.send_all(len(message).to_bytes(2, "big") + message)
        await left.aclose()
        assert await b.read(100) == b"last words"  # a partial read at the end, as SecureSession does
        with pytest.raises(ConnectionClosedError):
            await b.read(1)


async def test_a_connection_cut_in_the_middle_of_a_message_is_an_error() -> None:
    left, right = trio.testing.memory_stream_pair()
    a_state, b_state = noise_pair()
    b = session(right, b_state, buffered=True)
    message = a_state.encrypt(b"x" * 1000)
    with trio.fail_after(10):
        await left.send_all((len(message).to_bytes(2, "big") + message)[:500])
        await left.aclose()
        with pytest.raises(ConnectionClosedError, match="middle of a Noise message"):
            await b.read(1000)


async def test_our_host_and_a_host_with_the_stock_noise_transport_talk_both_ways() -> None:
    """Real hosts on loopback: ours (buffered sessions, 512 KiB yamux frames) and one configured with
    py-libp2p's own Noise transport exchange 3 MB in each direction."""
    key_pair = load_identity(new_identity())
    stock = new_host(
        key_pair=key_pair,
        sec_opt={
            NOISE_PROTOCOL_ID: StockNoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
        },
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
    )
    payload = os.urandom(3_000_000)
    with trio.fail_after(30):
        async with open_host(new_identity()) as ours, stock.run([multiaddr.Multiaddr(LOOPBACK)]):
            try:
                set_handler(ours, ECHO, reverse_handler)
                set_handler(stock, ECHO, reverse_handler)
                stock_addr = f"{stock.get_transport_addrs()[0]}/p2p/{stock.get_id().to_base58()}"
                peer = await connect(ours, stock_addr)
                stream = await open_stream(ours, peer, ECHO)  # ours -> stock
                await stream.write(payload)
                await stream.close()
                assert await read_all(stream) == payload[::-1]
                back = await stock.new_stream(ours.get_id(), [TProtocol(ECHO)])  # stock -> ours
                await back.write(payload)
                await back.close()
                assert await read_all(back) == payload[::-1]
                muxed = ours.get_network().get_connections(stock.get_id())[0].muxed_conn
                assert isinstance(muxed, Yamux) and isinstance(muxed.secured_conn, BufferedSession)
            finally:
                await stock.close()
