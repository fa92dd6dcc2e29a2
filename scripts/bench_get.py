#!/usr/bin/env python3
"""Benchmark: how long a `sealbox get` through a daemon takes to succeed, or to fail, for real.

Two daemons on loopback, each a process of its own with a fresh repo: A adds a SIZE random file, B is
bootstrapped from A. Then, RUNS times each:

- **get**: B's CLI fetches A's link (`sealbox get LINK`) while A serves it: the whole command, from
  start to the file written (the daemon's fetch, the CLI's local rebuild).
- **hinted**: the same from a B that knows no peer (no bootstrap): only the link's peer hints
  (`add --peer-hints`) say where A is.
- **offline**: A is stopped (SIGTERM, waited for) and B's CLI is asked for another of A's links, whose
  record (naming A) B's DHT holds: the time until the command fails, and the line it failed with.

Each tree given with ``--tree`` is measured in the same run, interleaved (old, new, old, new...), with
the same interpreter, so the figures compare code and not machines: ``--tree OLD_CHECKOUT --tree .``.
The trees are imported through PYTHONPATH (so a checkout of another commit needs no install of its
own: the dependencies are this interpreter's). Printed: the median seconds per row and tree.

    scripts/bench_get.py [--size 4MiB] [--runs 3] [--tree DIR ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready: peer (\S+) listening on ([^ ;]+)")
JOINED = re.compile(r"bootstrap: reached [1-9]")  # a daemon given --bootstrap has joined the DHT
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 300.0


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    lower = text.strip().lower()
    for unit, factor in units.items():
        if lower.endswith(unit):
            return int(float(lower[: -len(unit)]) * factor)
    return int(lower)


class Daemon:
    """``sealbox daemon`` of ``tree`` on ``repo``, listening on a port of its own on 127.0.0.1."""

    def __init__(self, tree: Path, repo: Path, bootstrap: str | None = None) -> None:
        args = ["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"]
        if bootstrap is not None:
            args += ["--bootstrap", bootstrap]
        self.log = repo.with_suffix(".log")
        with self.log.open("w") as log:  # a file, not a pipe: a log nobody reads never blocks the daemon
            self.proc = subprocess.Popen(
                cli(tree, repo, *args), stderr=log, stdout=subprocess.DEVNULL, env=env(tree)
            )
        self.addr = self._wait_for(READY).group(2)
        if bootstrap is not None:
            self._wait_for(JOINED)

    def _wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first line of the daemon's log that matches, read as it grows (a benchmark's poll)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if match := pattern.search(text):
                return match
            if self.proc.poll() is not None:
                raise SystemExit("a daemon stopped before it was ready:\n" + text[-500:])
            time.sleep(0.05)
        raise SystemExit("a daemon did not start in time")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "SEALBOX_REPO": ""}


def cli(tree: Path, repo: Path, *args: str) -> list[str]:
    del tree  # the tree comes in through PYTHONPATH (env)
    return [sys.executable, "-P", "-m", "node.cli.main", "--repo", str(repo), *args]  # -P: no cwd on sys.path


def run(tree: Path, repo: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        cli(tree, repo, *args), capture_output=True, text=True, env=env(tree), timeout=COMMAND_TIMEOUT
    )
    return time.monotonic() - started, done


def link_of(tree: Path, repo: Path, path: Path, *flags: str) -> str:
    _, done = run(tree, repo, "add", str(path), "--json", *flags)
    if done.returncode != 0:
        raise SystemExit(f"add failed: {done.stderr.strip()}")
    return str(json.loads(done.stdout)["link"])


def one_round(tree: Path, work: Path, size: int) -> dict[str, float | str]:
    """One measurement of every row with ``tree``'s code, in fresh repos under ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    first, second = work / "first.bin", work / "second.bin"
    first.write_bytes(os.urandom(size))
    second.write_bytes(os.urandom(size))
    a = Daemon(tree, work / "a")
    b = c = None
    try:
        b = Daemon(tree, work / "b", bootstrap=a.addr)
        c = Daemon(tree, work / "c")
        # added once B has joined: A's announcements reach B's DHT (the records name A)
        hinted = link_of(tree, work / "a", first, "--peer-hints")
        link, later = link_of(tree, work / "a", first), link_of(tree, work / "a", second)
        got, done = run(tree, work / "b", "get", link, "-o", str(work / "got.bin"))
        if done.returncode != 0 or (work / "got.bin").read_bytes() != first.read_bytes():
            raise SystemExit(f"get failed: {done.stderr.strip()}")
        hint, done = run(tree, work / "c", "get", hinted, "-o", str(work / "hinted.bin"))
        if done.returncode != 0:
            raise SystemExit(f"hinted get failed: {done.stderr.strip()}")
        a.stop()
        failed, done = run(tree, work / "b", "get", later, "-o", str(work / "never.bin"))
        if done.returncode == 0:
            raise SystemExit("a get from a stopped provider succeeded")
        line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        return {"get": got, "hinted": hint, "offline": failed, "offline_line": line}
    finally:
        for daemon in (b, c, a):
            if daemon is not None and daemon.proc.poll() is None:
                daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=4 << 20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="a checkout to measure (repeatable)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    results: dict[Path, list[dict[str, float | str]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="bench-get-") as tmp:
        for i in range(args.runs):
            for n, tree in enumerate(trees):
                results[tree].append(one_round(tree, Path(tmp) / f"t{n}", args.size))
                print(f"run {i + 1}/{args.runs} {tree}: {results[tree][-1]}", file=sys.stderr)
    print("| tree | get (s) | hinted get, no bootstrap (s) | provider offline: fails after (s) | its line |")
    print("|---|---|---|---|---|")
    for tree, rows in results.items():
        med = {k: statistics.median(float(r[k]) for r in rows) for k in ("get", "hinted", "offline")}
        print(
            f"| {tree.name} | {med['get']:.2f} | {med['hinted']:.2f} | {med['offline']:.1f} |"
            f" {rows[-1]['offline_line']} |"
        )


if __name__ == "__main__":
    main()
