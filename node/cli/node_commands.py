"""``sealbox daemon``, and ``status``, ``peers`` and ``address``, which ask the running one."""

from __future__ import annotations

import argparse
from typing import Any

from node.cli.common import daemon, repo_path, warn
from node.cli.output import Output, human
from node.daemon.api_client import NoDaemon
from node.daemon.errors import DaemonError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``daemon``, and ``status``, ``peers`` and ``address``, which ask the running one."""
    run = sub.add_parser(
        "daemon",
        parents=[common],
        help="run the node: serve and announce pinned roots, answer the CLI",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run this repo's node in the foreground (Ctrl-C or SIGTERM stops it): it serves and\n"
        "announces every pinned root, fetches links for 'get', and answers the other commands.\n"
        "Settings: REPO/config.toml (written with comments on first start); flags override them.",
        epilog="examples:\n"
        "  sealbox daemon\n"
        "  sealbox daemon --bootstrap /ip4/192.168.1.20/tcp/4710/p2p/12D3KooW...   # join a friend's node",
    )
    run.add_argument(
        "--listen", action="append", metavar="MULTIADDR", help="listen address (repeatable; overrides config)"
    )
    run.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="peer to join the DHT through, .../p2p/<id> (repeatable; overrides config)",
    )
    run.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="default: info"
    )
    run.set_defaults(func=cmd_daemon)

    _register_asking(sub, common)


def _register_asking(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``status``, ``peers`` and ``address``: what the running daemon says."""
    status = sub.add_parser(
        "status",
        parents=[common],
        help="show the running daemon's state",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the running daemon's peer id, listen addresses, peers, storage, announcements\n"
        "and what it served.",
        epilog="example:\n  sealbox status --json",
    )
    status.set_defaults(func=cmd_status)
    peers = sub.add_parser(
        "peers",
        parents=[common],
        help="list the peers the daemon is connected to",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the peers the running daemon is connected to, with their addresses.",
        epilog="example:\n  sealbox peers",
    )
    peers.set_defaults(func=cmd_peers)
    address = sub.add_parser(
        "address",
        parents=[common],
        help="print the addresses other peers can use to reach this node (for their --bootstrap)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the addresses other peers can use to reach this node, one per line, each\n"
        "ending in /p2p/<peer id>: give one to a friend for their --bootstrap. A node listening on\n"
        "0.0.0.0 shows each of this machine's interface addresses. Needs a running daemon.",
        epilog="examples:\n"
        "  sealbox address\n"
        "  sealbox daemon --bootstrap /ip4/192.168.1.20/tcp/4710/p2p/12D3KooW...   # on the other machine",
    )
    address.set_defaults(func=cmd_address)


def _running(args: argparse.Namespace, path: str) -> Any:
    try:
        return daemon(args).call("GET", path)
    except NoDaemon:
        raise DaemonError(f"no daemon runs on {repo_path(args)}: start one with 'sealbox daemon'") from None


def cmd_status(args: argparse.Namespace) -> None:
    status = _running(args, "/v1/status")
    limit = status["storage_limit"]
    last = status["last_reprovide"]
    lines = [
        f"peer id    {status['peer_id']}",
        *(f"listening  {addr}" for addr in status["addrs"]),
        f"peers      {status['peers']}",
        f"stored     {status['blocks']} blocks, {human(status['stored_bytes'])}"
        f" (limit: {human(limit) if limit is not None else 'none'})",
        f"roots      {status['roots']} pinned, {status['roots_announced']} announced"
        f" (last announcement: {last or 'none yet'}); seeding {'on' if status['seed'] else 'off'}",
        f"served     {status['served_blocks']} blocks, {human(status['served_bytes'])} since start",
    ]
    Output(args).emit(status, "\n".join(lines))


def cmd_peers(args: argparse.Namespace) -> None:
    peers = _running(args, "/v1/peers")["peers"]
    text = "\n".join(f"{p['peer_id']}  {' '.join(p['addrs'])}".rstrip() for p in peers)
    if not peers and not args.json:
        warn("not connected to any peer (give the daemon a peer with --bootstrap MULTIADDR)")
    Output(args).emit(peers, text or None)


def cmd_address(args: argparse.Namespace) -> None:
    answer = _running(args, "/v1/address")
    if answer["loopback_only"]:
        warn(
            "only loopback addresses: a peer on another machine cannot reach this node; listen on a LAN"
            f" address, e.g. --listen {answer['listen_example']}"
        )
    Output(args).emit(answer, "\n".join(answer["addrs"]) or None)


def cmd_daemon(args: argparse.Namespace) -> None:
    from node.daemon import logs
    from node.daemon import main as daemon_main  # imports trio and libp2p: only for the daemon

    logs.configure(args.log_level)
    daemon_main.run(repo_path(args), listen=args.listen or (), bootstrap=args.bootstrap or ())
