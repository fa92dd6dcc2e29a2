#!/usr/bin/env python3
"""A local test network of real ``sealbox daemon`` processes on 127.0.0.1.

    scripts/testnet up --nodes 5 [--dir DIR]     # start 5 daemons; nodes 1..4 join node 0's DHT
    scripts/testnet status                       # who runs, peers of each
    scripts/testnet stop 3 / start 3             # stop a node (SIGTERM) / start it again, same identity
    scripts/testnet down [--purge]               # stop them all (and delete the repos)
    scripts/testnet up --nodes 5 --netns         # root: one network namespace per node, on a bridge
    scripts/testnet partition 3 / heal 3         # --netns: cut node 3's link / restore it

Node i's repo is DIR/node-i (default DIR: ./testnet), its log DIR/node-i/daemon.log; DIR/testnet.json
records pids, peer ids and addresses. The daemons run detached (own session) and outlive this script;
point the CLI at one with ``scripts/sealbox --repo DIR/node-i ...`` (the CLI reaches the daemon through
its repo's Unix socket, so this works in --netns mode too). Nothing listens or dials beyond 127.0.0.1,
or, with --netns, beyond the namespaces the testnet made. Waiting is on events: the log lines a daemon
writes ("ready: peer", "bootstrap: reached") and the exit of a process (pidfd), each within a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
from _repo_venv import VENV, reexec_in_venv  # noqa: E402 - standard library only

sys.path.insert(0, str(ROOT))

from node.store.fsutil import FileWatch  # noqa: E402 - standard library only, so it imports before the re-exec

LISTEN = "/ip4/127.0.0.1/tcp/0"
STATE_NAME = "testnet.json"
LOG_NAME = "daemon.log"
LOCK_NAME = "daemon.lock"  # node/daemon/main.py: flocked by the daemon for its life, holds its pid
READY_TIMEOUT = 30.0  # seconds for a daemon to log "ready" and, when it bootstraps, "bootstrap: reached"
STOP_GRACE = 15.0  # seconds between SIGTERM and SIGKILL (the daemon's own close is bounded by 5 s)
CLI_TIMEOUT = 30.0
MAX_NODES = 64
SUBNET = "10.47.0"  # --netns: node i is SUBNET.(i+1)/24 on a bridge inside the testnet's own hub namespace
NETNS_PORT = 4001
IP_TIMEOUT = 10.0


class TestnetError(Exception):
    """A failure reported as one line on stderr (exit 1)."""


class UsageError(TestnetError):
    """A refused request (exit 2)."""


def _sealbox() -> str:
    return str(VENV / "bin" / "sealbox")


def _cli_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"}


# -- state ---------------------------------------------------------------------------------------------


@dataclass
class NodeRecord:
    index: int
    repo: str
    pid: int | None
    peer_id: str | None
    addr: str | None
    running: bool
    netns: str | None = None  # --netns: the node's network namespace, its address, and whether it is cut off
    ip: str | None = None
    partitioned: bool = False


def _state_path(root: Path) -> Path:
    return root / STATE_NAME


@dataclass
class Testnet:
    nodes: list[NodeRecord]
    hub: str | None = None  # --netns: the namespace holding the bridge every node's link plugs into


def _load(root: Path) -> Testnet:
    path = _state_path(root)
    try:
        data = json.loads(path.read_text())
        return Testnet([NodeRecord(**node) for node in data["nodes"]], data.get("hub"))
    except FileNotFoundError:
        raise TestnetError(f"no testnet in {root}: start one with 'scripts/testnet up --nodes N'") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TestnetError(f"{path} is damaged ({exc}): remove it and the node repos by hand") from None


def _save(root: Path, net: Testnet) -> None:
    path = _state_path(root)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"hub": net.hub, "nodes": [asdict(n) for n in net.nodes]}, indent=2) + "\n")
    os.replace(tmp, path)


def _node(nodes: Sequence[NodeRecord], index: int) -> NodeRecord:
    if not 0 <= index < len(nodes):
        raise TestnetError(f"no node {index}: this testnet has nodes 0 to {len(nodes) - 1}")
    return nodes[index]


# -- network namespaces (--netns) ----------------------------------------------------------------------
#
# Nothing here touches the host's own network: the bridge lives in a namespace of the testnet's own (the
# hub), and node i's namespace holds one end of a veth pair (eth0, SUBNET.(i+1)/24) whose other end (n<i>)
# is a port of that bridge. ``partition`` sets the bridge port down: the node's link loses its carrier
# and its packets go nowhere, as when a cable is pulled; ``heal`` sets it up again.


def _ns_prefix(root: Path) -> str:
    """A namespace name prefix unique to the testnet directory (namespace names are system-wide)."""
    return "sbx-" + hashlib.sha256(str(root).encode()).hexdigest()[:8]


def _ip(*args: str) -> None:
    try:
        result = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise UsageError("--netns needs the 'ip' command (Debian package iproute2)") from None
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TestnetError(f"'ip {' '.join(args)}' failed: {reason}")


def _ns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def _check_netns() -> None:
    """Refuse --netns, saying why, where namespaces cannot be made (never fall back to loopback)."""
    if not sys.platform.startswith("linux"):
        raise UsageError("--netns needs Linux network namespaces: run 'up' without --netns")
    if os.geteuid() != 0:
        raise UsageError(
            "--netns needs root (it creates network namespaces, a bridge and veth links):"
            " run it as root, or 'up' without --netns"
        )
    if shutil.which("ip") is None:
        raise UsageError(
            "--netns needs the 'ip' command (Debian package iproute2): install it, or drop --netns"
        )
    probe = f"sbx-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except TestnetError as exc:
        raise UsageError(
            f"network namespaces are not available here ({exc}): run 'up' without --netns"
        ) from None
    _ip("netns", "del", probe)


def _make_namespaces(net: Testnet) -> None:
    assert net.hub is not None
    _ip("netns", "add", net.hub)
    _ip("-n", net.hub, "link", "set", "lo", "up")
    _ip("-n", net.hub, "link", "add", "br0", "type", "bridge")
    _ip("-n", net.hub, "link", "set", "br0", "up")
    for node in net.nodes:
        _make_node_namespace(net, node)


def _make_node_namespace(net: Testnet, node: NodeRecord) -> None:
    assert net.hub is not None and node.netns is not None and node.ip is not None
    port = f"n{node.index}"
    _ip("netns", "add", node.netns)
    _ip("-n", node.netns, "link", "set", "lo", "up")
    _ip("-n", net.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
    _ip("-n", net.hub, "link", "set", port, "master", "br0")
    _ip("-n", net.hub, "link", "set", port, "down" if node.partitioned else "up")
    _ip("-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
    _ip("-n", node.netns, "link", "set", "eth0", "up")


def _ensure_namespaces(net: Testnet) -> None:
    """Make again what a reboot (or a hand) removed, before a node starts."""
    assert net.hub is not None
    if not _ns_exists(net.hub):
        for node in net.nodes:
            if node.netns is not None and _ns_exists(node.netns):
                _ip("netns", "del", node.netns)
        _make_namespaces(net)
        return
    for node in net.nodes:
        if node.netns is not None and not _ns_exists(node.netns):
            _make_node_namespace(net, node)


def _remove_namespaces(net: Testnet) -> None:
    """Delete the testnet's namespaces (their links and the bridge go with them). Daemons stopped first."""
    names = [n.netns for n in net.nodes if n.netns is not None] + ([net.hub] if net.hub else [])
    for name in names:
        if _ns_exists(name):
            _ip("netns", "del", name)


def _set_link(net: Testnet, node: NodeRecord, up: bool) -> None:
    if net.hub is None or node.netns is None:
        raise UsageError(
            "partition and heal need a testnet started with 'up --netns' (on 127.0.0.1 no link can be cut)"
        )
    if _ns_exists(net.hub) and _ns_exists(node.netns):  # else (testnet down) it applies at the next start
        _ip("-n", net.hub, "link", "set", f"n{node.index}", "up" if up else "down")
    node.partitioned = not up


# -- processes -----------------------------------------------------------------------------------------


def _lock_pid(repo: Path) -> int | None:
    """The pid of the daemon holding ``repo``'s daemon lock, or None when no daemon holds it."""
    try:
        fd = os.open(repo / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a daemon runs; its pid is in the file
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _is_daemon_of(node: NodeRecord) -> bool:
    """Whether ``node.pid`` is the daemon running on the node's repo (never signal anything else)."""
    return node.pid is not None and _lock_pid(Path(node.repo)) == node.pid


def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` has exited (its pidfd becomes readable), or ``deadline``; True if it has.

    The daemon is not this script's child: init reaps it, and until then it is a zombie that runs
    nothing and holds no socket or lock."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(fd)
    return bool(readable)


def _terminate(nodes: Sequence[NodeRecord]) -> list[int]:
    """SIGTERM the daemons of ``nodes`` (checked by their lock), SIGKILL after STOP_GRACE; returns the
    indexes of the nodes that had to be killed."""
    targets = [n for n in nodes if _is_daemon_of(n)]
    for node in targets:
        assert node.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    killed = []
    for node in targets:
        assert node.pid is not None
        if not _wait_exit(node.pid, deadline):
            killed.append(node.index)
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGKILL)
            if not _wait_exit(node.pid, time.monotonic() + STOP_GRACE):
                raise TestnetError(f"node {node.index} (pid {node.pid}) did not exit even after SIGKILL")
    for node in nodes:
        node.running = False
    return killed


def _cli_status(repo: Path) -> dict[str, Any]:
    result = subprocess.run(
        [_sealbox(), "--repo", str(repo), "status", "--json"],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TestnetError(f"'sealbox --repo {repo} status' failed: {line}")
    status: dict[str, Any] = json.loads(result.stdout)
    return status


class LogFollower:
    """Reads the lines a daemon appends to its log, from the offset it had when the daemon started."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.lines: list[str] = []
        self._partial = b""

    def read(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        new = [line.decode("utf-8", "replace") for line in complete]
        self.lines.extend(new)
        return new

    def last(self) -> str:
        return self.lines[-1].strip() if self.lines else "(empty log)"


@dataclass
class Watch:
    """Wait for ``node``'s log to show each of ``wanted`` (regexes) in turn; ``failed`` ends the wait."""

    node: int
    log: LogFollower
    proc: subprocess.Popen[bytes]
    wanted: list[re.Pattern[str]]
    failed: re.Pattern[str] | None = None


def _follow(watches: Sequence[Watch], deadline: float) -> None:
    """Block until every watch has seen its lines, or fail (a daemon exits, logs a failure, or the
    deadline passes). Waits on events: inotify on the log files, a pidfd per daemon."""
    pending = [w for w in watches if w.wanted]
    with FileWatch([w.log.path for w in pending]) as changes, contextlib.ExitStack() as stack:
        exits = []
        for watch in pending:
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(watch.proc.pid)
                stack.callback(os.close, fd)
                exits.append(fd)
        while pending:
            for watch in list(pending):
                for line in watch.log.read():
                    if watch.failed is not None and watch.failed.search(line):
                        raise TestnetError(f"node {watch.node}: {line.strip()} (see {watch.log.path})")
                    if watch.wanted and watch.wanted[0].search(line):
                        watch.wanted.pop(0)
                if not watch.wanted:
                    pending.remove(watch)
                elif watch.proc.poll() is not None:
                    watch.log.read()
                    raise TestnetError(
                        f"node {watch.node}'s daemon exited ({watch.proc.returncode}): {watch.log.last()}"
                    )
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"node {w.node} ({w.wanted[0].pattern!r})" for w in pending)
                raise TestnetError(f"timed out after {READY_TIMEOUT:.0f} s waiting for {names}")
            changes.wait(deadline - time.monotonic(), also=exits)


READY = re.compile(r"ready: peer ")
JOINED = re.compile(r"bootstrap: reached 1 of 1 peer")
NOT_JOINED = re.compile(r"bootstrap: reached 0 of")


def _launch(node: NodeRecord, bootstrap: str | None) -> Watch:
    """Start ``node``'s daemon detached, its stderr appended to its log; returns what to wait for."""
    from node.errors import NodeError
    from node.store.repo import Repo

    repo = Path(node.repo)
    try:
        Repo.open(repo, create=True).close()  # the log goes inside: the repo must exist first
    except NodeError as exc:
        raise TestnetError(str(exc)) from None
    log_path = repo / LOG_NAME
    command = [_sealbox(), "--repo", str(repo), "daemon", "--listen", LISTEN]
    if node.netns is not None:  # same daemon, inside the node's namespace, on its address there
        listen = f"/ip4/{node.ip}/tcp/{NETNS_PORT}"
        command = [
            "ip",
            "netns",
            "exec",
            node.netns,
            _sealbox(),
            "--repo",
            str(repo),
            "daemon",
            "--listen",
            listen,
        ]
    if bootstrap is not None:
        command += ["--bootstrap", bootstrap]
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=_cli_env(),
            start_new_session=True,
        )
    node.pid = proc.pid
    node.running = True
    wanted = [READY, JOINED] if bootstrap is not None else [READY]
    return Watch(node.index, LogFollower(log_path, offset), proc, wanted, NOT_JOINED)


def _record_status(node: NodeRecord) -> None:
    status = _cli_status(Path(node.repo))
    node.peer_id = str(status["peer_id"])
    node.addr = str(status["addrs"][0])


# -- commands ------------------------------------------------------------------------------------------


def _display_dir(root: Path) -> str:
    return os.path.relpath(root) if not os.path.relpath(root).startswith("..") else str(root)


def _script(name: str) -> str:
    """How to run ``scripts/NAME`` from here (relative when under the working directory)."""
    script = ROOT / "scripts" / name
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else str(script)


def cmd_up(args: argparse.Namespace) -> None:
    if args.netns:
        _check_netns()
    root = Path(args.dir).absolute()
    if _state_path(root).exists():
        old = _load(root)
        if any(_is_daemon_of(n) for n in old.nodes):
            raise TestnetError(
                f"a testnet already runs in {root}: '{_script('testnet')} --dir {args.dir} down' first"
            )
        if old.hub is not None:
            _remove_namespaces(old)  # left by a testnet whose daemons are gone
    root.mkdir(parents=True, exist_ok=True)
    net = Testnet(
        [NodeRecord(i, str(root / f"node-{i}"), None, None, None, False) for i in range(args.nodes)]
    )
    nodes = net.nodes
    busy = [n.index for n in nodes if _lock_pid(Path(n.repo)) is not None]
    if busy:
        raise TestnetError(f"a daemon already runs on node {busy[0]}'s repo in {root}: stop it first")
    try:
        if args.netns:
            net.hub = f"{_ns_prefix(root)}-hub"
            for node in nodes:
                node.netns = f"{_ns_prefix(root)}-{node.index}"
                node.ip = f"{SUBNET}.{node.index + 1}"
            _save(root, net)
            _make_namespaces(net)
        first = _launch(nodes[0], None)
        _save(root, net)
        _follow([first], time.monotonic() + READY_TIMEOUT)
        _record_status(nodes[0])
        assert nodes[0].addr is not None
        watches = [_launch(node, nodes[0].addr) for node in nodes[1:]]
        _save(root, net)
        _follow(watches, time.monotonic() + READY_TIMEOUT)
        for node in nodes[1:]:
            _record_status(node)
        _save(root, net)
    except BaseException:
        _terminate(nodes)  # leave nothing half-started behind
        if net.hub is not None:
            _remove_namespaces(net)
            net.hub = None
        _save(root, net)
        raise
    print(_table(net, root))
    print()
    where = _display_dir(root)
    mode = f", each in its own network namespace on a bridge ({SUBNET}.0/24)" if net.hub else ""
    print(f"{len(nodes)} node(s) up{mode}.")
    print(f"Use a node with:  {_script('sealbox')} --repo {where}/node-N COMMAND")
    print(f"  e.g. {_script('sealbox')} --repo {where}/node-0 add FILE")
    print(f"Logs: {where}/node-N/{LOG_NAME}. Stop everything: {_script('testnet')} --dir {args.dir} down")


def _table(net: Testnet, root: Path, extra: dict[int, tuple[str, str]] | None = None) -> str:
    head = ["NODE", "PEER ID", "ADDRESS", "REPO"]
    if extra is not None:
        head[1:1] = ["STATE", "PEERS"]
    rows = [head]
    for n in net.nodes:
        row = [
            str(n.index),
            n.peer_id or "-",
            n.addr or "-",
            os.path.join(_display_dir(root), f"node-{n.index}"),
        ]
        if extra is not None:
            row[1:1] = list(extra[n.index])
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_status(args: argparse.Namespace) -> None:
    root = Path(args.dir).absolute()
    net = _load(root)
    extra: dict[int, tuple[str, str]] = {}
    for n in net.nodes:
        cut = ", partitioned" if n.partitioned else ""
        if _is_daemon_of(n):
            try:
                peers = str(_cli_status(Path(n.repo))["peers"])
            except TestnetError:
                peers = "?"
            extra[n.index] = (f"running (pid {n.pid}){cut}", peers)
        else:
            extra[n.index] = (f"stopped{cut}", "-")
    print(_table(net, root, extra))


def cmd_stop(args: argparse.Namespace) -> None:
    root = Path(args.dir).absolute()
    net = _load(root)
    node = _node(net.nodes, args.node)
    if not _is_daemon_of(node):
        node.running = False
        _save(root, net)
        raise TestnetError(f"node {node.index} is not running")
    killed = _terminate([node])
    _save(root, net)
    how = " (killed: it did not stop on SIGTERM)" if killed else ""
    print(f"node {node.index} stopped{how}")


def cmd_start(args: argparse.Namespace) -> None:
    root = Path(args.dir).absolute()
    net = _load(root)
    node = _node(net.nodes, args.node)
    if _is_daemon_of(node) or _lock_pid(Path(node.repo)) is not None:
        raise TestnetError(f"node {node.index} already runs")
    if net.hub is not None:
        _ensure_namespaces(net)
    running = [n for n in net.nodes if n is not node and _is_daemon_of(n)]
    # node 0 first (nodes are in order), else any running node; a partitioned one cannot be reached
    reachable = [n for n in running if not (n.partitioned or node.partitioned)]
    via = reachable[0] if reachable else None
    bootstrap = None
    if via is not None:
        _record_status(via)
        bootstrap = via.addr
    watch = _launch(node, bootstrap)
    _save(root, net)
    try:
        _follow([watch], time.monotonic() + READY_TIMEOUT)
        _record_status(node)
    except BaseException:
        _terminate([node])
        _save(root, net)
        raise
    _save(root, net)
    joined = (
        f", joined through node {via.index}" if via is not None else " (no other node reachable: not joined)"
    )
    print(f"node {node.index} running: peer {node.peer_id} at {node.addr}{joined}")


def _cmd_link(args: argparse.Namespace, *, up: bool) -> None:
    root = Path(args.dir).absolute()
    net = _load(root)
    node = _node(net.nodes, args.node)
    _set_link(net, node, up=up)
    _save(root, net)
    if up:
        print(f"node {node.index} healed: its link is up again")
    else:
        print(f"node {node.index} partitioned: its link is down, nothing reaches it or leaves it")


def cmd_partition(args: argparse.Namespace) -> None:
    _cmd_link(args, up=False)


def cmd_heal(args: argparse.Namespace) -> None:
    _cmd_link(args, up=True)


def cmd_down(args: argparse.Namespace) -> None:
    root = Path(args.dir).absolute()
    net = _load(root)
    killed = _terminate(net.nodes)
    if net.hub is not None:
        _remove_namespaces(net)
        for node in net.nodes:
            node.partitioned = False
    _save(root, net)
    if killed:
        print(f"killed node(s) {', '.join(map(str, killed))}: they did not stop on SIGTERM")
    if args.purge:
        for n in net.nodes:
            shutil.rmtree(n.repo, ignore_errors=True)
        _state_path(root).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            root.rmdir()  # only if nothing else is in it
        print(f"testnet in {_display_dir(root)} stopped and deleted")
    else:
        print(f"testnet in {_display_dir(root)} stopped (repos kept; --purge deletes them)")


# -- command line --------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"testnet: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_NODES}")
    return value


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument(
        "--dir", default=argparse.SUPPRESS, help="the testnet's directory (default: ./testnet)"
    )
    parser = Parser(
        prog="scripts/testnet",
        description="A local test network of real sealbox daemons on 127.0.0.1 (or, with 'up --netns', "
        "each in its own network namespace), each with its own repo DIR/node-i (log: DIR/node-i/daemon.log). "
        "Node 0 starts first; the others bootstrap from it.",
        epilog="Use a node with: scripts/sealbox --repo DIR/node-i COMMAND. Errors: one line on stderr, "
        "exit 1 (2 for usage errors and refused options).",
    )
    parser.add_argument("--dir", default="testnet", help="the testnet's directory (default: ./testnet)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    up = sub.add_parser(
        "up",
        parents=[common],
        help="start N nodes and wait until all are ready and joined",
        description="Start N daemons (listening on 127.0.0.1, port chosen by the system): node 0, then "
        "nodes 1..N-1 bootstrapping from node 0. Returns when every node is ready and has joined; prints "
        "the nodes. Refused if DIR already holds a running testnet.",
    )
    up.add_argument("--nodes", type=_node_count, required=True, metavar="N", help=f"1 to {MAX_NODES}")
    up.add_argument(
        "--netns",
        action="store_true",
        help=f"root only: each node in its own network namespace, address {SUBNET}.(i+1) on a bridge "
        "of the testnet's own (the host's network is not touched), so that 'partition' can cut a node off; "
        "refused (exit status 2) where namespaces cannot be made",
    )
    up.set_defaults(func=cmd_up)

    status = sub.add_parser(
        "status",
        parents=[common],
        help="show each node: running or stopped, peers, peer id, address",
        description="Show each node: running (pid) or stopped, its peer count, peer id, address and repo.",
    )
    status.set_defaults(func=cmd_status)

    node_commands: list[tuple[str, Callable[[argparse.Namespace], None], str, str]] = [
        (
            "stop",
            cmd_stop,
            "stop one node (SIGTERM, wait for it to exit)",
            f"SIGTERM node NODE's daemon and wait for it to exit (SIGKILL after {STOP_GRACE:.0f} s).",
        ),
        (
            "start",
            cmd_start,
            "start a stopped node again (same identity) and wait until it is ready",
            "Start node NODE's daemon again on its repo (same peer id), bootstrapping from node 0, or from "
            "another running node if node 0 is stopped; wait until it is ready and joined.",
        ),
        (
            "partition",
            cmd_partition,
            "--netns: cut one node off the network (its link goes down)",
            "Set NODE's port on the testnet's bridge down: its link loses carrier and no packet reaches it "
            "or leaves it, as when a cable is pulled (its connections stall and time out). Only for a "
            "testnet started with 'up --netns'.",
        ),
        (
            "heal",
            cmd_heal,
            "--netns: put a partitioned node back on the network",
            "Set NODE's port on the testnet's bridge up again.",
        ),
    ]
    for name, func, help_text, description in node_commands:
        command = sub.add_parser(name, parents=[common], help=help_text, description=description)
        command.add_argument("node", type=int, metavar="NODE", help="node number")
        command.set_defaults(func=func)

    down = sub.add_parser(
        "down",
        parents=[common],
        help="stop every node (SIGTERM, SIGKILL after a grace period)",
        description=f"SIGTERM every node's daemon (after checking, by its repo's daemon lock, that the pid "
        f"is that daemon), wait for all to exit, SIGKILL any still running after {STOP_GRACE:.0f} s. The "
        "repos are kept unless --purge. With --netns, the namespaces are deleted too.",
    )
    down.add_argument("--purge", action="store_true", help="also delete the node repos and testnet.json")
    down.set_defaults(func=cmd_down)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except UsageError as exc:
        print(f"testnet: error: {exc}", file=sys.stderr)
        return 2
    except TestnetError as exc:
        print(f"testnet: error: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"testnet: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"testnet: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("testnet: error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    reexec_in_venv(__file__)
    sys.exit(main())
