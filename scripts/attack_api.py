"""Attack a real daemon's control API the way a hostile local process would, and measure what the owner
sees (standard library only; bounded: about a minute).

1. ``--bodies N``: N hostile requests with the valid token (nesting tens of thousands deep, repeated keys,
   NaN, huge integers, bytes that are not UTF-8, HEAD requests, random mixes of brackets), each followed
   by a check that the daemon still answers ``GET /v1/status``. Reports how many it survived.
2. ``--flood C``: C connections that never send a byte, each re-opened as soon as the daemon closes it,
   while ``sealbox status`` runs ``--runs`` times; and the same runs without the flood. Reports the
   successes and the median / worst latency of both.

Runs the code on PYTHONPATH, so an old checkout can be measured against a new one; run it from outside
the checkout (``python -m`` puts the current directory first on the path):
``cd /tmp && PYTHONPATH=/path/to/checkout python /path/to/checkout/scripts/attack_api.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLI = [sys.executable, "-m", "node.cli.main"]


def start_daemon(repo: Path, home: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {"HOME": str(home)}
    proc = subprocess.Popen(
        [*CLI, "--repo", str(repo), "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # the daemon says when it answers
        if b"ready: peer" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc
    raise SystemExit(f"the daemon did not start ({proc.wait()})")


def exchange(sock_path: Path, raw: bytes, timeout: float = 30) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def request(token: str, method: str, target: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def hostile_bodies(n: int, rng: random.Random) -> list[tuple[str, bytes]]:
    fixed = [
        ("POST", b"[" * 60_000),
        ("POST", b'{"a":' * 12_000),
        ("POST", b'{"link": "x", "link": "y"}'),
        ("POST", b'{"seed": NaN}'),
        ("POST", b'{"seed": ' + b"9" * 5000 + b"}"),
        ("POST", b'{"link": "\xff"}'),
        ("HEAD", b""),
    ]
    out = []
    for i in range(n):
        if i < len(fixed):
            out.append(fixed[i])
            continue
        kind = rng.randrange(3)
        size = rng.randrange(1, 60_000)
        if kind == 0:
            out.append(("POST", bytes(rng.choice(b'[]{}",:1\\ ') for _ in range(size))))
        elif kind == 1:
            depth = rng.randrange(30, 20_000)
            out.append(("POST", b'{"link":' * depth + b'"x"' + b"}" * rng.randrange(depth)))
        else:
            out.append(("POST", rng.randbytes(rng.randrange(1, 2000))))
    return out


def attack_bodies(sock: Path, token: str, n: int) -> int:
    rng = random.Random(12)
    survived = 0
    status = request(token, "GET", "/v1/status")
    for method, body in hostile_bodies(n, rng):
        target = "/v1/status" if method == "HEAD" else rng.choice(["/v1/fetch", "/v1/rm", "/v1/add"])
        exchange(sock, request(token, method, target, body))
        if not exchange(sock, status).startswith(b"HTTP/1.1 200"):
            break
        survived += 1
    return survived


def flood(sock: Path, connections: int, stop: threading.Event) -> None:
    def one() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(sock))
                    s.settimeout(1)
                    while not stop.is_set():
                        try:
                            if not s.recv(4096):
                                break
                        except TimeoutError:
                            continue
                except OSError:
                    continue

    for _ in range(connections):
        threading.Thread(target=one, daemon=True).start()


def status_runs(repo: Path, home: Path, runs: int) -> tuple[int, list[float], str]:
    ok, took, last_error = 0, [], ""
    for _ in range(runs):
        start = time.monotonic()
        result = subprocess.run(
            [*CLI, "--repo", str(repo), "status"],
            env=os.environ | {"HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        took.append(time.monotonic() - start)
        if result.returncode == 0:
            ok += 1
        else:
            last_error = result.stderr.strip()
    return ok, took, last_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=500)
    parser.add_argument("--flood", type=int, default=40)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        repo = Path(tmp) / "flooded"
        daemon = start_daemon(repo, home)
        try:
            ok, took, _ = status_runs(repo, home, args.runs)
            print(f"status, no flood: {ok}/{args.runs} ok, median {statistics.median(took):.2f} s")
            stop = threading.Event()
            flood(repo / "api.sock", args.flood, stop)
            ok, took, error = status_runs(repo, home, args.runs)
            stop.set()
            print(
                f"status, {args.flood} idle connections: {ok}/{args.runs} ok,"
                f" median {statistics.median(took):.2f} s, worst {max(took):.2f} s"
                + (f" (last error: {error})" if error else "")
            )
        finally:
            daemon.terminate()
            daemon.wait(30)
        repo = Path(tmp) / "attacked"
        daemon = start_daemon(repo, home)
        try:
            token = (repo / "api.token").read_text().strip()
            survived = attack_bodies(repo / "api.sock", token, args.bodies)
            try:
                code = daemon.wait(10) if survived < args.bodies else None
            except subprocess.TimeoutExpired:
                code = None
            state = "still running" if code is None else f"exited with {code}"
            print(f"hostile requests survived: {survived}/{args.bodies}; the daemon {state}")
        finally:
            if daemon.poll() is None:
                daemon.terminate()
                daemon.wait(30)


if __name__ == "__main__":
    main()
