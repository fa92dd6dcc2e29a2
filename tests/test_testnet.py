"""``scripts/testnet``: a local network of real daemons, driven as a user would (the real script as a
subprocess on a tmp dir), end to end: up, status, a file added on one node and fetched on another through
the DHT, stop and start of one node, down (no process and no listening port left), and its refusals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from node.fsutil import FileWatch

ROOT = Path(__file__).resolve().parent.parent
TESTNET = ROOT / "scripts" / "testnet"
SEALBOX_SCRIPT = ROOT / "scripts" / "sealbox"
ADDR_RE = re.compile(r"/ip4/127\.0\.0\.1/tcp/(\d+)/p2p/\w+")
LOG_TIMEOUT = 20.0


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}


def _run(tmp_path: Path, program: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *map(str, args)],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def _one_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("testnet: error: "), result.stderr
    return lines[0]


def _wait_for_log(path: Path, pattern: str, timeout: float = LOG_TIMEOUT) -> str:
    """The first line of a daemon's log file matching ``pattern``, waiting for the file to grow
    (inotify) rather than re-reading it on a timer."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    with FileWatch([path]) as changes:
        while True:
            for line in path.read_text(errors="replace").splitlines():
                if regex.search(line):
                    return line
            assert time.monotonic() < deadline, f"{path} has no line matching {pattern!r} after {timeout} s"
            changes.wait(deadline - time.monotonic())


def _runs(pid: int) -> bool:
    """Whether ``pid`` is a live process. An exited daemon is not the script's child: until init reaps
    it, it is a zombie, which runs nothing and holds no socket or lock."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _rows(out: str) -> dict[int, str]:
    """The table's rows by node number."""
    return {int(line.split()[0]): line for line in out.splitlines() if re.match(r"\d+\s{2,}", line)}


def _state(net: Path) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = json.loads((net / "testnet.json").read_text())["nodes"]
    return nodes


def _kill_leftovers(pids: set[int], net: Path) -> None:
    """Last resort after a failed test: SIGKILL any recorded pid still running one of the net's daemons."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(net).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_testnet_up_share_stop_start_down(tmp_path: Path) -> None:
    net = tmp_path / "net"
    pids: set[int] = set()
    ports: set[int] = set()

    def remember() -> None:
        for node in _state(net):
            if node["pid"] is not None:
                pids.add(node["pid"])
            match = ADDR_RE.fullmatch(node["addr"] or "")
            if match is not None:
                ports.add(int(match.group(1)))

    def testnet(*args: str) -> subprocess.CompletedProcess[str]:
        result = _run(tmp_path, TESTNET, "--dir", net, *args)
        if (net / "testnet.json").exists():
            remember()
        return result

    try:
        up = _ok(testnet("up", "--nodes", "3"))
        rows = _rows(up)
        assert sorted(rows) == [0, 1, 2]
        assert all(ADDR_RE.search(row) for row in rows.values()), rows
        assert "scripts/sealbox --repo" in up and "net/node-" in up, up
        ids = {node["index"]: node["peer_id"] for node in _state(net)}

        rows = _rows(_ok(testnet("status")))
        assert all("running" in rows[i] and ids[i] in rows[i] for i in range(3)), rows

        # the same dir again: refused while it runs
        assert "already runs" in _one_error(testnet("up", "--nodes", "3"))

        # a file added on node 0 is fetched by node 2's daemon, found through the DHT
        sample = tmp_path / "sample.bin"
        sample.write_bytes(os.urandom(300_000))
        link = _ok(_run(tmp_path, SEALBOX_SCRIPT, "--repo", net / "node-0", "add", sample)).strip()
        announced = _wait_for_log(net / "node-0" / "daemon.log", r"announced root \S+ to ")
        assert "to the DHT" in announced, announced
        copy = tmp_path / "copy.bin"
        _ok(_run(tmp_path, SEALBOX_SCRIPT, "--repo", net / "node-2", "get", link, "-o", copy))
        assert copy.read_bytes() == sample.read_bytes()
        _wait_for_log(net / "node-2" / "daemon.log", r"fetched root \S+ from 1 provider")

        # stop node 1: it shows stopped, the others run on
        old_pid = _state(net)[1]["pid"]
        _ok(testnet("stop", "1"))
        rows = _rows(_ok(testnet("status")))
        assert "stopped" in rows[1] and "running" not in rows[1], rows
        assert "running" in rows[0] and "running" in rows[2], rows
        assert not _runs(old_pid), f"node 1's daemon (pid {old_pid}) still runs"
        assert "not running" in _one_error(testnet("stop", "1"))

        # start it again: same identity, running, joined
        _ok(testnet("start", "1"))
        assert _state(net)[1]["peer_id"] == ids[1]
        rows = _rows(_ok(testnet("status")))
        assert "running" in rows[1] and ids[1] in rows[1], rows
        assert "already runs" in _one_error(testnet("start", "1"))

        # down: no process, no listening port left; the repos stay
        _ok(testnet("down"))
        for pid in pids:
            assert not _runs(pid), f"pid {pid} still runs after down"
        for port in ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                raise AssertionError(f"port {port} still accepts connections after down")
            except ConnectionRefusedError:
                pass
        assert all((net / f"node-{i}" / "identity").exists() for i in range(3))
        rows = _rows(_ok(testnet("status")))
        assert all("stopped" in row for row in rows.values()), rows
    finally:
        if (net / "testnet.json").exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                testnet("down")
        _kill_leftovers(pids, net)


def test_testnet_refusals_are_one_line(tmp_path: Path) -> None:
    net = tmp_path / "net"
    netns = _one_error(_run(tmp_path, TESTNET, "--dir", net, "up", "--nodes", "2", "--netns"), code=2)
    assert "not available yet" in netns
    assert not (net / "testnet.json").exists()
    assert "no testnet" in _one_error(_run(tmp_path, TESTNET, "--dir", net, "status"))
    assert "no testnet" in _one_error(_run(tmp_path, TESTNET, "--dir", net, "down"))
    _one_error(_run(tmp_path, TESTNET, "up"), code=2)  # --nodes is required
    _one_error(_run(tmp_path, TESTNET, "up", "--nodes", "0"), code=2)
    _one_error(_run(tmp_path, TESTNET, "frobnicate"), code=2)
    helps = _ok(_run(tmp_path, TESTNET, "--help"))
    assert all(command in helps for command in ("up", "status", "stop", "start", "down"))
    assert "NOT AVAILABLE YET" in _ok(_run(tmp_path, TESTNET, "up", "--help"))
