#!/usr/bin/env python3
"""Benchmark: the block exchange between separate OS processes on loopback, against a raw stream.

A SIZE random file is added to one repo and copied to PROVIDERS repos; each provider is a process of its
own serving ``/sealbox/blocks/1.0.0`` (node/net/exchange.py) from its repo; a fetcher process connects to
them and fetches every block into an empty repo, RUNS times (a fresh repo each time, the same
providers: the first fetch also pays for the providers' warm-up). Printed, as medians: MB/s from the
fetcher's first dial to the last block stored (1 MB = 10^6 bytes), bytes received / file size, the
fetcher's peak RSS, the CPU the fetcher and the providers used (cores: CPU seconds per second of the
fetch), and the ratio to a single raw noise+yamux libp2p stream between two processes measured in the
same run (scripts/bench_stream.py).

Providers and fetcher are this script in a serving or fetching mode, driving the modules the daemon
uses (node/net/exchange.py over node/net/host.py) without the DHT: the fetcher is given the
providers' addresses.

    scripts/bench_transfer.py [--size 256MiB] [--providers 1 --providers 4] [--runs 3] [--json FILE]

Goals (issue 3): 1->1 >= 0.6 x the raw stream; 4->1 >= 1->1 with bytes received <= 1.05 x file size;
fetcher RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.files.add import add_path  # noqa: E402
from node.files.alloc import keep_freed_buffers  # noqa: E402
from node.net.exchange import BlockServer, fetch_blocks  # noqa: E402
from node.net.host import connect, listen_addrs, new_identity, open_host  # noqa: E402
from node.store.repo import Repo  # noqa: E402
from protocol.cid import split_cids  # noqa: E402

MB = 1e6


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


async def serve(repo_path: Path) -> None:
    """Serve blocks until stdin closes; print the listen address first, then, for every line read from
    stdin, the CPU seconds spent so far."""
    repo = Repo.open(repo_path, create=False)
    async with open_host(new_identity()) as host:
        BlockServer(repo.blocks).install(host)
        print(listen_addrs(host)[0], flush=True)
        while await trio.to_thread.run_sync(sys.stdin.readline):
            print(_cpu_seconds(), flush=True)


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


def raw_stream_mb_s(size: int, runs: int, work: Path) -> list[float]:
    out = work / "stream.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_stream.py"),
            "--size",
            str(size),
            "--runs",
            str(runs),
            "--no-raw",
            "--json",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return [float(rate) for rate in json.loads(out.read_text())["noise_yamux_mb_s"]]


def _provider_cpu(procs: list[subprocess.Popen[str]]) -> float:
    total = 0.0
    for proc in procs:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("cpu\n")
        proc.stdin.flush()
        total += float(proc.stdout.readline())
    return total


def run_transfer(
    work: Path, source_repo: Path, cids_file: Path, providers: int, runs: int
) -> list[dict[str, object]]:
    """``runs`` fetches into a fresh repo each, from the same ``providers`` processes."""
    procs: list[subprocess.Popen[str]] = []
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
        results = []
        for _ in range(runs):
            # dirty pages (the copies above, the last run's repo) are written back now, not by the
            # kernel's flusher threads during the timed fetch, whose CPU and disk they would share
            os.sync()
            fetcher_repo = work / f"fetcher-{providers}"
            cpu_before = _provider_cpu(procs)
            result = subprocess.run(
                [sys.executable, __file__, "--fetch", str(fetcher_repo), "--cids", str(cids_file), *addrs],
                check=True,
                capture_output=True,
                text=True,
            )
            serving_cpu = _provider_cpu(procs) - cpu_before
            stats: dict[str, object] = json.loads(result.stdout)
            shutil.rmtree(fetcher_repo)
            stats["providers_cpu_per_wall"] = serving_cpu / float(str(stats["seconds"]))
            results.append(stats)
        return results
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
    parser.add_argument("--runs", type=int, default=3, help="fetches per row (and raw stream runs)")
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
        cids = split_cids(raw)
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
        raws = raw_stream_mb_s(args.size, args.runs, work)
        raw = statistics.median(raws)
        mib = args.size / (1 << 20)
        print(
            f"file {mib:.0f} MiB, {os.cpu_count()} cores, {args.runs} run(s) per row, medians;"
            f" raw noise+yamux stream {raw:.0f} MB/s (runs: {' '.join(f'{r:.0f}' for r in raws)})"
        )
        rows = []
        for providers in args.providers or [1, 4]:
            runs = run_transfer(work, work / "source", cids_file, providers, args.runs)
            speeds = [args.size / MB / float(str(run["seconds"])) for run in runs]
            speed = statistics.median(speeds)
            mid = runs[speeds.index(sorted(speeds)[len(speeds) // 2])]  # the median run's details
            received = max(int(str(run["bytes_received"])) for run in runs)
            row = {
                "providers": providers,
                "mb_s": round(speed, 1),
                "mb_s_runs": [round(x, 1) for x in speeds],
                "vs_raw_stream": round(speed / raw, 3),
                "bytes_received_per_file_byte": round(received / args.size, 4),
                "blocks_per_provider": mid["per_peer"],
                "fetcher_peak_rss_mb": round(max(int(str(run["peak_rss"])) for run in runs) / MB, 1),
                "fetcher_cpu_per_wall": round(float(str(mid["cpu_per_wall"])), 2),
                "providers_cpu_per_wall": round(float(str(mid["providers_cpu_per_wall"])), 2),
            }
            rows.append(row)
            print(
                f"{providers} -> 1: {speed:.0f} MB/s ({speed / raw:.2f} x raw stream;"
                f" runs {' '.join(f'{x:.0f}' for x in speeds)}),"
                f" received {row['bytes_received_per_file_byte']} x file size (most),"
                f" blocks per provider {row['blocks_per_provider']},"
                f" fetcher RSS {row['fetcher_peak_rss_mb']:.0f} MB (peak),"
                f" CPU: fetcher {row['fetcher_cpu_per_wall']}, providers"
                f" {row['providers_cpu_per_wall']} core(s)"
            )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"raw_stream_mb_s": raw, "raw_stream_runs": raws, "size": args.size, "rows": rows},
                    indent=2,
                )
                + "\n"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
