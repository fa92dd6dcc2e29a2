#!/usr/bin/env python3
"""Benchmark: the block exchange between separate OS processes on loopback, against a raw stream.

A SIZE random file is added to one repo and copied to PROVIDERS repos; each provider is a process of its
own serving ``/sealbox/blocks/1.0.0`` (node/exchange.py) from its repo; a fetcher process connects to
them and fetches every block into an empty repo. Printed: MB/s from the fetcher's first dial to the last
block stored (1 MB = 10^6 bytes), bytes received / file size, the fetcher's peak RSS, the CPU the
fetcher and the providers used (cores: CPU seconds per second of the fetch), and the ratio to a
single raw noise+yamux libp2p stream between two processes measured in the same run
(scripts/bench_stream.py).

Providers and fetcher are this script in a serving or fetching mode, driving the modules the daemon
uses (node/exchange.py over node/host.py) without the DHT: the fetcher is given the providers' addresses.

    scripts/bench_transfer.py [--size 256MiB] [--providers 1 --providers 4] [--json FILE]

Goals (issue 3): 1->1 >= 0.6 x the raw stream; 4->1 >= 1->1 with bytes received <= 1.05 x file size;
fetcher RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.add import add_path  # noqa: E402
from node.alloc import keep_freed_buffers  # noqa: E402
from node.exchange import BlockServer, fetch_blocks  # noqa: E402
from node.host import connect, listen_addrs, new_identity, open_host  # noqa: E402
from node.repo import Repo  # noqa: E402
from protocol.cid import CID_LEN  # noqa: E402

MB = 1e6


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


async def serve(repo_path: Path) -> None:
    """Serve blocks until stdin closes; print the listen address first, the CPU seconds spent serving
    last."""
    repo = Repo.open(repo_path, create=False)
    async with open_host(new_identity()) as host:
        BlockServer(repo.blocks).install(host)
        cpu_start = _cpu_seconds()
        print(listen_addrs(host)[0], flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
        print(_cpu_seconds() - cpu_start, flush=True)


async def fetch(repo_path: Path, peers: list[str], cids: list[bytes]) -> dict[str, object]:
    repo = Repo.open(repo_path)
    async with open_host(new_identity()) as host:
        start = time.perf_counter()
        cpu_start = _cpu_seconds()
        peer_ids = [await connect(host, addr) for addr in peers]
        stats = await fetch_blocks(host, repo.blocks, peer_ids, cids)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "blocks": stats.blocks,
        "bytes_received": stats.bytes,
        "per_peer": sorted(stats.received_from.values(), reverse=True),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "cpu_per_wall": (_cpu_seconds() - cpu_start) / seconds,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_stream_mb_s(size: int, work: Path) -> float:
    out = work / "stream.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_stream.py"),
            "--size",
            str(size),
            "--runs",
            "1",
            "--no-raw",
            "--json",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return float(json.loads(out.read_text())["noise_yamux_mb_s"][0])


def run_transfer(
    work: Path, source_repo: Path, cids_file: Path, providers: int, size: int
) -> dict[str, object]:
    procs = []
    try:
        addrs = []
        for i in range(providers):
            repo = work / f"provider-{providers}-{i}"
            shutil.copytree(source_repo, repo)
            proc = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(repo)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            addrs.append(proc.stdout.readline().strip())
        fetcher_repo = work / f"fetcher-{providers}"
        result = subprocess.run(
            [sys.executable, __file__, "--fetch", str(fetcher_repo), "--cids", str(cids_file), *addrs],
            check=True,
            capture_output=True,
            text=True,
        )
        stats: dict[str, object] = json.loads(result.stdout)
        shutil.rmtree(fetcher_repo)
        serving_cpu = 0.0
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            serving_cpu += float(proc.stdout.readline())
        stats["providers_cpu_per_wall"] = serving_cpu / float(str(stats["seconds"]))
        return stats
    finally:
        for proc in procs:
            assert proc.stdin is not None
            if not proc.stdin.closed:
                proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)
        for i in range(providers):
            shutil.rmtree(work / f"provider-{providers}-{i}", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=256 << 20)
    parser.add_argument("--providers", type=int, action="append")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fetch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cids", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("peers", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_buffers()  # as the sealbox command does
    if args.serve:
        trio.run(serve, args.serve)
        return
    if args.fetch:
        raw = args.cids.read_bytes()
        cids = [raw[i : i + CID_LEN] for i in range(0, len(raw), CID_LEN)]
        print(json.dumps(trio.run(fetch, args.fetch, args.peers, cids)))
        return

    work = Path(tempfile.mkdtemp(prefix="sealbox-transfer-"))
    try:
        src = work / "input.bin"
        with open(src, "wb") as f:
            for _ in range(args.size // (1 << 20)):
                f.write(os.urandom(1 << 20))
            f.write(os.urandom(args.size % (1 << 20)))
        source = Repo.open(work / "source")
        root = add_path(source, src).link.root
        cids_file = work / "cids"
        cids_file.write_bytes(b"".join(source.pin_blocks(root)))
        source.close()
        raw = raw_stream_mb_s(args.size, work)
        mib = args.size / (1 << 20)
        print(f"file {mib:.0f} MiB, {os.cpu_count()} cores; raw noise+yamux stream {raw:.0f} MB/s")
        rows = []
        for providers in args.providers or [1, 4]:
            stats = run_transfer(work, work / "source", cids_file, providers, args.size)
            speed = args.size / MB / float(str(stats["seconds"]))
            received = int(str(stats["bytes_received"]))
            row = {
                "providers": providers,
                "mb_s": round(speed, 1),
                "vs_raw_stream": round(speed / raw, 3),
                "bytes_received_per_file_byte": round(received / args.size, 4),
                "blocks_per_provider": stats["per_peer"],
                "fetcher_peak_rss_mb": round(int(str(stats["peak_rss"])) / MB, 1),
                "fetcher_cpu_per_wall": round(float(str(stats["cpu_per_wall"])), 2),
                "providers_cpu_per_wall": round(float(str(stats["providers_cpu_per_wall"])), 2),
            }
            rows.append(row)
            print(
                f"{providers} -> 1: {speed:.0f} MB/s ({speed / raw:.2f} x raw stream),"
                f" received {row['bytes_received_per_file_byte']} x file size,"
                f" blocks per provider {row['blocks_per_provider']},"
                f" fetcher RSS {row['fetcher_peak_rss_mb']:.0f} MB,"
                f" CPU: fetcher {row['fetcher_cpu_per_wall']}, providers"
                f" {row['providers_cpu_per_wall']} core(s)"
            )
        if args.json:
            args.json.write_text(
                json.dumps({"raw_stream_mb_s": raw, "size": args.size, "runs": rows}, indent=2) + "\n"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
