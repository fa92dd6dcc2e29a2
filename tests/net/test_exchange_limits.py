"""What a peer can make the block exchange do: backpressure, request ids, frames cut short, and the caps
on streams and queued work (issue 12, items 5c, 10 and 11). Real libp2p hosts on 127.0.0.1 port 0; the
attacker is a bare host that writes raw frames."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

from node.files.add import add_path
from node.net.errors import NetworkError
from node.net.exchange import BlockServer, FetchError, fetch_blocks
from node.net.host import connect, listen_addrs, new_identity, open_host, open_stream, set_handler
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.exchange_server import MAX_BACKLOG, MAX_WAITING, SERVER_MAX_OPEN
from protocol.messages import (
    PROTOCOL_ID,
    BlockMessage,
    FrameDecoder,
    Message,
    MessageError,
    NotFound,
    Want,
    decode_body,
    encode_message,
)

CHUNK = 16 * 1024


@dataclass
class Server:
    host: IHost
    repo: Repo
    server: BlockServer
    addr: str
    cids: list[bytes]

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_base58()


@asynccontextmanager
async def serving(tmp_path: Path, name: str, size: int = 40 * CHUNK, **limits: int) -> AsyncIterator[Server]:
    """A node that serves a random file of ``size`` bytes (its blocks: ``cids``) with ``limits``."""
    repo = Repo.open(tmp_path / name)
    sample = tmp_path / f"{name}.bin"
    sample.write_bytes(os.urandom(size))
    link = add_path(repo, sample, chunk_size=CHUNK).link
    cids = list(repo.pin_blocks(link.root))
    try:
        async with open_host(new_identity()) as host:
            server = BlockServer(repo.blocks, **limits)
            server.install(host)
            yield Server(host, repo, server, listen_addrs(host)[0], cids)
    finally:
        repo.close()


@asynccontextmanager
async def attacker(target: Server) -> AsyncIterator[IHost]:
    """A bare host connected to ``target``: it writes whatever frames the test says."""
    async with open_host(new_identity()) as host:
        await connect(host, target.addr)
        yield host


async def answers(stream: INetStream, count: int, decoder: FrameDecoder | None = None) -> list[Message]:
    """Read until ``count`` messages have arrived."""
    decoder = decoder or FrameDecoder()
    out: list[Message] = []
    while len(out) < count:
        data = await stream.read(1 << 16)
        assert data, f"the stream ended after {len(out)} of {count} answers"
        out += decoder.feed(data)
    return out


async def read_to_end(stream: INetStream) -> list[Message]:
    """Every message until the stream ends. (py-libp2p 0.8.1 reports a reset by the other side as an
    end of stream, once it has dropped the stream's state: the two cannot be told apart here.)"""
    decoder = FrameDecoder()
    out: list[Message] = []
    try:
        while data := await stream.read(1 << 16):
            out += decoder.feed(data)
    except (StreamEOF, StreamReset):
        pass
    return out


def unknown_cid(n: int) -> bytes:
    return cid_of(b"nobody holds block %d" % n)


# -- item 10: backpressure, not a reset ---------------------------------------------------------------


async def test_a_thousand_requests_pipelined_in_one_write_get_a_thousand_answers(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with serving(tmp_path, "server") as server, attacker(server) as client:
            stream = await open_stream(client, server.peer_id, PROTOCOL_ID)
            wanted = {n: server.cids[n % len(server.cids)] for n in range(1000)}
            await stream.write(b"".join(encode_message(Want(n, cid)) for n, cid in wanted.items()))
            got = await answers(stream, 1000)
            assert max(server.server.open_requests(), default=0) <= SERVER_MAX_OPEN
            await stream.close()
    assert sorted(m.request for m in got) == list(range(1000))
    for message in got:
        assert isinstance(message, BlockMessage)
        assert cid_of(message.data) == wanted[message.request]


async def test_twenty_thousand_requests_on_one_stream_hold_at_most_the_cap_open(tmp_path: Path) -> None:
    # WANTs for blocks the server lacks, in one write: each is answered NOT_FOUND (5 bytes) and
    # remembered to send HAVE later. The server never holds more than SERVER_MAX_OPEN open, remembers
    # at most MAX_WAITING, and answers every one of them.
    total = 20_000  # (scripts/want_flood.py sends 100,000 to a daemon)
    with trio.fail_after(300):
        async with serving(tmp_path, "server") as server, attacker(server) as client:
            stream = await open_stream(client, server.peer_id, PROTOCOL_ID)
            await stream.write(b"".join(encode_message(Want(n, unknown_cid(n))) for n in range(total)))
            decoder = FrameDecoder()
            seen: set[int] = set()
            most_open = most_remembered = 0
            while len(seen) < total:
                data = await stream.read(1 << 16)
                assert data, f"the stream ended after {len(seen)} answers"
                for message in decoder.feed(data):
                    assert isinstance(message, NotFound)
                    seen.add(message.request)
                most_open = max(most_open, *server.server.open_requests())
                most_remembered = max(most_remembered, *server.server.remembered())
    assert seen == set(range(total))
    assert 0 < most_open <= SERVER_MAX_OPEN
    assert 0 < most_remembered <= MAX_WAITING


async def test_a_hundred_thousand_unread_requests_for_held_blocks_get_the_stream_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The asker reads no answer: the server's writes fill the stream's window, it holds 64 requests
    # open and stops reading; py-libp2p would buffer the other ~4 MB of requests whatever the window
    # said, so the server resets a stream that leaves more than MAX_BACKLOG unread. Under load the
    # flood may instead first overrun the stream's yamux receive window, which a patch
    # (node/net/libp2p_patches/yamux.py) enforces with a reset of its own: either limit ends the stream,
    # and nothing is kept.
    caplog.set_level(logging.DEBUG, logger="node")
    with trio.fail_after(60):
        async with serving(tmp_path, "server") as server, attacker(server) as client:
            served = trio.Event()

            async def handle(stream: INetStream) -> None:
                await server.server.handle(stream)
                served.set()

            set_handler(server.host, PROTOCOL_ID, handle)
            stream = await open_stream(client, server.peer_id, PROTOCOL_ID)
            # an attacker ignores the flow-control window the server grants (py-libp2p's yamux lets it)
            stream.muxed_stream.send_window = 1 << 30  # type: ignore[attr-defined]
            wants = (encode_message(Want(n, server.cids[n % len(server.cids)])) for n in range(100_000))
            with contextlib.suppress(StreamReset):  # the reset may come while we still write
                await stream.write(b"".join(wants))
            await served.wait()  # the server is done with the stream (we read nothing)
    assert (
        f"over {MAX_BACKLOG} bytes of requests wait unread" in caplog.text
        or "over a stream's receive window; stream reset" in caplog.text
    )
    assert server.server.buffered == 0 and server.server.open_streams == 0


async def test_a_request_id_reused_while_open_is_a_protocol_error_of_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.net.block_server")
    with trio.fail_after(60):
        async with serving(tmp_path, "server") as server, attacker(server) as client:
            stream = await open_stream(client, server.peer_id, PROTOCOL_ID)
            # both in one write: the first is still open when the second is read
            await stream.write(
                encode_message(Want(7, server.cids[0])) + encode_message(Want(7, server.cids[1]))
            )
            assert await read_to_end(stream) == []  # dropped before anything is answered
    assert "request id 7 is already open" in caplog.text
    assert "too many open requests" not in caplog.text


# -- item 11: a stream that ends inside a frame -------------------------------------------------------


async def test_a_server_resets_a_stream_that_ends_inside_a_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.net.block_server")
    with trio.fail_after(60):
        async with serving(tmp_path, "server") as server, attacker(server) as client:
            stream = await open_stream(client, server.peer_id, PROTOCOL_ID)
            half = encode_message(Want(1, server.cids[1]))
            await stream.write(encode_message(Want(0, server.cids[0])) + half[: len(half) // 2])
            await stream.close()  # our side ends here, inside the second frame
            await read_to_end(stream)  # the server ends the stream
    assert "ended inside a frame" in caplog.text


async def half_a_block(stream: INetStream) -> None:
    """A provider that answers the first request with half a BLOCK frame, then closes its side."""
    decoder = FrameDecoder()
    with trio.move_on_after(30):  # (only if the asker never writes)
        while data := await stream.read(1 << 16):
            for message in decoder.feed(data):
                assert isinstance(message, Want)
                frame = encode_message(BlockMessage(message.request, b"x" * 1000))
                await stream.write(frame[:500])
                await stream.close()
                try:
                    while await stream.read(1 << 16):
                        pass  # until the asker resets the stream
                except BaseLibp2pError:
                    pass
                return


async def test_a_fetcher_drops_a_provider_whose_stream_ends_inside_a_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.net.block_fetch")
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            cut = await stack.enter_async_context(serving(tmp_path, "cut"))
            set_handler(cut.host, PROTOCOL_ID, half_a_block)
            fetcher = await stack.enter_async_context(serving(tmp_path, "fetcher", size=CHUNK))
            await connect(fetcher.host, cut.addr)
            with pytest.raises(FetchError) as failure:
                await fetch_blocks(fetcher.host, fetcher.repo.blocks, [cut.peer_id], cut.cids[:4])
    assert failure.value.stats is not None and failure.value.stats.dropped == {cut.peer_id}
    assert "the stream ended inside a frame" in caplog.text
    assert not any(fetcher.repo.blocks.has(cid) for cid in cut.cids[:4])


async def test_a_fetch_asks_a_peer_for_at_most_what_a_server_holds_open(tmp_path: Path) -> None:
    """A window deeper than SERVER_MAX_OPEN is cut to it: no request waits behind the backpressure."""
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            provider = await stack.enter_async_context(serving(tmp_path, "provider", size=200 * CHUNK))
            fetcher = await stack.enter_async_context(serving(tmp_path, "fetcher", size=CHUNK))
            most = 0

            def on_block(_cid: bytes, _peer: str, _size: int) -> None:
                nonlocal most
                most = max(most, *provider.server.open_requests(), 0)

            await connect(fetcher.host, provider.addr)
            stats = await fetch_blocks(
                fetcher.host,
                fetcher.repo.blocks,
                [provider.peer_id],
                provider.cids,
                window=500,
                on_block=on_block,
            )
    assert stats.blocks == len(provider.cids)
    assert 0 < most <= SERVER_MAX_OPEN


# -- item 5c: streams and queued work are capped -------------------------------------------------------


async def flood_streams(host: IHost, server: Server, count: int) -> tuple[int, int]:
    """Open ``count`` streams and write 64 WANTs on each (of blocks the server lacks, so that its
    answers never fill the stream's window and the streams it took stay open); read one byte of the
    answers. Returns (streams accepted, streams the server reset at once)."""
    accepted = refused = 0
    wants = b"".join(encode_message(Want(n, unknown_cid(n))) for n in range(64))

    async def one() -> None:
        nonlocal accepted, refused
        try:
            stream = await open_stream(host, server.peer_id, PROTOCOL_ID)
            await stream.write(wants)
            data = await stream.read(1)
        except (NetworkError, BaseLibp2pError):  # reset: py-libp2p 0.8.1 may report it as an end of
            refused += 1  # stream, or as a failed negotiation if the reset overtakes the protocol's ack
            return
        assert data
        accepted += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return accepted, refused


async def test_streams_past_the_caps_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            server = await stack.enter_async_context(
                serving(tmp_path, "server", max_streams=6, max_streams_per_peer=4)
            )
            first = await stack.enter_async_context(attacker(server))
            second = await stack.enter_async_context(attacker(server))
            assert await flood_streams(first, server, 10) == (4, 6)  # per peer
            assert await flood_streams(second, server, 10) == (2, 8)  # in all
            assert server.server.open_streams == 6
            assert server.server.refused_streams == 14
            assert all(n <= SERVER_MAX_OPEN for n in server.server.open_requests())


async def test_replies_in_memory_stay_within_the_send_buffer(tmp_path: Path) -> None:
    """Four streams ask for 64 blocks each and read slowly: what the server holds read from the store
    and not yet written never passes its send buffer (plus one batch it may overshoot by)."""
    send_buffer = 128 * 1024
    most = 0
    with trio.fail_after(120):
        async with (
            serving(tmp_path, "server", size=64 * CHUNK, send_buffer=send_buffer) as server,
            attacker(server) as client,
        ):

            async def one(stream: INetStream) -> None:
                nonlocal most
                await stream.write(
                    b"".join(encode_message(Want(n, cid)) for n, cid in enumerate(server.cids))
                )
                decoder = FrameDecoder()
                got = 0
                while got < len(server.cids):
                    data = await stream.read(4096)
                    assert data
                    got += len(list(decoder.feed(data)))
                    most = max(most, server.server.buffered)

            streams = [await open_stream(client, server.peer_id, PROTOCOL_ID) for _ in range(4)]
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(one, stream)
    assert 0 < most <= send_buffer + 4 * (CHUNK + 100)


async def test_not_found_answers_remembered_are_capped_per_stream_and_in_all(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with (
            serving(tmp_path, "server", max_waiting=60, max_waiting_total=100) as server,
            attacker(server) as client,
        ):
            streams = [await open_stream(client, server.peer_id, PROTOCOL_ID) for _ in range(3)]
            for i, stream in enumerate(streams):
                base = i * 1000
                await stream.write(
                    b"".join(encode_message(Want(base + n, unknown_cid(base + n))) for n in range(200))
                )
                await answers(stream, 200)
                assert max(server.server.remembered()) <= 60
            assert server.server.remembered() and sum(server.server.remembered()) <= 100
            assert server.server.waiting <= 100
    assert server.server.waiting == 0


# -- item 9 (messages): no message holds a map, so none can repeat a key ------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        [1, 7, {b"a": 1, b"b": 2}],
        [4, {0: 1}],
        [2, 7, b"x", {}],
    ],
)
def test_a_message_holding_a_map_is_refused(fields: list[object]) -> None:
    # (msgpack cannot even build a map that repeats a key from a dict: the decoder refuses any map)
    body = msgpack.packb(fields, use_bin_type=True)
    with pytest.raises(MessageError):
        decode_body(body)


def test_a_map_that_repeats_a_key_is_refused() -> None:
    body = bytes([0x93, 0x01, 0x07, 0x82, 0x01, 0x01, 0x01, 0x02])  # [1, 7, {1: 1, 1: 2}]
    with pytest.raises(MessageError):
        decode_body(body)
