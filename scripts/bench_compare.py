#!/usr/bin/env python3
"""Benchmark: Sealbox against aria2c (BitTorrent), plain HTTP and a raw libp2p stream, on loopback.

Needs, besides the repo's venv: ``apt-get install aria2 mktorrent curl`` (Debian/Ubuntu; aria2 gives
``aria2c``). The script checks for the tools first and says what is missing.

A SIZE random file (default 256 MiB) is moved from one seeder to fresh leechers, RUNS times (default 3)
per comparison, the runs of every tool interleaved; medians are reported. Every time is wall time of
the real command, client start-up included (1 MB = 10^6 bytes):

1 seeder -> 1 leecher
  Sealbox    a testnet of 2 daemons (scripts/testnet.py); ``sealbox add`` on node 0, then (not timed)
             wait until node 0's log shows the root announced on the DHT; timed: ``sealbox get LINK -o
             OUT`` on node 1 (its daemon finds node 0 through the DHT), from its start to its exit.
  aria2c     a private .torrent (``mktorrent -p``) announcing to a tracker of this script on 127.0.0.1
             (scripts/bt_tracker.py); the seeder is ``aria2c -V`` on the original file (not timed until
             the tracker has its "complete" announce); timed: a leecher ``aria2c --seed-time=0`` from
             its start to its exit (the file complete and hash-checked).
  HTTP       ``python -m http.server --bind 127.0.0.1`` serving the file; timed: ``curl -o OUT``.
  raw stream scripts/bench_stream.py (one py-libp2p noise+yamux stream between two processes), run
             with the same size; it times first byte to last byte, without process start-up.
1 seeder -> 4 leechers, started together (the time until all four have the exact file)
  Sealbox    a testnet of 5 daemons; 4 ``sealbox get`` at once; their daemons also serve each other.
  aria2c     4 leechers at once, which stay and seed (``--seed-ratio=0.0``) until all four are
             complete, as Sealbox's daemons do; each leecher's time runs from its start to aria2c's
             ``--on-bt-download-complete`` hook; then they are stopped.
The 1->1 aria2c runs are also shown timed to that hook (the file complete, before aria2c's shutdown:
a "stopped" announce, then exit, about 2 s on its 1-second ticks).

Every run starts from empty leechers (a fresh testnet per Sealbox run; fresh directories otherwise)
and checks the sha256 of every copy. aria2c runs with DHT, LPD and peer exchange off, bound to
127.0.0.1, no config file, no file allocation; the torrent is private and lists only the local tracker.

Network: as root, where ``unshare`` and ``ip`` exist, the script re-executes itself in a new network
namespace (``unshare -n``) in which only ``lo`` is up, so nothing can leave the machine; otherwise
everything runs on the host's loopback (every server binds 127.0.0.1, every client dials 127.0.0.1).

    scripts/bench_compare.py [--size 256MiB] [--runs 3] [--json PATH] [--readme | --readme-preview]
    scripts/bench_compare.py --from-json PATH --readme     # the doc's block from an earlier run's JSON

Printed: machine details, load averages, a table of times, MB/s, ratios (Sealbox's speed / the
other's) and the CPU seconds all the processes of a transfer used (daemons and get clients for
Sealbox, seeder and leechers otherwise: on a busy machine wall times swell, CPU seconds much less),
and the goals (1->1: Sealbox faster than aria2c; 1->4: Sealbox's time within 1.5 x
aria2c's). ``--json`` writes the same, with every run. ``--readme`` rewrites the block between
``<!-- bench_compare -->`` and ``<!-- /bench_compare -->`` in docs/performance.md (added at its end if
absent); ``--readme-preview`` prints that block instead.

Run it as scripts/bench_compare.py (it re-executes itself under the repo's .venv, like
scripts/testnet.py; SEALBOX_VENV names another venv). Everything lives in a temporary directory,
deleted at the end (``--keep DIR`` keeps it). Whatever happens (an error, Ctrl-C, SIGTERM) the
daemons (``testnet down --purge``), aria2c processes, the tracker and the HTTP server are stopped.
Exit status: 0 when every run succeeded, 1 when some failed (the others are still reported), 2 for
usage errors and missing tools.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from _readme import PERFORMANCE, WRAP, markers, update_block  # noqa: E402 - standard library only
from _repo_venv import reexec_in_venv  # noqa: E402 - standard library only

sys.path.insert(0, str(ROOT))

# standard library only (and node.store.fsutil), so they import before the re-exec
import bench_testnet as bt  # noqa: E402
from bt_tracker import Tracker  # noqa: E402

from node.store.fsutil import FileWatch  # noqa: E402

MB = 1e6
MIB = 1 << 20
NETNS_ENV = "SEALBOX_BENCH_COMPARE_NETNS"  # set in the re-executed copy that runs inside unshare -n
UP_TIMEOUT = 300.0
DOWN_TIMEOUT = 120.0
SEED_TIMEOUT = 180.0  # seconds for aria2c's seeder to hash-check the file and announce it complete
STOP_GRACE = 10.0
MARK_START, MARK_END = markers("bench_compare")
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy"}
TOOLS = {"aria2c": "aria2", "mktorrent": "mktorrent", "curl": "curl"}
CASES = ("sealbox-1", "aria2c-1", "http-1", "stream-1", "sealbox-4", "aria2c-4")
ONE = ("sealbox-1", "aria2c-1", "aria2c-1c", "http-1", "stream-1")  # table rows, in order
FOUR = ("sealbox-4", "aria2c-4")
ORDER = ONE + FOUR
ONLY = {  # --only NAME: the cases it selects
    "sealbox": ("sealbox-1", "sealbox-4"),
    "aria2c": ("aria2c-1", "aria2c-4"),
    "http": ("http-1",),
    "stream": ("stream-1",),
}
LABELS = {
    "sealbox-1": "Sealbox (add on a daemon, get on another)",
    "aria2c-1": "aria2c -> aria2c (BitTorrent, local tracker)",
    "aria2c-1c": "  aria2c, same runs, until its file is complete (b)",
    "http-1": "HTTP (python -m http.server -> curl)",
    "stream-1": "raw py-libp2p noise+yamux stream (a)",
    "sealbox-4": "Sealbox (4 gets at once, 5 daemons)",
    "aria2c-4": "aria2c (4 leechers at once, staying)",
}


class BenchError(Exception):
    """A failure that stops the benchmark, reported as one line on stderr (exit 1)."""


class RunFailed(Exception):
    """One run of one case failed: recorded, and the benchmark goes on."""


def _say(message: str) -> None:
    """Progress, on stderr: stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _env() -> dict[str, str]:
    """The environment of every tool: no proxy (curl and aria2c would use one), no SEALBOX_REPO."""
    return {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS and k != "SEALBOX_REPO"}


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if text:
            return " | ".join(text[-lines:])
    return "no output"


# -- the network and the tools -------------------------------------------------------------------------


def enter_network(host_loopback: bool) -> str:
    """Where the benchmark runs: re-executes this script under ``unshare -n`` when root can (and this
    is not that copy already); in that copy brings ``lo`` up. Returns the description printed."""
    if os.environ.get(NETNS_ENV) == "1":
        result = subprocess.run(
            ["ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=10, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"'ip link set lo up' failed in the new namespace: {result.stderr.strip()}")
        return "a private network namespace (unshare -n, only lo up): nothing can leave this machine"
    if host_loopback:
        return "the host's loopback, 127.0.0.1 (--host-loopback)"
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if os.geteuid() != 0 or unshare is None or ip is None:
        why = "not root" if os.geteuid() != 0 else "no 'unshare' or 'ip' (util-linux, iproute2)"
        return f"the host's loopback, 127.0.0.1 ({why}: no private network namespace)"
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"the host's loopback, 127.0.0.1 ('unshare -n' refused: {reason})"
    _say("re-executing under 'unshare -n' (a network namespace of its own, only lo)")
    env = {**os.environ, NETNS_ENV: "1"}
    argv = [unshare, "-n", "--", sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execve(unshare, argv, env)


def missing_tools(cases: Sequence[str]) -> list[str]:
    needed = set()
    if any(c.startswith("aria2c") for c in cases):
        needed |= {"aria2c", "mktorrent"}
    if "http-1" in cases:
        needed.add("curl")
    return sorted(t for t in needed if shutil.which(t) is None)


def tool_version(cmd: list[str]) -> str:
    """The first line of ``cmd``'s output, up to a parenthesis: "aria2 version 1.36.0", "curl 7.88.1"."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return f"{cmd[0]}: not installed"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].split(" (")[0].strip() if lines else "?"


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point that contains it)."""
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    return kind


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now (held together while chosen)."""
    import socket

    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_of(pid: int | None) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far (/proc/PID/stat), None if gone."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_busy(seconds: float = 1.0) -> float:
    """How busy the machine's CPUs are, 0 to 1, over ``seconds`` (/proc/stat): a check, before and after
    the benchmark, that no other work ran (the load average lags by minutes)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (and theirs), so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_delta(before: Sequence[float | None], after: Sequence[float | None]) -> float:
    return sum(b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None)


# -- what is started, and its teardown -----------------------------------------------------------------


@dataclass
class Started:
    """Everything the benchmark started and has not stopped yet, for the teardown."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    testnets: list[Path] = field(default_factory=list)
    gets: list[bt.Get] = field(default_factory=list)
    tracker: Tracker | None = None
    keep: bool = False  # --keep: stop the testnets but keep their repos and logs

    def stop_procs(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """SIGTERM ``procs``, SIGKILL those still running after STOP_GRACE, reap them all."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc in self.procs:
                self.procs.remove(proc)

    def down(self, root: Path) -> None:
        """Stop a testnet and (unless --keep) delete it."""
        if (root / bt.STATE_NAME).exists():
            bt.testnet(root, "down", *([] if self.keep else ["--purge"]), timeout=DOWN_TIMEOUT)
        if root in self.testnets:
            self.testnets.remove(root)
        if not self.keep:
            shutil.rmtree(root, ignore_errors=True)

    def teardown(self) -> None:
        """Stop everything, whatever happened; not interruptible (a second Ctrl-C is ignored, and so it
        is by 'testnet down', which inherits the ignored SIGINT)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bt.kill_gets(self.gets)
        self.gets.clear()
        self.stop_procs(list(self.procs))
        for root in list(self.testnets):
            _say(f"stopping the testnet in {root}")
            try:
                self.down(root)
            except bt.BenchError as exc:
                print(f"bench_compare: error: {exc}", file=sys.stderr)
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


# -- one run of each case ------------------------------------------------------------------------------


@dataclass
class Run:
    """One run of one case: each leecher's seconds (start -> the exact file), and the time until all
    had it (from the first start)."""

    seconds: list[float]
    wall: float
    load: str
    cpu: float | None  # CPU seconds (user + system) of every process of the transfer, during it
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    src: Path
    sha256: str
    started: Started
    torrent: Path | None = None
    info_hash: bytes | None = None
    http_port: int | None = None
    http_pid: int | None = None

    @property
    def size(self) -> int:
        return int(self.args.size)

    # -- Sealbox ---------------------------------------------------------------------------------------

    def sealbox(self, leechers: int, run: int) -> Run:
        root = self.work / f"sealbox-1to{leechers}-run{run}"
        load = _loadavg()
        self.started.testnets.append(root)
        try:
            bt.testnet(root, "up", "--nodes", str(leechers + 1), timeout=UP_TIMEOUT)
            nodes: list[dict[str, Any]] = json.loads((root / bt.STATE_NAME).read_text())["nodes"]
            repos = [Path(n["repo"]) for n in nodes]
            added, announce_s = bt.add_and_wait_announce(repos[0], nodes[0]["pid"], self.src)
            daemons_before = [cpu_of(n["pid"]) for n in nodes]
            gets = self.started.gets
            gets.extend(bt.start_gets(root, range(1, leechers + 1), str(added["link"])))
            bt.wait_gets(gets, self.args.timeout)
            daemons = _cpu_delta(daemons_before, [cpu_of(n["pid"]) for n in nodes])
            clients = sum(g.cpu_seconds or 0.0 for g in gets)
            bt.check_gets(gets, self.sha256)
            status = bt.statuses(repos)
            facts = [bt.log_facts(repo / bt.LOG_NAME, str(added["root"])) for repo in repos]
            errors = [f"node {g.node}: {g.error}" for g in gets if g.error]
            if errors:
                warnings = [w for f in facts for w in f["warnings"]]
                more = f"; log lines: {' | '.join(warnings[:4])}" if warnings else ""
                raise RunFailed("; ".join(errors) + more)
            served = [s.get("served_bytes") if isinstance(s, dict) else None for s in status]
            ends = [g.started + (g.seconds or 0.0) for g in gets]
            details = {
                "announce_seconds": announce_s,
                "stored_bytes": added["stored_bytes"],
                "providers": [f["providers"] for f in facts[1:]],
                "served_bytes": served,
                "log_warnings": sum(len(f["warnings"]) for f in facts),
                "peak_rss_get": [g.peak_rss for g in gets],
                "cpu_daemons": daemons,
                "cpu_get_clients": clients,
            }
            wall = max(ends) - min(g.started for g in gets)
            return Run([g.seconds or 0.0 for g in gets], wall, load, daemons + clients, details)
        except bt.BenchError as exc:
            raise RunFailed(str(exc)) from None
        finally:
            bt.kill_gets(self.started.gets)
            self.started.gets.clear()
            self.started.down(root)

    # -- aria2c ----------------------------------------------------------------------------------------

    def make_torrent(self, tracker: Tracker) -> None:
        torrent = self.work / "input.torrent"
        result = subprocess.run(
            ["mktorrent", "-p", "-a", tracker.url, "-o", str(torrent), str(self.src)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env=_env(),
        )
        if result.returncode != 0:
            raise BenchError(f"mktorrent failed: {bt._last_line(result.stderr + result.stdout)}")
        self.torrent = torrent
        self.info_hash = info_hash_of(torrent.read_bytes())

    def aria2c(self, *args: str) -> list[str]:
        assert self.torrent is not None
        return [
            "aria2c",
            "--no-conf",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--disable-ipv6=true",
            "--interface=127.0.0.1",
            "--bt-tracker-connect-timeout=10",
            "--bt-tracker-timeout=10",
            "--file-allocation=none",
            "--summary-interval=0",
            "--show-console-readout=false",
            "--console-log-level=warn",
            f"--stop-with-process={os.getpid()}",
            *args,
            str(self.torrent),
        ]

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=_env())
        self.started.procs.append(proc)
        return proc

    def bittorrent(self, leechers: int, run: int) -> Run:
        tracker = self.started.tracker
        assert tracker is not None and self.info_hash is not None
        tracker.swarms.reset()
        load = _loadavg()
        base = self.work / f"aria2c-1to{leechers}-run{run}"
        done_dir = base / "done"
        done_dir.mkdir(parents=True)
        ports = free_ports(leechers + 1)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            seeder = self.spawn(
                self.aria2c(
                    "-d", str(self.src.parent), "-V", "--seed-ratio=0.0", f"--listen-port={ports[0]}"
                ),
                base / "seeder.log",
            )
            procs.append(seeder)
            if not wait_for_seeder(tracker, self.info_hash, ports[0], seeder, SEED_TIMEOUT):
                why = f"exited ({seeder.returncode})" if seeder.poll() is not None else "did not announce"
                raise RunFailed(
                    f"aria2c seeder {why} within {SEED_TIMEOUT:.0f} s: {_tail(base / 'seeder.log')}"
                )
            # 1->1: the leecher exits once complete (--seed-time=0), timed to its exit; 1->4: they stay
            # and seed each other (--seed-ratio=0.0), each timed to its download-complete hook. The hook
            # is there in 1->1 too: when the file was complete, before aria2c's shutdown.
            leave = leechers == 1
            seeder_before = cpu_of(seeder.pid)
            outs, starts = [], []
            for i in range(leechers):
                out = base / f"leecher-{i}"
                hook = base / f"hook-{i}.sh"
                hook.write_text(f"#!/bin/sh\nprintf 'done\\n' > '{done_dir / str(i)}'\n")
                hook.chmod(0o755)
                opts = ["-d", str(out), f"--listen-port={ports[i + 1]}", f"--on-bt-download-complete={hook}"]
                opts.append("--seed-time=0" if leave else "--seed-ratio=0.0")
                starts.append(time.perf_counter())
                procs.append(self.spawn(self.aria2c(*opts), base / f"leecher-{i}.log"))
                outs.append(out / self.src.name)
            complete, exits, leecher_cpu = wait_leechers(procs[1:], done_dir, leave, self.args.timeout)
            ends = exits if leave else complete
            cpu = _cpu_delta([seeder_before], [cpu_of(seeder.pid)]) + sum(leecher_cpu.values())
            failed = [
                f"leecher {i}: exit {procs[i + 1].returncode}: {_tail(base / f'leecher-{i}.log')}"
                for i in range(leechers)
                if procs[i + 1].returncode not in (None, 0) or (not leave and procs[i + 1].returncode == 0)
            ]
            if failed or len(ends) < leechers:
                late = [f"leecher {i}: not done after {self.args.timeout:.0f} s" for i in range(leechers)]
                raise RunFailed("; ".join(failed or [x for i, x in enumerate(late) if i not in ends]))
            self.started.stop_procs(procs)
            for out in outs:
                if bt.sha256_file(out) != self.sha256:
                    raise RunFailed(f"{out} differs from the input (sha256)")
            seconds = [ends[i] - starts[i] for i in range(leechers)]
            details = {
                "complete_seconds": [
                    complete[i] - starts[i] if i in complete else None for i in range(leechers)
                ]
            }
            return Run(seconds, max(ends.values()) - min(starts), load, cpu, details)
        finally:
            self.started.stop_procs(procs)
            if not self.started.keep:
                shutil.rmtree(base, ignore_errors=True)

    # -- HTTP and the raw stream -----------------------------------------------------------------------

    def start_http(self) -> None:
        cmd = [
            sys.executable,
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(self.src.parent),
            "0",
        ]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env()
        )
        self.started.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().decode(errors="replace") if ready else ""
        match = re.search(r"port (\d+)", line)
        if match is None:
            raise BenchError(f"python -m http.server did not start: {line.strip() or 'no output'}")
        self.http_port = int(match.group(1))
        self.http_pid = proc.pid

    def http(self, run: int) -> Run:
        load = _loadavg()
        out = self.work / f"http-run{run}.bin"
        url = f"http://127.0.0.1:{self.http_port}/{self.src.name}"
        cmd = ["curl", "-q", "-s", "-S", "-f", "--noproxy", "*", "-o", str(out), url]
        try:
            server_before, children_before = cpu_of(self.http_pid), children_cpu()
            start = time.perf_counter()
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.args.timeout, check=False, env=_env()
            )
            seconds = time.perf_counter() - start
            cpu = children_cpu() - children_before + _cpu_delta([server_before], [cpu_of(self.http_pid)])
            if result.returncode != 0:
                raise RunFailed(f"curl exited {result.returncode}: {bt._last_line(result.stderr)}")
            if bt.sha256_file(out) != self.sha256:
                raise RunFailed("curl's copy differs from the input (sha256)")
            return Run([seconds], seconds, load, cpu)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"curl did not finish within {self.args.timeout:.0f} s") from None
        finally:
            out.unlink(missing_ok=True)

    def stream(self, run: int) -> Run:
        load = _loadavg()
        out = self.work / f"stream-run{run}.json"
        cmd = [
            sys.executable,
            str(ROOT / "scripts" / "bench_stream.py"),
            "--size",
            str(self.size),
            "--runs",
            "1",
            "--no-raw",
            "--json",
            str(out),
        ]
        before = children_cpu()
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.args.timeout, check=False, env=_env()
            )
        except subprocess.TimeoutExpired:
            raise RunFailed(f"bench_stream.py did not finish within {self.args.timeout:.0f} s") from None
        if result.returncode != 0:
            raise RunFailed(f"bench_stream.py exited {result.returncode}: {bt._last_line(result.stderr)}")
        mb_s = float(json.loads(out.read_text())["noise_yamux_mb_s"][0])
        seconds = self.size / MB / mb_s
        cpu = children_cpu() - before  # both processes, start-up included
        return Run([seconds], seconds, load, cpu, {"bench_stream": result.stdout.strip().splitlines()})


def info_hash_of(torrent: bytes) -> bytes:
    """The SHA-1 of the bencoded ``info`` dictionary of a .torrent file."""
    import hashlib

    def end_of(data: bytes, i: int) -> int:
        """The offset just past the bencoded value starting at ``i``."""
        c = data[i : i + 1]
        if c == b"i":
            return data.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while data[i : i + 1] != b"e":
                i = end_of(data, i)
            return i + 1
        colon = data.index(b":", i)
        return colon + 1 + int(data[i:colon])

    if torrent[:1] != b"d":
        raise BenchError("the .torrent is not a bencoded dictionary")
    i = 1
    while torrent[i : i + 1] != b"e":
        key_end = end_of(torrent, i)
        key = torrent[torrent.index(b":", i) + 1 : key_end]
        value_end = end_of(torrent, key_end)
        if key == b"info":
            return hashlib.sha1(torrent[key_end:value_end], usedforsecurity=False).digest()
        i = value_end
    raise BenchError("the .torrent has no info dictionary")


def wait_for_seeder(
    tracker: Tracker, info_hash: bytes, port: int, seeder: subprocess.Popen[bytes], timeout: float
) -> bool:
    """Wait until the seeder announced the torrent complete, or exited (a thread wakes the wait)."""
    import threading

    def watch() -> None:
        seeder.wait()
        tracker.swarms.wake()

    threading.Thread(target=watch, daemon=True).start()
    return tracker.swarms.wait_for_seeder(info_hash, port, timeout, give_up=lambda: seeder.poll() is not None)


def wait_leechers(
    procs: Sequence[subprocess.Popen[bytes]], done_dir: Path, leave: bool, timeout: float
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Wait (inotify on ``done_dir``, a pidfd per leecher) until every leecher is done: exited with
    status 0 when ``leave``, else complete (its hook wrote ``done_dir/i``). Returns early when a leecher
    exits with an error (or at all, when not ``leave``), or after ``timeout`` seconds. Returns when each
    leecher was complete, when each exited with status 0 (perf_counter), and the CPU seconds each used
    (until it exited, or until this returns)."""
    complete: dict[int, float] = {}
    exits: dict[int, float] = {}
    cpu: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    with FileWatch([done_dir]) as changes, contextlib.ExitStack() as stack:
        fds = {}
        for i, proc in enumerate(procs):
            fd = os.pidfd_open(proc.pid)
            stack.callback(os.close, fd)
            fds[fd] = i
        while True:
            now = time.perf_counter()
            for i in range(len(procs)):
                with contextlib.suppress(OSError):
                    if i not in complete and (done_dir / str(i)).read_text() == "done\n":
                        complete[i] = now
            readable, _, _ = select.select(list(fds), [], [], 0)
            broken = False
            for fd in readable:
                i = fds.pop(fd)
                _pid, status, usage = os.wait4(procs[i].pid, 0)
                procs[i].returncode = os.waitstatus_to_exitcode(status)
                cpu[i] = usage.ru_utime + usage.ru_stime
                if procs[i].returncode == 0 and leave:
                    exits[i] = now
                else:
                    broken = True
            if len(exits if leave else complete) == len(procs) or broken or time.monotonic() >= deadline:
                for i, proc in enumerate(procs):
                    if i not in cpu and (used := cpu_of(proc.pid)) is not None:
                        cpu[i] = used
                return complete, exits, cpu
            changes.wait(deadline - time.monotonic(), also=list(fds))


# -- the whole benchmark -------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def measure(args: argparse.Namespace, work: Path, network: str, started: Started) -> dict[str, Any]:
    cases: list[str] = [c for c in CASES if c in args.cases]
    size: int = args.size
    result: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": bt.machine(),
        "network": network,
        "size": size,
        "runs": args.runs,
        "loadavg_before": _loadavg(),
        "busy_before": machine_busy(),
    }
    result["machine"]["filesystem"] = filesystem_of(work)
    result["machine"]["tools"] = {
        "aria2c": tool_version(["aria2c", "--version"]),
        "curl": tool_version(["curl", "--version"]),
        "mktorrent": tool_version(["mktorrent", "-h"]),
    }
    _say(f"running in {network}")
    _say(f"writing {size / MIB:.0f} MiB of random bytes in {work}")
    src_dir = work / "src"
    src_dir.mkdir()
    src = src_dir / "input.bin"
    bench = Bench(args, work, src, bt.make_input(src, size), started)
    if any(c.startswith("aria2c") for c in cases):
        started.tracker = Tracker().start()
        _say(f"tracker at {started.tracker.url}; making the private torrent (mktorrent -p)")
        bench.make_torrent(started.tracker)
    if "http-1" in cases:
        bench.start_http()
        _say(f"python -m http.server on 127.0.0.1:{bench.http_port}")

    actions: dict[str, Callable[[int], Run]] = {
        "sealbox-1": lambda r: bench.sealbox(1, r),
        "aria2c-1": lambda r: bench.bittorrent(1, r),
        "http-1": bench.http,
        "stream-1": bench.stream,
        "sealbox-4": lambda r: bench.sealbox(4, r),
        "aria2c-4": lambda r: bench.bittorrent(4, r),
    }
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    problems: list[str] = []
    for r in range(1, args.runs + 1):
        for case in cases:
            _say(f"run {r}/{args.runs}: {LABELS[case]}")
            try:
                run = actions[case](r)
            except RunFailed as exc:
                _say(f"  FAILED: {exc}")
                problems.append(f"{case} run {r}: {exc}")
                runs[case].append({"ok": False, "error": str(exc)})
                continue
            per = " ".join(f"{s:.2f}" for s in run.seconds)
            cpu = f"{run.cpu:.1f}" if run.cpu is not None else "?"
            _say(f"  {run.wall:.2f} s ({size / MB / run.wall:.1f} MB/s), CPU {cpu} s; each: {per} s")
            runs[case].append(
                {
                    "ok": True,
                    "wall_s": run.wall,
                    "seconds": run.seconds,
                    "cpu_s": run.cpu,
                    "loadavg": run.load,
                    **run.details,
                }
            )
    started.stop_procs(list(started.procs))
    if started.tracker is not None:
        started.tracker.close()
        started.tracker = None
    result["loadavg_after"] = _loadavg()
    result["busy_after"] = machine_busy()
    if "aria2c-1" in runs:  # the same runs, timed to the download-complete hook instead of the exit
        runs["aria2c-1c"] = [
            {"ok": True, "wall_s": x["complete_seconds"][0], "seconds": x["complete_seconds"]}
            if x["ok"] and x["complete_seconds"][0] is not None
            else {"ok": False, "error": x.get("error", "no download-complete hook seen")}
            for x in runs["aria2c-1"]
        ]
    result["cases"] = {}
    for case in [c for c in ORDER if c in runs]:
        walls = [x["wall_s"] for x in runs[case] if x["ok"]]
        cpus = [x["cpu_s"] for x in runs[case] if x["ok"] and x.get("cpu_s") is not None]
        mid = median(walls)
        result["cases"][case] = {
            "label": LABELS[case],
            "median_s": mid,
            "cpu_s": median(cpus),
            "mb_s": size / MB / mid if mid else None,
            "runs_s": walls,
            "failed_runs": sum(1 for x in runs[case] if not x["ok"]),
            "runs": runs[case] if case != "aria2c-1c" else [],
        }
    result["problems"] = problems
    return result


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """Sealbox's speed (MB/s) over the others'; for 1->4 also Sealbox's time over aria2c's."""
    cases = result["cases"]

    def speed(case: str) -> float | None:
        value = cases.get(case, {}).get("mb_s")
        return float(value) if value else None

    def over(a: str, b: str) -> float | None:
        x, y = speed(a), speed(b)
        return x / y if x and y else None

    out = {
        "sealbox_over_aria2c_1to1": over("sealbox-1", "aria2c-1"),
        "sealbox_over_aria2c_complete_1to1": over("sealbox-1", "aria2c-1c"),
        "sealbox_over_http_1to1": over("sealbox-1", "http-1"),
        "sealbox_over_raw_stream_1to1": over("sealbox-1", "stream-1"),
        "sealbox_over_aria2c_1to4": over("sealbox-4", "aria2c-4"),
    }
    slower = over("aria2c-4", "sealbox-4")  # = Sealbox's time / aria2c's time
    out["sealbox_time_over_aria2c_time_1to4"] = slower
    return out


# -- the report ----------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    mem = (m.get("memory_bytes") or 0) / (1 << 30)
    return (
        f"{m['cpu_count']} cores ({m['cpus_usable']} usable), {m['cpu_model']}, {mem:.0f} GiB RAM, "
        f"{m['arch']}, {m['kernel']}, {m['python']}, {m.get('filesystem', '?')} disk"
    )


def _rows(result: dict[str, Any], first: str, keys: Sequence[str]) -> list[list[str]]:
    cases = result["cases"]
    rows = [[first, "median s", "MB/s", "Sealbox / this", "CPU s", "runs s"]]
    base = cases.get(keys[0], {}).get("mb_s") if keys[0].startswith("sealbox") else None
    for key in keys:
        case = cases.get(key)
        if case is None:
            continue
        runs = " ".join(f"{s:.2f}" for s in case["runs_s"]) or "-"
        if case["failed_runs"]:
            runs += f" ({case['failed_runs']} failed)"
        ratio = base / case["mb_s"] if base and case["mb_s"] else None
        cpu = _f(case.get("cpu_s"), 1)
        rows.append([case["label"], _f(case["median_s"]), _f(case["mb_s"], 1), _f(ratio), cpu, runs])
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded: the first left-aligned, the numbers right-aligned, the last left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def goals(result: dict[str, Any]) -> list[str]:
    r = ratios(result)
    out = []
    one, complete = r["sealbox_over_aria2c_1to1"], r.get("sealbox_over_aria2c_complete_1to1")
    if one is not None:
        verdict = "met" if one > 1 else "NOT met"
        line = f"1->1: Sealbox faster than aria2c: {verdict} (Sealbox at {one:.2f} x aria2c's speed"
        if complete is not None:
            line += f"; {complete:.2f} x counting aria2c only until its file is complete"
        out.append(line + ")")
    four = r["sealbox_time_over_aria2c_time_1to4"]
    if four is not None:
        verdict = "met" if four <= 1.5 else "NOT met"
        out.append(f"1->4: Sealbox's time within 1.5 x aria2c's: {verdict} ({four:.2f} x)")
    return out


def report(result: dict[str, Any]) -> str:
    size = result["size"]
    out = [
        f"date: {result['date']}",
        f"machine: {_machine_line(result)}",
        f"         sealbox {result['machine'].get('commit') or '?'}; "
        + "; ".join(result["machine"].get("tools", {}).values()),
        f"network: {result['network']}",
        f"load average (1/5/15 min): before {result['loadavg_before']}, after {result['loadavg_after']};"
        f" CPUs busy in the second before: {_pct(result.get('busy_before'))}, after:"
        f" {_pct(result.get('busy_after'))}",
        f"file: {size / MIB:.0f} MiB random; {result['runs']} run(s) per row, median; wall time of the real"
        " command incl. client start-up; MB/s = 10^6 bytes/s; 'Sealbox / this' = Sealbox's MB/s over this"
        " row's; " + CPU_NOTE,
    ]
    if busy := busy_note(result):
        out.append(busy)
    out.append("")
    one = [k for k in ONE if k in result["cases"]]
    four = [k for k in FOUR if k in result["cases"]]
    if one:
        out.append(text_table(_rows(result, "1 seeder -> 1 leecher", one)))
        if "stream-1" in one:
            out.append(
                "(a) bench_stream.py times first byte to last byte, without process start-up (its CPU s"
                " include the start-up of both processes)"
            )
        if "aria2c-1c" in one:
            out.append(
                "(b) to aria2c's --on-bt-download-complete hook, without its shutdown (a 'stopped' announce,"
                " then exit)"
            )
        out.append("")
    if four:
        out.append(text_table(_rows(result, "1 seeder -> 4 leechers at once (until all 4 done)", four)))
        out.append("MB/s here = file size / time until the last of the 4 leechers had it")
        out.append("")
    for case in ("sealbox-4",):
        oks = [x for x in result["cases"].get(case, {}).get("runs", []) if x["ok"]]
        if oks:
            shares = []
            for x in oks:
                served = [b or 0 for b in x.get("served_bytes", [])]
                if sum(served):
                    shares.append(f"{100 * served[0] / sum(served):.0f}%")
            if shares:
                out.append(f"Sealbox 1->4: node 0 served {', '.join(shares)} of all bytes served (per run)")
    out.extend(goals(result))
    if result["problems"]:
        out.append("")
        out.append("problems:")
        out.extend(f"  - {p}" for p in result["problems"])
    return "\n".join(out).rstrip()


CPU_NOTE = (
    "CPU s = CPU time (user + system) of every process of the transfer while it ran (seeder and "
    "leechers; for Sealbox the daemons and the get clients), median"
)


def busy_note(result: dict[str, Any]) -> str | None:
    """A warning when other work kept the CPUs busy just before or just after the benchmark."""
    cores = result["machine"].get("cpus_usable") or result["machine"].get("cpu_count") or 1
    busy = max(result.get("busy_before") or 0.0, result.get("busy_after") or 0.0)
    if busy <= 0.25:
        return None
    return (
        f"Other work was running ({busy:.0%} of the {cores} cores busy in the second before or after the"
        " benchmark): wall times are inflated, most for the Python processes (Sealbox, http.server, the raw"
        " stream); compare CPU s too."
    )


def markdown(result: dict[str, Any]) -> str:
    """The docs/performance.md block (markers included)."""
    size = result["size"]
    day = result["date"][:10]
    intro = (
        "`scripts/bench_compare.py` moves a random file from one seeder to fresh leechers with Sealbox (a "
        "`scripts/testnet`: `add` on node 0, `get` on the others, found through the DHT), with aria2c "
        "(BitTorrent: private torrent, a local tracker, DHT, LPD and PEX off), with plain HTTP "
        "(`python -m http.server` to `curl`) and, for scale, over one raw py-libp2p noise+yamux stream "
        "(`scripts/bench_stream.py`). Times are wall times of the real commands, client start-up included, "
        f"median of {result['runs']} run(s); MB/s = 10^6 bytes/s. Needs `apt-get install aria2 mktorrent`. "
        f"Run {day} on {_machine_line(result)}; load average {result['loadavg_before']} before, "
        f"{result['loadavg_after']} after (CPUs {_pct(result.get('busy_before'))} busy in the second "
        f"before, {_pct(result.get('busy_after'))} after); {result['network']}; {size / MIB:.0f} MiB file:"
    )
    lines = [MARK_START, "", textwrap.fill(intro, WRAP, break_on_hyphens=False), ""]

    def table_md(rows: list[list[str]]) -> list[str]:
        head, *body = [[cell.strip() for cell in row] for row in rows]
        return [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(row) + " |" for row in body),
        ]

    one = [k for k in ONE if k in result["cases"]]
    four = [k for k in FOUR if k in result["cases"]]
    if one:
        lines += table_md(_rows(result, "1 seeder -> 1 leecher", one))
        lines.append("")
    if four:
        lines += table_md(_rows(result, "1 seeder -> 4 leechers at once", four))
        lines.append("")
    notes = [CPU_NOTE + "."]
    if busy := busy_note(result):
        notes.append(busy)
    if "stream-1" in one:
        notes.append("(a) first byte to last byte, without process start-up (CPU s include it).")
    if "aria2c-1c" in one:
        notes.append("(b) until aria2c's download-complete hook, without its shutdown.")
    if four:
        notes.append(
            "For 1 -> 4 the time runs until the last of the four has the exact file (MB/s = file size / "
            "that time); aria2c's leechers stay and seed each other until then, as Sealbox's daemons do."
        )
    text = " ".join(notes + [g + "." for g in goals(result)])
    lines += [textwrap.fill(text, WRAP, break_on_hyphens=False), "", MARK_END]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------------


def _cases(text: str) -> list[str]:
    out: list[str] = []
    for name in text.split(","):
        if name.strip() not in ONLY:
            raise argparse.ArgumentTypeError(f"{name!r}: choose from {', '.join(ONLY)}")
        out += ONLY[name.strip()]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_compare.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=bt.parse_size, default=256 * MIB, help="file size (default 256MiB)")
    parser.add_argument("--runs", type=int, default=3, help="runs per comparison (default 3); medians")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--only",
        type=_cases,
        dest="cases",
        default=list(CASES),
        metavar="WHAT[,WHAT]",
        help=f"measure only these: {', '.join(ONLY)} (default: all)",
    )
    readme = parser.add_mutually_exclusive_group()
    readme.add_argument(
        "--readme", action="store_true", help="rewrite the bench_compare block of docs/performance.md"
    )
    readme.add_argument(
        "--readme-preview", action="store_true", help="print that block instead of writing it"
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="PATH", help="measure nothing: report an earlier run's --json"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one transfer may take (default 600)"
    )
    parser.add_argument(
        "--host-loopback", action="store_true", help="as root too, stay on the host's loopback (no unshare)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR (new or empty) and keep everything there: repos, daemon logs, aria2c logs and"
        " copies (several GiB at the default size); default: a temp dir, deleted",
    )
    return parser


def finish(args: argparse.Namespace, result: dict[str, Any]) -> None:
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.readme_preview:
        print("\n--- docs/performance.md block (--readme would write this) ---")
        print(markdown(result))
    if args.readme:
        PERFORMANCE.write_text(update_block(PERFORMANCE.read_text(), "bench_compare", markdown(result)))
        print(f"\ndocs/performance.md updated ({MARK_START} ... {MARK_END})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        print("bench_compare: error: --runs must be at least 1", file=sys.stderr)
        return 2
    if args.from_json is not None:
        result: dict[str, Any] = json.loads(args.from_json.read_text())
        finish(args, result)
        return 0
    missing = missing_tools(args.cases)
    if missing:
        packages = " ".join(sorted({TOOLS[t] for t in missing}))
        print(
            f"bench_compare: error: missing {', '.join(missing)}: install with 'apt-get install {packages}'"
            " (Debian/Ubuntu), or leave those comparisons out with --only",
            file=sys.stderr,
        )
        return 2
    try:
        network = enter_network(args.host_loopback)  # may re-execute this script under unshare -n
    except BenchError as exc:
        print(f"bench_compare: error: {exc}", file=sys.stderr)
        return 1
    try:
        work = bt.work_dir(args.keep, "sealbox-cmp-")
    except bt.BenchError as exc:
        print(f"bench_compare: error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    started = Started(keep=args.keep is not None)
    start = time.monotonic()
    try:
        result = measure(args, work, network, started)
    except (BenchError, bt.BenchError) as exc:
        print(f"bench_compare: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_compare: error: interrupted", file=sys.stderr)
        return 130
    finally:
        started.teardown()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result["ratios"] = ratios(result)
    result["total_seconds"] = time.monotonic() - start
    finish(args, result)
    _say(f"done in {result['total_seconds']:.0f} s")
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    reexec_in_venv(__file__)
    sys.exit(main())
