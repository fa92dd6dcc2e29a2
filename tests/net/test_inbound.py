"""Inbound connections: a node keeps taking new peers however many came and went before.

py-libp2p 0.8.1 held each inbound connection's slot until the swarm stopped (``free_inbound_slot_on_close`` in
``node/net/libp2p_patches/swarm.py``; tests/net/test_libp2p_patches.py has the other patches' tests): the
65th peer in a node's life was refused. Real hosts on 127.0.0.1, port 0, all in this process.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.network.stream.exceptions import StreamEOF
from multiaddr import Multiaddr

from node.net.errors import NetworkError
from node.net.host import (
    DEFAULT_MAX_CONNECTIONS,
    connect,
    listen_addrs,
    new_identity,
    open_host,
    open_stream,
    set_handler,
)

ECHO = "/sealbox-test/echo/1"

if TYPE_CHECKING:
    from trio_typing import TaskStatus


async def echo(stream: INetStream) -> None:
    data = b""
    while True:
        try:
            data += await stream.read(1024)
        except StreamEOF:
            break
    await stream.write(data)
    await stream.close()


class Watch(INotifee):
    """Counts a host's connections as they come and go; ``changed`` fires on each."""

    def __init__(self) -> None:
        self.changed = trio.Event()
        self.open = 0
        self.most = 0
        self.closed = 0

    def _fire(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.open += 1
        self.most = max(self.most, self.open)
        self._fire()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.open -= 1
        self.closed += 1
        self._fire()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self.changed.wait()


def watch(host: IHost) -> Watch:
    watcher = Watch()
    host.get_network().register_notifee(watcher)
    return watcher


def slots_in_use(host: IHost) -> int:
    return int(getattr(host.get_network(), "_inbound_limiter").borrowed_tokens)  # noqa: B009


async def visit(server: IHost, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A short-lived peer: a fresh identity connects, makes one round trip and leaves.

    ``task_status.started()`` once the round trip is done; the host then closes (0.2 s of the library's
    fixed sleeps) while the caller goes on.
    """
    async with open_host(new_identity()) as peer:
        await connect(peer, listen_addrs(server)[0])
        stream = await open_stream(peer, server.get_id().to_base58(), ECHO)
        await stream.write(b"hello")
        await stream.close()
        answer = b""
        while True:
            try:
                answer += await stream.read(1024)
            except StreamEOF:
                break
        assert answer == b"hello"
        task_status.started()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_500_peers_one_after_another_are_all_served_and_leave_nothing_behind() -> None:
    with trio.fail_after(240):
        async with open_host(new_identity()) as server:
            set_handler(server, ECHO, echo)
            watcher = watch(server)
            fds_before = open_fds()
            rss_warm = 0.0
            async with trio.open_nursery() as leaving:
                for count in range(1, 501):
                    await leaving.start(visit, server)
                    if count == 100:  # after the first 100: the allocator has grown to its working size
                        await watcher.until(lambda: watcher.closed >= 100)
                        gc.collect()
                        rss_warm = rss_mib()
            await watcher.until(lambda: watcher.closed >= 500 and watcher.open == 0)
            assert server.get_connected_peers() == []
            assert slots_in_use(server) == 0
            gc.collect()
            grown = rss_mib() - rss_warm
            print(f"after 500 peers: fds {fds_before} -> {open_fds()}, RSS +{grown:.1f} MiB since peer 100")
            assert open_fds() <= fds_before + 2
            assert grown < 25


async def test_100_peers_at_once_twice_over_are_all_served() -> None:
    """200 inbound connections in all, more than the node's 128 inbound slots: the second wave needs the
    first wave's slots back."""
    with trio.fail_after(240):
        async with open_host(new_identity(), max_connections=128) as server:
            set_handler(server, ECHO, echo)
            watcher = watch(server)
            for wave in (1, 2):
                served = await at_once(server, 100)
                assert served == 100, f"wave {wave}: {served} of 100 served"
                await watcher.until(lambda w=wave: watcher.closed >= 100 * w and watcher.open == 0)  # type: ignore[misc]
            assert watcher.most <= 128
            assert slots_in_use(server) == 0


async def at_once(server: IHost, count: int) -> int:
    """``count`` short-lived peers at the same time; how many were served."""
    served = 0

    async def one() -> None:
        nonlocal served
        await visit(server)
        served += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    return served


async def test_the_connection_limit_still_holds_and_frees_up_when_peers_leave() -> None:
    """A node with room for 8 takes 8 of 12 peers that stay, refuses the rest, and takes 8 new ones once
    they have left."""
    limit = 8
    with trio.fail_after(120):
        async with open_host(new_identity(), max_connections=limit) as server:
            watcher = watch(server)
            for round_ in (1, 2):
                connected = await stay_together(server, watcher, 12)
                assert connected == limit, f"round {round_}: {connected} connected"
                await watcher.until(lambda: watcher.open == 0)
            assert watcher.most <= limit
            assert slots_in_use(server) == 0


async def stay_together(server: IHost, watcher: Watch, count: int) -> int:
    """``count`` peers try to connect and stay until all have tried; how many the server took."""
    leave = trio.Event()
    tried = trio.Event()
    outcome: list[bool] = []

    async def stay() -> None:
        async with open_host(new_identity()) as peer:
            try:
                await connect(peer, listen_addrs(server)[0])
                outcome.append(True)
            except NetworkError:
                outcome.append(False)
            if len(outcome) == count:
                tried.set()
            await leave.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(stay)
        await tried.wait()
        await watcher.until(lambda: watcher.open == outcome.count(True))
        assert len(server.get_network().get_connections()) == outcome.count(True)
        leave.set()
    return outcome.count(True)


def test_the_regression_tests_above_go_past_the_default_connection_limit() -> None:
    assert DEFAULT_MAX_CONNECTIONS == 64
