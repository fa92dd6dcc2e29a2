#!/usr/bin/env python3
"""Attack: flood a serving ``sealbox daemon`` with block-exchange requests it cannot send, and measure
its memory (issue 12, item 5c).

A real daemon runs as a subprocess on a fresh repo holding a random file (the figure is that process's
RSS alone); this script is the attacker, libp2p hosts on loopback. It opens STREAMS streams to the
daemon from PEERS identities, writes WANTS requests for the file's blocks on each and never reads an
answer; then, on one more stream, from another identity (the first may be at the daemon's per-peer
stream cap), FLOOD requests for blocks the daemon lacks (each answered NOT_FOUND, which a server
remembers to send HAVE later) in one write. Printed: the daemon's RSS before, its peak (VmHWM) and its
RSS once the attack has gone on for HOLD seconds, and how many of the streams the daemon refused or
reset.

    scripts/want_flood.py [--streams 1000] [--peers 1] [--wants 64] [--flood 100000] [--hold 20]

Goal: the daemon's peak RSS at most 50 MB above its RSS before the attack.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from contextlib import AsyncExitStack
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libp2p.abc import INetStream  # noqa: E402
from libp2p.exceptions import BaseLibp2pError  # noqa: E402

from node.net.errors import NetworkError  # noqa: E402
from node.net.host import connect, new_identity, open_host, open_stream  # noqa: E402
from node.store.repo import Repo  # noqa: E402
from protocol.cid import cid_of  # noqa: E402
from protocol.messages import PROTOCOL_ID, Want, encode_message  # noqa: E402

SEALBOX = str(Path(sys.executable).parent / "sealbox")
READY = re.compile(r"ready: peer \S+ listening on ([^\s;]+)")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def start_daemon(repo: Path, home: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}
    proc = subprocess.Popen(
        [SEALBOX, "--repo", str(repo), "daemon"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if match := READY.search(line):
            addr = match.group(1)
            # keep draining the log, so that the daemon never blocks on a full pipe
            threading.Thread(target=lambda: [None for _ in proc.stderr or []], daemon=True).start()
            return proc, addr
    raise RuntimeError(f"the daemon exited ({proc.wait()}) before it was ready")


async def hold(seconds: float, pid: int) -> int:
    """Let the daemon work through what it can for ``seconds`` (the attacker never reads); returns the
    highest RSS seen meanwhile."""
    peak = rss_kib(pid)
    for _ in range(int(seconds * 2)):
        await trio.sleep(0.5)  # a sampling interval, not a synchronisation
        peak = max(peak, rss_kib(pid))
    return peak


async def attack(addr: str, cids: list[bytes], args: argparse.Namespace, pid: int) -> dict[str, int]:
    refused = 0
    async with AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(new_identity())) for _ in range(args.peers)]
        for host in hosts:
            peer = await connect(host, addr)
        streams: list[INetStream] = []
        wants = b"".join(encode_message(Want(n, cids[n % len(cids)])) for n in range(args.wants))
        for i in range(args.streams):
            try:
                stream = await open_stream(hosts[i % len(hosts)], peer, PROTOCOL_ID)
                await stream.write(wants)
            except (NetworkError, BaseLibp2pError, OSError, trio.BrokenResourceError):
                refused += 1
                continue
            streams.append(stream)
        flood = b"".join(encode_message(Want(n, cid_of(n.to_bytes(8, "big")))) for n in range(args.flood))
        async with open_host(new_identity()) as second:
            await connect(second, addr)
            try:
                last = await open_stream(second, peer, PROTOCOL_ID)
                await last.write(flood)
            except (NetworkError, BaseLibp2pError, OSError, trio.BrokenResourceError):
                refused += 1
            peak = await hold(args.hold, pid)
        # which streams did the daemon reset? A refused stream's read fails at once.
        reset = 0

        async def probe(stream: INetStream) -> None:
            nonlocal reset
            with trio.move_on_after(5):
                try:
                    await stream.read(1)
                except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    reset += 1

        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(probe, stream)
        return {
            "streams_opened": len(streams),
            "streams_refused_or_reset": refused + reset,
            "rss_during_kib": rss_kib(pid),
            "rss_peak_sampled_kib": peak,
        }


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # the attacker's own failed negotiations
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--peers", type=int, default=1, help="attacker identities the streams come from")
    parser.add_argument("--wants", type=int, default=64)
    parser.add_argument("--flood", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=64 << 20, help="bytes of the file the daemon holds")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the attack goes on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="want-flood-") as tmp:
        base = Path(tmp)
        (base / "home").mkdir()
        sample = base / "sample.bin"
        sample.write_bytes(os.urandom(args.size))
        repo_path = base / "repo"
        env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(base / "home")}
        subprocess.run(
            [SEALBOX, "--repo", str(repo_path), "add", str(sample)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        repo = Repo.open(repo_path, create=False)
        try:
            cids = [cid for cid, _ in repo.blocks]
        finally:
            repo.close()
        proc, addr = start_daemon(repo_path, base / "home")
        try:
            before = rss_kib(proc.pid)
            result = trio.run(attack, addr, cids, args, proc.pid)
            result |= {"rss_before_kib": before, "rss_peak_kib": rss_kib(proc.pid, "VmHWM")}
            result["alive"] = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if args.json:
        print(json.dumps(result))
        return
    mb = 1024
    print(
        f"daemon RSS {result['rss_before_kib'] / mb:.0f} MB before, "
        f"peak {result['rss_peak_kib'] / mb:.0f} MB "
        f"(+{(result['rss_peak_kib'] - result['rss_before_kib']) / mb:.0f} MB), "
        f"{result['rss_during_kib'] / mb:.0f} MB at the end of the attack; "
        f"{result['streams_refused_or_reset']} of {args.streams + 1} streams refused or reset; "
        f"daemon {'alive' if result['alive'] else 'DEAD'}"
    )


if __name__ == "__main__":
    main()
