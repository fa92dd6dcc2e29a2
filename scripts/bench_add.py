#!/usr/bin/env python3
"""Benchmark: add and get a large file with the real CLI; compare with the in-memory limit.

The limit is what one core does on the same bytes with nothing but the data path's own work: seal with
AES-256-GCM and hash with SHA-256, in memory, at the chosen chunk size. ``add`` and ``get`` run as
separate processes (the real ``sealbox`` command) against a fresh repo, so their figures include
start-up, reading the input, writing durable blocks (fsynced before add returns) and writing the output.
The copy, add and get each start after ``sync``: the benchmark's own writes before them (the 1 GiB input
is written back 30 s after it was made, by default) must not land in their time.

    scripts/bench_add.py [--size 1GiB] [--chunk-size 256KiB ...] [--dir DIR] [--json FILE]

Goals (issue 2): add >= 0.5 x limit, get >= 0.5 x limit, peak RSS <= 200 MB whatever the size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent.parent
MB = 1e6


def parse_size(text: str) -> int:
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def limit_mb_s(chunk_size: int, total: int = 256 << 20) -> float:
    """Seal + SHA-256 of ``total`` bytes in ``chunk_size`` pieces, in memory, one core."""
    aead = AESGCM(os.urandom(32))
    chunk = os.urandom(chunk_size)
    n = max(1, total // chunk_size)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            hashlib.sha256(aead.encrypt(i.to_bytes(12, "big"), chunk, None)).digest()
        best = min(best, time.perf_counter() - start)
    return n * chunk_size / MB / best


def copy_mb_s(src: Path, dst: Path) -> float:
    """The storage floor: copy the same file (read, write, fsync) with no crypto at all."""
    start = time.perf_counter()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    elapsed = time.perf_counter() - start
    size = dst.stat().st_size
    dst.unlink()
    return size / MB / elapsed


def settle() -> None:
    """Let the disk finish what the benchmark itself left it (the input's writeback, the discards of
    deleted files), so that each timed command starts from a quiet disk, as it would for a user."""
    os.sync()


def make_input(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            piece = os.urandom(min(remaining, 8 << 20))
            f.write(piece)
            remaining -= len(piece)


def run(cmd: list[str]) -> tuple[float, tuple[float, float], int, str]:
    """Run ``cmd``; returns (wall seconds, (user, system) CPU seconds, peak RSS in bytes, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[1:3]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return elapsed, (usage.ru_utime, usage.ru_stime), usage.ru_maxrss * 1024, out.decode().strip()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_size, default=1 << 30)
    parser.add_argument("--chunk-size", type=parse_size, action="append", dest="chunk_sizes")
    parser.add_argument("--dir", type=Path, help="working directory (default: a temp dir, removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    chunk_sizes = args.chunk_sizes or [256 << 10]
    sealbox = str(Path(sys.executable).parent / "sealbox")
    work = Path(tempfile.mkdtemp(prefix="sealbox-bench-", dir=args.dir))
    results = []
    try:
        src = work / "input.bin"
        make_input(src, args.size)
        want = sha256_file(src)  # also warms the page cache: every run reads from memory
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"file: {args.size / (1 << 20):.0f} MiB random bytes in {work}")
        print("limit: AES-256-GCM + SHA-256 of the same bytes in memory, one core")
        print("copy: read + write + fsync of the same file on the same disk, no crypto")
        print("get again: the same get repeated at once, reusing the page cache the first one freed")
        print("CPU: user+sys seconds per GiB; the limit's CPU is 1073.7 / limit")
        print(
            f"{'chunk':>7} {'limit':>6} {'copy':>6} | {'add':>5} {'/lim':>5} {'user':>5} {'sys':>5}"
            f" | {'get':>5} {'/lim':>5} {'user':>5} {'sys':>5} | {'again':>5} {'/lim':>5}"
            f" | {'RSS add/get':>11}"
        )
        per_gib = (1 << 30) / args.size
        for cs in chunk_sizes:
            limit = limit_mb_s(cs)
            settle()
            copy = copy_mb_s(src, work / "copy.bin")
            settle()
            repo = work / f"repo-{cs}"
            out = work / f"out-{cs}.bin"
            t_add, cpu_add, rss_add, link = run(
                [sealbox, "--repo", str(repo), "-q", "add", "--chunk-size", str(cs), str(src)]
            )
            get = [sealbox, "--repo", str(repo), "-q", "get", link, "-o", str(out)]
            settle()
            t_get, cpu_get, rss_get, _ = run(get)
            if sha256_file(out) != want:
                sys.exit("get returned different bytes")
            out.unlink()  # not settled: "again" measures a get that reuses the pages the first one freed
            t_again, _cpu, _rss, _ = run(get)
            out.unlink()
            add_speed, get_speed, again_speed = (args.size / MB / t for t in (t_add, t_get, t_again))
            row = {
                "chunk_size": cs,
                "size": args.size,
                "limit_mb_s": round(limit, 1),
                "copy_mb_s": round(copy, 1),
                "add_mb_s": round(add_speed, 1),
                "add_ratio": round(add_speed / limit, 3),
                "add_cpu_user_s_per_gib": round(cpu_add[0] * per_gib, 2),
                "add_cpu_sys_s_per_gib": round(cpu_add[1] * per_gib, 2),
                "get_mb_s": round(get_speed, 1),
                "get_ratio": round(get_speed / limit, 3),
                "get_cpu_user_s_per_gib": round(cpu_get[0] * per_gib, 2),
                "get_cpu_sys_s_per_gib": round(cpu_get[1] * per_gib, 2),
                "get_again_mb_s": round(again_speed, 1),
                "get_again_ratio": round(again_speed / limit, 3),
                "add_peak_rss_mb": round(rss_add / MB, 1),
                "get_peak_rss_mb": round(rss_get / MB, 1),
            }
            results.append(row)
            print(
                f"{cs >> 10:>5}Ki {limit:>6.0f} {copy:>6.0f} | {add_speed:>5.0f} {add_speed / limit:>5.2f}"
                f" {cpu_add[0] * per_gib:>5.2f} {cpu_add[1] * per_gib:>5.2f}"
                f" | {get_speed:>5.0f} {get_speed / limit:>5.2f}"
                f" {cpu_get[0] * per_gib:>5.2f} {cpu_get[1] * per_gib:>5.2f}"
                f" | {again_speed:>5.0f} {again_speed / limit:>5.2f}"
                f" | {rss_add / MB:>4.0f}/{rss_get / MB:.0f} MB"
            )
            shutil.rmtree(repo)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": platform.platform(), "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
