"""The long-lived node: ``sealbox daemon``.

``serve`` is the root nursery: the libp2p host (identity from ``REPO/identity``; on the default port,
or a random one when that is taken), the DHT (opened before any connection, then bootstrapped;
node/net/bootstrap.py redials lost bootstrap peers with backoff), and when seeding the block
server and the reprovider announcing every pinned root; and the control API on ``REPO/api.sock``
(node/daemon/control.py). ``main`` adds the process's concerns: SIGINT/SIGTERM, which cancel ``serve``,
and SIGUSR1 task dumps (node/daemon/taskdump.py); everything then closes within a few seconds (the
host's close is bounded by ``node.net.host.CLOSE_TIMEOUT``) and the socket and token are removed.
``run`` is what ``sealbox daemon`` calls, once node/daemon/logs.py has set the log levels.

Only one daemon may hold a repo: ``REPO/daemon.lock`` is flocked for the daemon's life (the kernel drops
the lock if the process dies, so a crash never leaves the repo locked).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from node.daemon import api, api_files
from node.daemon.config import Config, load_config
from node.daemon.control import Control, NodeState
from node.daemon.errors import DaemonError
from node.daemon.taskdump import serve_task_dumps
from node.errors import single_exception
from node.net.bootstrap import keep_bootstrap
from node.net.dht import Dht, open_dht, serve_reprovider
from node.net.exchange import BlockServer
from node.net.host import DEFAULT_PORT, any_port_if_taken, listen_addrs, open_host
from node.net.identity import load_or_create_identity
from node.store.repo import Repo

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"


@dataclass(frozen=True)
class Running:
    """What ``serve`` reports once it answers on its socket."""

    peer_id: str
    addrs: tuple[str, ...]
    socket: Path


@contextlib.contextmanager
def hold_daemon_lock(repo_path: Path) -> Iterator[None]:
    """Hold ``REPO/daemon.lock`` (flock) for the block; refuse if another daemon holds it."""
    path = repo_path / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {pid})" if pid.isdigit() else ""
            raise DaemonError(f"another daemon{who} already runs on {repo_path}: stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def serve(
    repo_path: Path,
    *,
    listen: Sequence[str] = (),
    bootstrap: Sequence[str] = (),
    task_status: TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node on ``repo_path`` until cancelled. ``listen`` / ``bootstrap`` override the config."""
    repo = Repo.open(repo_path, create=True)
    try:
        config = load_config(repo_path).override(listen=listen, bootstrap=bootstrap)
        repo.blocks.set_limit(config.storage_limit)  # checked as each block is written
        sock = api_files.socket_path(repo_path)
        with hold_daemon_lock(repo_path):
            identity = load_or_create_identity(repo_path)
            token = api_files.new_token(repo_path)
            try:
                await _serve_node(repo, config, identity, token, sock, task_status)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    api_files.token_path(repo_path).unlink()
    finally:
        repo.close()


async def _serve_node(
    repo: Repo,
    config: Config,
    identity: bytes,
    token: str,
    sock: Path,
    task_status: TaskStatus[Running],
) -> None:
    async with open_host(identity, _fixed_or_any(config.listen)) as host, open_dht(host) as dht:
        server = BlockServer(repo.blocks)
        if config.seed:
            server.install(host)
        state = NodeState()
        async with trio.open_nursery() as nursery:
            control = Control(repo, host, dht, config, state, nursery, server)
            await nursery.start(partial(api.serve, sock, token, control.routes()))
            nursery.start_soon(_network, repo, dht, config, state)
            running = Running(host.get_id().to_base58(), tuple(listen_addrs(host)), sock)
            log.info(  # no socket path: logs hold no path (the socket is always REPO/api.sock)
                "ready: peer %s listening on %s; control socket open; seed %s; %d bootstrap peer(s)",
                running.peer_id,
                " ".join(running.addrs),
                "on" if config.seed else "off",
                len(config.bootstrap),
            )
            task_status.started(running)


async def _network(repo: Repo, dht: Dht, config: Config, state: NodeState) -> None:
    """Join the DHT through the bootstrap peers, then keep announcing the pinned roots."""
    async with trio.open_nursery() as nursery:
        if config.bootstrap:
            await _join(dht, config.bootstrap)
            nursery.start_soon(keep_bootstrap, dht, config.bootstrap)
        if config.seed:

            def roots() -> list[bytes]:
                return [pin.root for pin in repo.pins()]

            await serve_reprovider(dht, roots, config.reprovide_interval, announced=state.on_announced)


async def _join(dht: Dht, bootstrap: Sequence[str]) -> None:
    reached = await dht.bootstrap(bootstrap)
    level = logging.INFO if reached else logging.WARNING
    log.log(level, "bootstrap: reached %d of %d peer(s)", reached, len(bootstrap))


def _fixed_or_any(listen: Sequence[str]) -> list[str]:
    """``listen``, with an address on the default port (``DEFAULT_PORT``) that something else holds
    (another node on this machine) moved to a random port, with a warning: the node still starts, and
    the log says that the address others knew will not reach it. Any other port in use is refused."""
    out = []
    for addr in listen:
        moved = any_port_if_taken(addr, DEFAULT_PORT)
        if moved != addr:
            log.warning(
                "listen: port %d is taken (another node on this machine?); listening on a random port"
                " instead: peers that know this node's usual address will not reach it ('sealbox address'"
                " prints the new one)",
                DEFAULT_PORT,
            )
        out.append(moved)
    return out


# -- the process --------------------------------------------------------------------------------------


async def main(repo_path: Path, *, listen: Sequence[str] = (), bootstrap: Sequence[str] = ()) -> None:
    """``serve`` until SIGINT or SIGTERM, then stop gracefully. Errors come out unwrapped."""
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.info("stopping (%s)", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(serve_task_dumps)
                await serve(repo_path, listen=listen, bootstrap=bootstrap)
        log.info("stopped")
    except BaseExceptionGroup as group:
        leaf = single_exception(group)
        if leaf is group:
            raise
        raise leaf from None


def run(repo_path: Path, *, listen: Sequence[str] = (), bootstrap: Sequence[str] = ()) -> None:
    trio.run(partial(main, repo_path, listen=listen, bootstrap=bootstrap))
