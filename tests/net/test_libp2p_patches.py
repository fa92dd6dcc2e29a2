"""Each patch of py-libp2p (node/net/libp2p_patches/) takes effect, and another library release is refused.

Real hosts on 127.0.0.1, port 0, in this process; where a behavioural test is impractical (a timeout of
seconds, an environment variable), the patched object is inspected, through the library's own reader
where it has one. More of the inbound-slot patch at scale: tests/net/test_inbound.py (500 peers one after
another, 2 x 100 at once, the connection limit still holding); of the reset-stream patch against a real
flood of refused DHT values: tests/net/test_dht_guard.py.
"""

from __future__ import annotations

import inspect
import logging
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import IHost, INetStream
from libp2p.kad_dht import kad_dht as kad_dht_module
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.network.swarm import Swarm
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    TYPE_DATA,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

from node.net import libp2p_patches
from node.net.dht_guard import DhtRefused
from node.net.errors import NetworkError
from node.net.host import connect, listen_addrs, new_identity, open_host, open_stream, set_handler
from node.net.libp2p_patches import kad_dht, swarm, yamux
from tests.helpers import RunCli, ok

PROTOCOL = "/sealbox-test/patches/1"


# -- the version check --------------------------------------------------------------------------------


def test_the_installed_release_is_the_supported_one_and_every_patch_is_installed_once() -> None:
    assert libp2p_patches.installed_version() == libp2p_patches.SUPPORTED_VERSION == "0.8.1"
    libp2p_patches.check_version("0.8.1")
    filters = {
        name: list(logging.getLogger(name).filters) for name in (yamux.YAMUX_LOGGER, kad_dht.KAD_LOGGER)
    }
    libp2p_patches.apply()  # applied on import of node.net.host: again is nothing
    assert {name: logging.getLogger(name).filters for name in filters} == filters
    assert [p.__name__ for p in libp2p_patches.patches()] == [
        "free_inbound_slot_on_close",
        "drop_what_a_reset_stream_holds",
        "enforce_the_receive_window",
        "send_large_frames",
        "return_credit_at_half_window",
        "shorten_the_query_timeout",
        "quiet_the_normal_end_of_a_stream",
    ]


@pytest.mark.parametrize("found", ["0.9.0", "0.8.0", "0.8.1.post1", None])
def test_another_release_is_refused_in_one_line_naming_both(found: str | None) -> None:
    with pytest.raises(NetworkError) as refused:
        libp2p_patches.check_version(found)
    message = str(refused.value)
    assert "\n" not in message
    assert "py-libp2p 0.8.1" in message and "libp2p==0.8.1" in message
    assert (f"py-libp2p {found} is installed" if found else "py-libp2p is not installed") in message


FAKE_RELEASE = """
import importlib.metadata, sys
real = importlib.metadata.version
importlib.metadata.version = lambda name: "0.9.0" if name == "libp2p" else real(name)
from node.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_daemon_and_a_temporary_node_refuse_another_release_in_one_line(
    tmp_path: Path, run_cli: RunCli
) -> None:
    """The real command line, with py-libp2p reporting another release: one line, no traceback."""
    (tmp_path / "file").write_bytes(b"shared")
    link = ok(run_cli("--repo", tmp_path / "a", "add", tmp_path / "file")).strip()
    other = tmp_path / "b"
    for args in (
        ["--repo", str(other), "daemon", "--listen", "/ip4/127.0.0.1/tcp/0"],
        ["--repo", str(other), "get", link, "-o", str(tmp_path / "out")],
    ):
        done = subprocess.run(
            [sys.executable, "-c", FAKE_RELEASE, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0
        assert done.stderr.splitlines() == [
            "sealbox: error: py-libp2p 0.9.0 is installed, but this Sealbox works only with py-libp2p 0.8.1"
            " (its patches in node/net/libp2p_patches were checked against that release):"
            " install libp2p==0.8.1"
        ]


# -- the swarm ----------------------------------------------------------------------------------------


async def test_a_node_serves_peer_after_peer_past_its_inbound_slots() -> None:
    """free_inbound_slot_on_close: 4 inbound slots, 12 short-lived peers one after another, all served
    (the library freed a slot only when the swarm stopped: the 5th peer was refused)."""
    assert getattr(Swarm, "_do_handle_inbound_connection") is swarm._do_handle_inbound_connection  # noqa: B009

    async def echo(stream: INetStream) -> None:
        await stream.write(await stream.read(5))
        await stream.close()

    with trio.fail_after(60):
        async with open_host(new_identity(), max_connections=4) as server:
            set_handler(server, PROTOCOL, echo)
            limiter = getattr(server.get_network(), "_inbound_limiter")  # noqa: B009
            assert limiter.total_tokens == 4
            for _ in range(12):
                async with open_host(new_identity()) as peer:
                    await connect(peer, listen_addrs(server)[0])
                    stream = await open_stream(peer, server.get_id().to_base58(), PROTOCOL)
                    await stream.write(b"hello")
                    assert await stream.read(5) == b"hello"


# -- yamux --------------------------------------------------------------------------------------------


@asynccontextmanager
async def held_stream(
    handler: Callable[[INetStream], Awaitable[None]],
) -> AsyncIterator[tuple[IHost, IHost, INetStream, list[INetStream]]]:
    """A server whose ``handler`` gets each inbound stream, a client, and one stream from it; ``seen``
    lists the server's side of each stream as its handler starts."""
    seen: list[INetStream] = []

    async def serve(stream: INetStream) -> None:
        seen.append(stream)
        await handler(stream)

    async with open_host(new_identity()) as server, open_host(new_identity()) as client:
        set_handler(server, PROTOCOL, serve)
        await connect(client, listen_addrs(server)[0])
        stream = await open_stream(client, server.get_id().to_base58(), PROTOCOL)
        yield server, client, stream, seen


async def after_what_came_before(
    client: IHost, server: IHost, seen: list[INetStream], arrived: trio.Event
) -> None:
    """Open one more stream and wait until the server's handler has it: the server reads a connection's
    frames in order, so everything sent on the earlier streams has been taken in by then."""
    count = len(seen)
    ping = await open_stream(client, server.get_id().to_base58(), PROTOCOL)
    await ping.write(b"y")
    while len(seen) <= count:
        await arrived.wait()


def muxer(host: IHost, peer: IHost) -> Any:
    return host.get_network().get_connections(peer.get_id())[0].muxed_conn


async def test_a_stream_this_side_resets_lets_go_of_what_the_peer_sent() -> None:
    """drop_what_a_reset_stream_holds: 200 KiB unread on a stream the server resets are dropped at once,
    with the stream's entry (the library kept both for 60 s)."""
    assert YamuxStream.reset is yamux._reset_and_drop
    arrived = trio.Event()
    release = trio.Event()

    async def hold(stream: INetStream) -> None:
        arrived.set()
        await release.wait()

    with trio.fail_after(60):
        async with held_stream(hold) as (server, client, stream, seen):
            await stream.write(b"x" * (200 * 1024))
            await after_what_came_before(client, server, seen, arrived)
            victim = muxer(server, client)
            stream_id = getattr(seen[0], "muxed_stream").stream_id  # noqa: B009
            assert len(victim.stream_buffers[stream_id]) >= 200 * 1024 - 1024  # what the handshake left
            await seen[0].reset()
            assert stream_id not in victim.stream_buffers and stream_id not in victim.streams
            release.set()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def test_a_peer_that_ignores_the_yamux_window_cannot_fill_a_stream_buffer() -> None:
    """enforce_the_receive_window: raw yamux DATA frames past the 256 KiB window, on a stream the server
    does not read (py-libp2p 0.8.1 logged a warning per frame and buffered every byte): the buffer stays
    within the window and the warning is not logged."""
    assert Yamux.__init__ is yamux._yamux_init
    arrived = trio.Event()
    release = trio.Event()

    async def never_read(stream: INetStream) -> None:
        arrived.set()
        await release.wait()
        await stream.reset()

    records = Records()
    logging.getLogger(yamux.YAMUX_LOGGER).addHandler(records)
    try:
        with trio.fail_after(60):
            async with held_stream(never_read) as (server, client, stream, seen):
                await stream.write(b"x")
                while not seen:
                    await arrived.wait()
                stream_id = getattr(stream, "muxed_stream").stream_id  # noqa: B009
                chunk = b"\0" * (256 * 1024)
                frame = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, stream_id, len(chunk)) + chunk
                for _ in range(16):  # 4 MiB, 16 times the window, never waiting for credit
                    await muxer(client, server)._write_frame(frame)
                await after_what_came_before(client, server, seen, arrived)
                victim = muxer(server, client)
                assert sum(len(b) for b in victim.stream_buffers.values()) <= DEFAULT_WINDOW_SIZE
                release.set()
    finally:
        logging.getLogger(yamux.YAMUX_LOGGER).removeHandler(records)
    assert not [m for m in records.messages if "exceeded receive window" in m]


async def test_a_block_sized_write_goes_out_as_one_frame_over_64_kib() -> None:
    """send_large_frames: a 256 KiB write leaves in one secured write (the library cut 64 KiB frames)."""
    assert yamux_module.MAX_MESSAGE_SIZE == yamux.YAMUX_MAX_FRAME == 512 * 1024
    got = trio.Event()

    async def read_all(stream: INetStream) -> None:
        data = b""
        while len(data) < 256 * 1024:
            data += await stream.read(256 * 1024)
        got.set()

    with trio.fail_after(60):
        async with held_stream(read_all) as (server, client, stream, _seen):
            secured = muxer(client, server).secured_conn
            sizes: list[int] = []
            library_write = secured.write

            async def counted(data: bytes) -> None:
                sizes.append(len(data))
                await library_write(data)

            secured.write = counted
            await stream.write(b"z" * (256 * 1024))
            await got.wait()
    assert max(sizes) > 64 * 1024


def test_a_reader_returns_credit_at_half_its_window() -> None:
    """return_credit_at_half_window: the library's own reader of its tuning variable says off."""
    assert getattr(yamux_module, "_yamux_release_on_read")() is False  # noqa: B009


# -- the DHT ------------------------------------------------------------------------------------------


def test_one_dht_query_waits_three_seconds() -> None:
    """shorten_the_query_timeout: every library module that imported QUERY_TIMEOUT by name has ours."""
    assert kad_dht.DHT_QUERY_TIMEOUT == 3.0
    for module in kad_dht.QUERY_TIMEOUT_MODULES:
        assert getattr(module, "QUERY_TIMEOUT") == 3.0  # noqa: B009
    from libp2p.kad_dht import common

    assert "QUERY_TIMEOUT" in vars(common)  # the name the three modules import (its value stays 10 s)


def test_the_dht_handler_no_longer_warns_of_a_stream_that_simply_ended() -> None:
    """quiet_the_normal_end_of_a_stream: the library still logs exactly that record, and it is dropped;
    the same warning with any other error passes."""
    assert f'logger.warning("{kad_dht.READ_FAILED}", e)' in inspect.getsource(kad_dht_module)
    logger = logging.getLogger(kad_dht.KAD_LOGGER)

    def record(error: Exception) -> logging.LogRecord:
        return logger.makeRecord(
            logger.name, logging.WARNING, __file__, 1, kad_dht.READ_FAILED, (error,), None
        )

    assert not logger.filter(record(StreamEOF()))
    assert not logger.filter(record(DhtRefused("PUT_VALUE")))
    assert logger.filter(record(ValueError("a real failure")))
