"""Drive ``scripts/testnet`` and the ``sealbox`` CLI as a user would, for the tests that need a network of
real daemon processes (``test_testnet.py``, ``test_e2e.py``).

Every wait is on an event (a log line appended, seen through inotify; a process exit) within a deadline.
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

from node.store.fsutil import FileWatch
from tests.helpers import SEALBOX

ROOT = Path(__file__).resolve().parent.parent
TESTNET = ROOT / "scripts" / "testnet"
ADDR_RE = re.compile(r"/ip4/(\d+\.\d+\.\d+\.\d+)/tcp/(\d+)/p2p/\w+")
LOG_TIMEOUT = 20.0
RUN_TIMEOUT = 120.0


def env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}


def run(
    home: Path, program: str | Path, *args: str | Path, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program), *map(str, args)],
        env=env(home),
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str], code: int = 1, prefix: str = "testnet") -> str:
    """A failure of the expected shape: exit ``code``, one line on stderr starting ``PREFIX: error:``."""
    assert result.returncode == code, (result.args, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: error: "), result.stderr
    return lines[0]


def wait_for_log(path: Path, pattern: str, timeout: float = LOG_TIMEOUT, after: int = 0) -> str:
    """The first line of a daemon's log file, from byte ``after`` on, matching ``pattern``; waits for
    the file to grow (inotify) rather than re-reading it on a timer."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    with FileWatch([path]) as changes:
        while True:
            with open(path, "rb") as f:
                f.seek(after)
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if regex.search(line):
                    return line
            assert time.monotonic() < deadline, f"{path} has no line matching {pattern!r} after {timeout} s"
            changes.wait(deadline - time.monotonic())


def runs(pid: int) -> bool:
    """Whether ``pid`` is a live process. An exited daemon is not the script's child: until init reaps
    it, it is a zombie, which runs nothing and holds no socket or lock."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def rows(out: str) -> dict[int, str]:
    """The rows of a testnet table by node number."""
    return {int(line.split()[0]): line for line in out.splitlines() if re.match(r"\d+\s{2,}", line)}


def namespaces() -> set[str]:
    """The named network namespaces on this machine."""
    try:
        return {p.name for p in Path("/run/netns").iterdir()}
    except FileNotFoundError:
        return set()


class Testnet:
    """A testnet in ``root`` (``scripts/testnet --dir root``), with the CLI pointed at its nodes.

    Remembers every pid and port it saw, so that :meth:`cleanup` can check (and, after a failed test,
    enforce) that nothing is left behind.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.pids: set[int] = set()
        self.ports: set[tuple[str, int]] = set()

    def testnet(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        result = run(self.home, TESTNET, "--dir", self.root, *args)
        if (self.root / "testnet.json").exists():
            for node in self.state():
                if node["pid"] is not None:
                    self.pids.add(node["pid"])
                match = ADDR_RE.fullmatch(node["addr"] or "")
                if match is not None:
                    self.ports.add((match.group(1), int(match.group(2))))
        return result

    def state(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = json.loads((self.root / "testnet.json").read_text())["nodes"]
        return nodes

    def repo(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def log(self, node: int) -> Path:
        return self.repo(node) / "daemon.log"

    def log_size(self, node: int) -> int:
        return self.log(node).stat().st_size

    def cli(self, node: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run(self.home, SEALBOX, "--repo", self.repo(node), *args)

    def cli_process(self, node: int, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SEALBOX, "--repo", str(self.repo(node)), *map(str, args)],
            env=env(self.home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self, node: int) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(ok(self.cli(node, "status", "--json")))
        return status

    def add(self, node: int, path: Path, *args: str) -> str:
        """Add ``path`` on ``node`` and wait until the node has announced it; returns the link."""
        offset = self.log_size(node)
        link = ok(self.cli(node, "add", path, *args)).strip()
        line = wait_for_log(self.log(node), r"announced root \S+ to ", after=offset)
        assert "to the DHT" in line, line
        return link

    def leftovers(self) -> list[str]:
        """What still runs or listens among what this testnet started."""
        left = [f"pid {pid}" for pid in self.pids if runs(pid)]
        for host, port in self.ports:
            if host != "127.0.0.1":
                continue  # --netns addresses are gone with their namespaces
            with contextlib.suppress(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=5).close()
                left.append(f"port {port}")
        return left

    def cleanup(self) -> None:
        """After a test: ``down``, then SIGKILL any recorded pid still running one of this net's daemons."""
        if (self.root / "testnet.json").exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.testnet("down")
        for pid in self.pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
