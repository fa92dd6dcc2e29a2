#!/usr/bin/env python3
"""Benchmark: one libp2p stream (Noise + yamux, configured by node/net/host.py) between two processes.

The raw baseline the transfer benchmark compares with: no block protocol, no disk, no crypto of ours.
This process listens on loopback; a second process (this script with ``--send``, started with
subprocess) connects, opens one stream, writes SIZE bytes in WRITE-byte writes and closes it. The
receiver times from the stream's first byte to its end and prints MB/s (1 MB = 10^6 bytes).

For scale it also times a plain trio TCP socket between two processes the same way: machines (and the
same machine from one hour to the next) differ, so compare ratios.

    scripts/bench_stream.py [--size 256MiB] [--write 256KiB] [--read 1MiB] [--runs 3] [--json FILE]

docs/py-libp2p.md ("Speeds") records ~205-215 MB/s for this path, raw TCP ~2,900 MB/s (ratio 0.075).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.files.alloc import keep_freed_buffers  # noqa: E402
from node.net.host import connect, listen_addrs, new_identity, open_host, open_stream, set_handler  # noqa: E402

PROTOCOL = "/sealbox/bench-stream/1"
MB = 1e6


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


# -- the sending process ------------------------------------------------------------------------------


async def send_libp2p(addr: str, size: int, write: int) -> None:
    chunk = os.urandom(write)
    async with open_host(new_identity()) as host:
        peer = await connect(host, addr)
        stream = await open_stream(host, peer, PROTOCOL)
        for offset in range(0, size, write):
            await stream.write(chunk[: min(write, size - offset)])
        await stream.close()
        await stream.read(1)  # the receiver's acknowledgement: do not tear the connection down early


async def send_raw(port: int, size: int, write: int) -> None:
    chunk = os.urandom(write)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    for offset in range(0, size, write):
        await stream.send_all(chunk[: min(write, size - offset)])
    await stream.aclose()


# -- the receiving process ----------------------------------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.received = 0
        self.start = 0.0
        self.end = 0.0
        self.done = trio.Event()

    def got(self, n: int) -> None:
        if not self.received:
            self.start = time.perf_counter()
        self.received += n

    def finish(self) -> None:
        self.end = time.perf_counter()
        self.done.set()

    def mb_s(self) -> float:
        return self.received / MB / (self.end - self.start)


async def spawn_and_wait(args: list[str], timer: Timer) -> None:
    proc = await trio.lowlevel.open_process([sys.executable, __file__, *args])
    with trio.fail_after(600):
        await timer.done.wait()
        code = await proc.wait()
    if code != 0:
        raise SystemExit(f"the sending process failed (exit {code})")


async def receive_libp2p(size: int, write: int, read: int) -> Timer:
    timer = Timer()

    async def handler(stream: INetStream) -> None:
        while True:
            try:
                timer.got(len(await stream.read(read)))
            except StreamEOF:  # the normal end of the stream
                break
        timer.finish()
        await stream.write(b"k")
        await stream.close()

    async with open_host(new_identity()) as host:
        set_handler(host, PROTOCOL, handler)
        args = ["--send", listen_addrs(host)[0], "--size", str(size), "--write", str(write)]
        await spawn_and_wait(args, timer)
    return timer


async def receive_raw(size: int, write: int, read: int) -> Timer:
    timer = Timer()

    async def handler(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(read):
            timer.got(len(data))
        timer.finish()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        await spawn_and_wait(["--send-raw", str(port), "--size", str(size), "--write", str(write)], timer)
        nursery.cancel_scope.cancel()
    return timer


def best_of(runs: int, label: str, receive: Callable[[], Awaitable[Timer]], size: int) -> list[float]:
    rates = []
    for run in range(runs):
        timer = trio.run(receive)
        if timer.received != size:
            raise SystemExit(f"{label}: received {timer.received} of {size} bytes")
        rates.append(timer.mb_s())
        seconds = timer.end - timer.start
        print(f"{label} run {run + 1}: {size / MB:.0f} MB in {seconds:.2f} s = {rates[-1]:.0f} MB/s")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="256MiB")
    parser.add_argument("--write", default="256KiB", help="bytes per write")
    parser.add_argument("--read", default="1MiB", help="bytes asked of each read")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-raw", action="store_true", help="skip the plain TCP baseline")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--send", metavar="MULTIADDR", help=argparse.SUPPRESS)
    parser.add_argument("--send-raw", metavar="PORT", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_buffers()  # as the sealbox command does
    size, write, read = parse_size(args.size), parse_size(args.write), parse_size(args.read)

    if args.send:
        trio.run(send_libp2p, args.send, size, write)
        return
    if args.send_raw:
        trio.run(send_raw, args.send_raw, size, write)
        return

    p2p = best_of(args.runs, "noise+yamux", functools.partial(receive_libp2p, size, write, read), size)
    raw = []
    if not args.no_raw:
        raw = best_of(args.runs, "raw tcp", functools.partial(receive_raw, size, write, read), size)
    summary = f"noise+yamux stream, 2 processes, loopback, {args.write} writes: {max(p2p):.0f} MB/s (best)"
    if raw:
        summary += f"; raw trio TCP {max(raw):.0f} MB/s; ratio {max(p2p) / max(raw):.3f}"
    print(summary)
    if args.json:
        info = {
            "size": size,
            "write": write,
            "read": read,
            "noise_yamux_mb_s": p2p,
            "raw_tcp_mb_s": raw,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
