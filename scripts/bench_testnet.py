#!/usr/bin/env python3
"""Benchmark: one file added on node 0 of a local testnet, fetched by every other node at once.

A testnet of NODES real daemons is started on 127.0.0.1 (scripts/testnet.py, driven as a subprocess).
A SIZE random file is added on node 0; once node 0's log shows the root announced on the DHT, nodes
1..NODES-1 all run ``sealbox get`` of the link at the same moment (one CLI process each, going through
its node's daemon, which finds providers on the DHT and fetches from all of them; every fetcher
announces the root as it starts, so it serves the blocks it already holds). Printed, per node: the
get's wall time and MB/s (1 MB = 10^6 bytes; CLI start-up, fetch, decrypt and write of the output
included), the get client's peak RSS, the providers its daemon used, the blocks and bytes the daemon
served (``status --json``: served_blocks, served_bytes, counted since the daemon started), the
daemon's RSS before the add and its peak RSS (VmHWM) at the end, and the sha256 check of the output.
Then the total time (first get started to last get done), the aggregate rate, how much node 0 served
against the others, and the machine (cores, CPU, Python, kernel, load average before and after).

    scripts/bench_testnet.py [--nodes 20] [--size 64MiB] [--dir DIR] [--json FILE] [--timeout 900]

Run it as scripts/bench_testnet.py (it re-executes itself under the repo's .venv, like
scripts/testnet.py; SEALBOX_VENV names another venv) or as .venv/bin/python scripts/bench_testnet.py.
By default everything lives in a temporary directory that is deleted at the end. With --dir DIR (empty
or new) the repos, daemon logs and get outputs are kept there; the daemons are stopped either way, on
error and Ctrl-C (or SIGTERM) too. Nothing listens or dials beyond 127.0.0.1. Waiting is on events
(inotify on node 0's log, pidfds of the daemon and of the get processes), each within a deadline.
Exit status: 0 when every get succeeded with the right bytes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
from _repo_venv import VENV, reexec_in_venv  # noqa: E402 - standard library only

sys.path.insert(0, str(ROOT))

from node.store.fsutil import FileWatch  # noqa: E402 - standard library only, so it imports before the re-exec

MB = 1e6
MIB = 1 << 20
MAX_NODES = 64  # scripts/testnet.py's limit
LOG_NAME = "daemon.log"
STATE_NAME = "testnet.json"
CLI_TIMEOUT = 60.0  # seconds for add, status (the machine may be busy with the gets' aftermath)
UP_TIMEOUT = 300.0  # seconds for 'testnet up' as a whole (it has its own per-node deadlines)
DOWN_TIMEOUT = 120.0
ANNOUNCE_TIMEOUT = 60.0
WARNING = re.compile(r"^\S+ (WARNING|ERROR|CRITICAL) |Traceback")
STREAM_FAILURE = "Failed to open stream to peer "


class BenchError(Exception):
    """A failure that stops the benchmark, reported as one line on stderr (exit 1)."""


def _sealbox() -> str:
    return str(VENV / "bin" / "sealbox")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"}


def _say(message: str) -> None:
    """Progress, on stderr: stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    try:
        value = int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MiB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the size must be positive")
    return value


def _node_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 2 <= value <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"between 2 and {MAX_NODES}")
    return value


# -- machine and processes -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            commit = head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_bytes": mem_total,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "commit": commit,
    }


def proc_status(pid: int) -> dict[str, int]:
    """The memory fields (kB -> bytes) of /proc/PID/status: VmRSS, VmHWM, ..."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def daemon_memory(pid: int | None, repo: Path) -> dict[str, int] | None:
    """/proc/PID/status memory fields of ``repo``'s daemon, or None when that pid no longer runs it."""
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if os.fsencode(repo) not in cmdline or b"daemon" not in cmdline:
            return None
        return proc_status(pid)
    except OSError:
        return None


def run_tool(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, capturing its output. Unlike ``subprocess.run``, an interrupt (Ctrl-C reaches the
    child too) lets the child finish its own clean-up (e.g. 'testnet up' stopping what it started)
    instead of killing it at once."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise BenchError(f"'{' '.join(cmd[1:4])} ...' did not finish within {timeout:.0f} s") from None
    except BaseException:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=DOWN_TIMEOUT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def testnet(root: Path, *args: str, timeout: float) -> str:
    cmd = [sys.executable, str(ROOT / "scripts" / "testnet.py"), "--dir", str(root), *args]
    result = run_tool(cmd, timeout)
    if result.returncode != 0:
        raise BenchError(f"'testnet {' '.join(args)}' failed: {_last_line(result.stderr)}")
    return result.stdout


def sealbox_json(repo: Path, *args: str, timeout: float = CLI_TIMEOUT) -> dict[str, Any]:
    result = run_tool([_sealbox(), "--repo", str(repo), "--json", *args], timeout)
    if result.returncode != 0:
        raise BenchError(f"'sealbox --repo {repo} {args[0]}' failed: {_last_line(result.stderr)}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def statuses(repos: Sequence[Path]) -> list[dict[str, Any] | str]:
    """``status --json`` of every node, asked at once; an error message where one failed."""
    procs = [
        subprocess.Popen(
            [_sealbox(), "--repo", str(repo), "--json", "status"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for repo in repos
    ]
    out: list[dict[str, Any] | str] = []
    deadline = time.monotonic() + CLI_TIMEOUT
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out.append(f"status did not answer within {CLI_TIMEOUT:.0f} s")
            continue
        if proc.returncode != 0:
            out.append(f"status failed: {_last_line(stderr)}")
            continue
        out.append(json.loads(stdout))
    return out


# -- the steps -----------------------------------------------------------------------------------------


def make_input(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            piece = os.urandom(min(remaining, 8 * MIB))
            f.write(piece)
            digest.update(piece)
            remaining -= len(piece)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def pidfd(pid: int | None) -> Iterator[list[int]]:
    """A pidfd for ``pid`` (readable once it exits), as a list of zero or one file descriptor."""
    fds = []
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def add_and_wait_announce(repo: Path, daemon_pid: int | None, src: Path) -> tuple[dict[str, Any], float]:
    """``add`` SRC on node 0, then wait (inotify on its log, pidfd on its daemon) for the log line
    saying the root was announced on the DHT. Returns the add's JSON and the seconds from the add's
    start to the announcement."""
    log_path = repo / LOG_NAME
    offset = log_path.stat().st_size
    with FileWatch([log_path]) as changes, pidfd(daemon_pid) as exits:
        start = time.perf_counter()
        added = sealbox_json(repo, "add", str(src))
        root = re.escape(str(added["root"]))
        done = re.compile(rf"announced root {root} to the DHT")
        failed = re.compile(rf"announced root {root} to no DHT peer|announcing root {root}:")
        deadline = time.monotonic() + ANNOUNCE_TIMEOUT
        partial = b""
        while True:
            with open(log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
            offset += len(data)
            *lines, partial = (partial + data).split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if done.search(line):
                    return added, time.perf_counter() - start
                if failed.search(line):
                    raise BenchError(f"node 0 could not announce the root: {line.strip()}")
            if daemon_pid is not None and daemon_memory(daemon_pid, repo) is None:
                raise BenchError(f"node 0's daemon (pid {daemon_pid}) exited: see {log_path}")
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"node 0's log did not show the announcement within {ANNOUNCE_TIMEOUT:.0f} s"
                )
            changes.wait(deadline - time.monotonic(), also=exits)


@dataclass
class Get:
    node: int
    output: Path
    proc: subprocess.Popen[bytes]
    started: float
    fd: int
    seconds: float | None = None
    exit_code: int | None = None
    peak_rss: int | None = None
    cpu_seconds: float | None = None
    error: str | None = None
    sha256_ok: bool | None = None


def start_gets(root: Path, nodes: Sequence[int], link: str) -> list[Get]:
    outdir = root / "out"
    outdir.mkdir(exist_ok=True)
    gets = []
    for i in nodes:
        output = outdir / f"node-{i}.bin"
        with open(outdir / f"node-{i}.stdout", "wb") as out, open(outdir / f"node-{i}.stderr", "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [_sealbox(), "--repo", str(root / f"node-{i}"), "--json", "get", link, "-o", str(output)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_env(),
            )
        gets.append(Get(i, output, proc, started, os.pidfd_open(proc.pid)))
    return gets


def _reap(get: Get, when: float) -> None:
    _pid, status, usage = os.wait4(get.proc.pid, 0)
    get.proc.returncode = os.waitstatus_to_exitcode(status)
    get.exit_code = get.proc.returncode
    get.seconds = when - get.started
    get.peak_rss = usage.ru_maxrss * 1024
    get.cpu_seconds = usage.ru_utime + usage.ru_stime
    os.close(get.fd)
    get.fd = -1


def wait_gets(gets: Sequence[Get], timeout: float) -> None:
    """Wait for every get to exit (their pidfds), recording when; kill those still running after
    ``timeout`` seconds."""
    pending = {g.fd: g for g in gets}
    deadline = time.monotonic() + timeout
    while pending:
        readable, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        now = time.perf_counter()
        if not readable:
            break
        for fd in readable:
            get = pending.pop(fd)
            _reap(get, now)
            state = "done" if get.exit_code == 0 else f"FAILED (exit {get.exit_code})"
            _say(
                f"get on node {get.node} {state} after {get.seconds:.1f} s"
                f" ({len(gets) - len(pending)}/{len(gets)})"
            )
    for get in pending.values():
        get.error = f"still running after {timeout:.0f} s: killed"
        _say(f"get on node {get.node} {get.error}")
        get.proc.kill()
        _reap(get, time.perf_counter())
        get.seconds = None


def kill_gets(gets: Sequence[Get]) -> None:
    """Clean-up on an error: kill and reap the gets still running (they are this script's children)."""
    for get in gets:
        if get.fd >= 0:
            with contextlib.suppress(ProcessLookupError):
                get.proc.kill()
            with contextlib.suppress(ChildProcessError):
                os.wait4(get.proc.pid, 0)
            os.close(get.fd)
            get.fd = -1


def check_gets(gets: Sequence[Get], want: str) -> None:
    for get in gets:
        if get.exit_code not in (0, None) and get.error is None:
            err = get.output.parent / f"node-{get.node}.stderr"
            with contextlib.suppress(OSError):
                get.error = f"exit {get.exit_code}: {_last_line(err.read_text(errors='replace'))}"
            get.error = get.error or f"exit {get.exit_code}"
        if get.exit_code == 0:
            try:
                get.sha256_ok = sha256_file(get.output) == want
            except OSError as exc:
                get.sha256_ok = False
                get.error = f"output unreadable: {exc.strerror or exc}"
            if not get.sha256_ok and get.error is None:
                get.error = "output differs from the input (sha256)"


def log_facts(log_path: Path, root: str) -> dict[str, Any]:
    """From a daemon's log: the providers its fetch used, its warnings and errors, and how many streams
    py-libp2p failed to open (it reports those on lines of its own, without a level)."""
    providers = None
    fetched_at = None
    warnings: list[str] = []
    stream_failures = 0
    fetched = re.compile(rf"^(\S+) .*fetched root {re.escape(root)} from (\d+) provider")
    with contextlib.suppress(OSError), open(log_path, errors="replace") as f:
        for line in f:
            if m := fetched.search(line):
                fetched_at, providers = m.group(1), int(m.group(2))
            elif WARNING.search(line):
                warnings.append(line.rstrip())
            elif line.startswith(STREAM_FAILURE):
                stream_failures += 1
    return {
        "providers": providers,
        "fetched_at": fetched_at,
        "warnings": warnings,
        "stream_open_failures": stream_failures,
    }


# -- the report ----------------------------------------------------------------------------------------


def _mb(n: int | None, digits: int = 0) -> str:
    return "-" if n is None else f"{n / MB:.{digits}f}"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if i == len(r) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    m = result["machine"]
    size = result["size"]
    nodes = result["nodes"]
    out = [
        f"machine: {m['cpu_count']} cores ({m['cpus_usable']} usable), {m['cpu_model']}, "
        f"{(m['memory_bytes'] or 0) / (1 << 30):.0f} GiB RAM, {m['arch']}",
        f"         {m['python']}, {m['kernel']}, sealbox {m['commit'] or '?'}",
        f"load average (1/5/15 min): before {result['loadavg_before']}, after {result['loadavg_after']}",
        f"testnet: {len(nodes)} daemons on 127.0.0.1 (up in {result['up_seconds']:.1f} s); "
        f"file: {size / MIB:.0f} MiB random ({result['stored_bytes'] / MIB:.1f} MiB stored, "
        f"{result['blocks']} blocks)",
        f"add on node 0: {result['add_seconds']:.1f} s until its log showed the DHT announcement",
        "",
    ]
    head = [
        "NODE", "GET s", "MB/s", "CLIENT RSS", "PROVIDERS", "SERVED blocks", "SERVED MB", "SHARE",
        "DAEMON RSS idle/peak MB", "SHA256",
    ]  # fmt: skip
    rows = [head]
    total_served = sum(n["served_bytes"] or 0 for n in nodes)
    for n in nodes:
        share = (
            f"{100 * n['served_bytes'] / total_served:.1f}%"
            if total_served and n["served_bytes"] is not None
            else "-"
        )
        if n["index"] == 0:
            get_s, mb_s, client, sha = "-", "-", "-", "(source)"
        else:
            get_s = f"{n['get_seconds']:.1f}" if n["get_seconds"] is not None else "-"
            mb_s = f"{n['get_mb_s']:.1f}" if n["get_mb_s"] is not None else "-"
            client = f"{_mb(n['get_peak_rss'])} MB" if n["get_peak_rss"] is not None else "-"
            sha = {True: "ok", False: "MISMATCH", None: "-"}[n["sha256_ok"]]
            if n["error"]:
                sha = "FAILED (see problems)"
        rows.append(
            [
                str(n["index"]),
                get_s,
                mb_s,
                client,
                str(n["providers"]) if n["providers"] is not None else "-",
                str(n["served_blocks"]) if n["served_blocks"] is not None else "-",
                _mb(n["served_bytes"], 1),
                share,
                f"{_mb(n['daemon_rss_idle'])}/{_mb(n['daemon_peak_rss'])}",
                sha,
            ]
        )
    out.append(table(rows))
    out.append("")
    s = result["summary"]
    out.append(
        f"total: {s['gets']} gets in {s['total_seconds']:.1f} s (first get started -> last get done); "
        f"{s['gets_ok']} ok, {s['gets_failed']} failed"
    )
    if s["gets_ok"] and s["total_seconds"]:
        out.append(
            f"aggregate: {s['aggregate_mb_s']:.1f} MB/s delivered ({s['gets_ok']} x {size / MB:.1f} MB); "
            f"per successful get: min {s['get_mb_s_min']:.1f}, median {s['get_mb_s_median']:.1f}, "
            f"max {s['get_mb_s_max']:.1f} MB/s; first get ended after {s['first_done_seconds']:.1f} s"
        )
    else:
        out.append("aggregate: no get succeeded")
    out.append(
        f"served: {total_served / MB:.0f} MB in all = {s['served_per_stored']:.2f} x (gets x stored bytes); "
        f"node 0 served {s['node0_share'] * 100:.1f}%, the other {len(nodes) - 1} nodes "
        f"{(1 - s['node0_share']) * 100:.1f}% ({s['serving_nodes']} of them served something)"
    )
    out.append(
        f"peak RSS: daemons max {_mb(s['daemon_peak_rss_max'])} MB,"
        f" mean {_mb(s['daemon_peak_rss_mean'])} MB; "
        f"get clients max {_mb(s['client_peak_rss_max'])} MB"
    )
    if result["problems"]:
        out.append("")
        out.append("problems:")
        out.extend(f"  - {p}" for p in result["problems"])
    return "\n".join(out)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# -- main ----------------------------------------------------------------------------------------------


def _state(root: Path) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = json.loads((root / STATE_NAME).read_text())["nodes"]
    return nodes


def bench(args: argparse.Namespace, root: Path, gets: list[Get]) -> dict[str, Any]:
    size: int = args.size
    info = machine()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    _say(f"writing {size / MIB:.0f} MiB of random bytes")
    src = root / "input.bin"
    want = make_input(src, size)

    _say(f"starting {args.nodes} daemons (scripts/testnet up) in {root}")
    t0 = time.perf_counter()
    testnet(root, "up", "--nodes", str(args.nodes), timeout=UP_TIMEOUT)
    up_seconds = time.perf_counter() - t0
    state = _state(root)
    repos = [Path(n["repo"]) for n in state]
    pids: list[int | None] = [n["pid"] for n in state]
    idle = [daemon_memory(pid, repo) for pid, repo in zip(pids, repos, strict=True)]

    _say("adding the file on node 0, waiting for its DHT announcement")
    added, add_seconds = add_and_wait_announce(repos[0], pids[0], src)
    link = str(added["link"])
    root_cid = str(added["root"])

    _say(f"starting {args.nodes - 1} gets at once")
    fired = time.perf_counter()
    gets.extend(start_gets(root, range(1, args.nodes), link))
    wait_gets(gets, args.timeout)
    done_times = [g.started + g.seconds for g in gets if g.seconds is not None]
    total_seconds = (max(done_times) - fired) if done_times else 0.0
    first_done = (min(done_times) - fired) if done_times else 0.0

    _say("collecting status, memory and logs; checking outputs")
    t0 = time.perf_counter()
    status = statuses(repos)
    status_seconds = time.perf_counter() - t0
    memory = [daemon_memory(pid, repo) for pid, repo in zip(pids, repos, strict=True)]
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    check_gets(gets, want)

    problems: list[str] = []
    by_node = {g.node: g for g in gets}
    nodes = []
    for i, repo in enumerate(repos):
        st = status[i]
        if isinstance(st, str):
            problems.append(f"node {i}: {st}")
            st = {}
        mem, before = memory[i], idle[i]
        if mem is None:
            problems.append(
                f"node {i}: daemon (pid {pids[i]}) no longer runs at the end: see {repo / LOG_NAME}"
            )
        facts = log_facts(repo / LOG_NAME, root_cid)
        if facts["warnings"]:
            shown = "; ".join(facts["warnings"][:3])
            more = f" (+{len(facts['warnings']) - 3} more)" if len(facts["warnings"]) > 3 else ""
            problems.append(
                f"node {i}: {len(facts['warnings'])} warning/error line(s) in its log: {shown}{more}"
            )
        get = by_node.get(i)
        if get is not None and get.error:
            problems.append(f"node {i}: get {get.error}")
        nodes.append(
            {
                "index": i,
                "peer_id": state[i]["peer_id"],
                "pid": pids[i],
                "peers": st.get("peers"),
                "get_seconds": get.seconds if get else None,
                "get_mb_s": size / MB / get.seconds if get and get.seconds and not get.error else None,
                "get_peak_rss": get.peak_rss if get else None,
                "get_cpu_seconds": get.cpu_seconds if get else None,
                "get_exit_code": get.exit_code if get else None,
                "sha256_ok": get.sha256_ok if get else None,
                "error": get.error if get else None,
                "providers": facts["providers"],
                "fetched_at": facts["fetched_at"],
                "log_warnings": facts["warnings"],
                "stream_open_failures": facts["stream_open_failures"],
                "served_blocks": st.get("served_blocks"),
                "served_bytes": st.get("served_bytes"),
                "stored_bytes": st.get("stored_bytes"),
                "daemon_rss_idle": before["VmRSS"] if before else None,
                "daemon_rss_end": mem["VmRSS"] if mem else None,
                "daemon_peak_rss": mem["VmHWM"] if mem else None,
            }
        )

    failures = {n["index"]: n["stream_open_failures"] for n in nodes if n["stream_open_failures"]}
    if failures:
        problems.append(
            f'py-libp2p failed to open {sum(failures.values())} stream(s) ("{STREAM_FAILURE.strip()}" in the'
            f" logs), on {len(failures)} node(s): "
            + ", ".join(f"node {i}: {n}" for i, n in sorted(failures.items()))
        )
    ok = [g for g in gets if g.error is None and g.sha256_ok]
    speeds = [size / MB / g.seconds for g in ok if g.seconds]
    served = [n["served_bytes"] or 0 for n in nodes]
    total_served = sum(served)
    stored = int(added["stored_bytes"])
    peaks = [n["daemon_peak_rss"] for n in nodes if n["daemon_peak_rss"] is not None]
    clients = [g.peak_rss for g in gets if g.peak_rss is not None]
    summary = {
        "gets": len(gets),
        "gets_ok": len(ok),
        "gets_failed": len(gets) - len(ok),
        "total_seconds": total_seconds,
        "first_done_seconds": first_done,
        "aggregate_mb_s": len(ok) * size / MB / total_seconds if total_seconds else None,
        "get_mb_s_min": min(speeds) if speeds else None,
        "get_mb_s_median": _median(speeds) if speeds else None,
        "get_mb_s_max": max(speeds) if speeds else None,
        "served_bytes_total": total_served,
        "served_per_stored": total_served / (stored * len(gets)) if gets and stored else 0.0,
        "node0_share": served[0] / total_served if total_served else 0.0,
        "serving_nodes": sum(1 for b in served[1:] if b),
        "daemon_peak_rss_max": max(peaks) if peaks else None,
        "daemon_peak_rss_mean": int(sum(peaks) / len(peaks)) if peaks else None,
        "client_peak_rss_max": max(clients) if clients else None,
    }
    return {
        "machine": info,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "nodes_count": args.nodes,
        "size": size,
        "sha256": want,
        "root": root_cid,
        "stored_bytes": stored,
        "blocks": added["blocks"],
        "up_seconds": up_seconds,
        "add_seconds": add_seconds,
        "status_seconds": status_seconds,
        "summary": summary,
        "nodes": nodes,
        "problems": problems,
    }


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def teardown(root: Path, keep: bool, gets: Sequence[Get]) -> None:
    """Stop everything, whatever happened; not interruptible (a second Ctrl-C is ignored, and so is it
    by 'testnet down', which inherits the ignored SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_gets(gets)
    if (root / STATE_NAME).exists():
        _say("stopping the testnet" + ("" if keep else " and deleting it"))
        try:
            testnet(root, "down", *([] if keep else ["--purge"]), timeout=DOWN_TIMEOUT)
        except BenchError as exc:
            print(f"bench_testnet: error: {exc}", file=sys.stderr)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_testnet.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=_node_count, default=20, help="daemons, node 0 included (default 20)")
    parser.add_argument("--size", type=parse_size, default=64 * MIB, help="file size (default 64MiB)")
    parser.add_argument(
        "--dir",
        type=Path,
        help="keep the testnet here (an empty or new directory; default: a temp dir, deleted)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds the gets may take before they are killed (default 900)",
    )
    return parser


def work_dir(keep: Path | None, prefix: str) -> Path:
    """Where a benchmark works: ``keep`` (new or empty, kept afterwards), else a new temp directory."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    root = keep.absolute()
    if root.exists() and any(root.iterdir()):
        raise BenchError(f"{root} is not empty: name a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        root = work_dir(args.dir, "sealbox-bt-")
    except BenchError as exc:
        print(f"bench_testnet: error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    gets: list[Get] = []
    try:
        result = bench(args, root, gets)
    except BenchError as exc:
        print(f"bench_testnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_testnet: error: interrupted", file=sys.stderr)
        return 130
    finally:
        teardown(root, args.dir is not None, gets)
    result["args"] = {"nodes": args.nodes, "size": args.size, "timeout": args.timeout}
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.dir is not None:
        print(f"\nrepos, daemon logs and get outputs kept in {root}")
    return 0 if result["summary"]["gets_failed"] == 0 else 1


if __name__ == "__main__":
    reexec_in_venv(__file__)
    sys.exit(main())
