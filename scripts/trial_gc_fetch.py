"""The trial from issue 12, item 1: ``sealbox gc`` over and over while a daemon fetches a big file.

Two real daemons on 127.0.0.1: A seeds a file of SIZE MB (added with --peer-hints); for each trial a
fresh daemon B runs ``sealbox get LINK`` (through B's daemon) while the CLI runs ``sealbox gc`` on B's
repo in a loop until the get ends. Reported per trial: how far the fetch was at each gc, whether the
get failed, the index rows left pointing at a pack that no longer exists, whether what B pinned reads
back byte-exact, and (when the get failed) whether a second get, with no gc, then works.

    PYTHONPATH=/path/to/code python scripts/trial_gc_fetch.py [TRIALS] [SIZE_MB]
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from node.daemon.api_client import ApiClient
from node.errors import NodeError

SEALBOX = os.environ.get("SEALBOX_BIN", str(Path(sys.executable).with_name("sealbox")))


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [SEALBOX, *map(str, args)], capture_output=True, text=True, timeout=600, check=False
    )
    if check and result.returncode:
        raise SystemExit(f"sealbox {args[2:3]} failed: {result.stderr.strip()}")
    return result


def daemon(repo: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as sink:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [SEALBOX, "--repo", str(repo), "daemon"], stdout=subprocess.DEVNULL, stderr=sink
        )
    deadline = time.monotonic() + 60
    while b"ready: peer" not in log.read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"daemon on {repo} did not start: {log.read_text()[-400:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dangling_rows(repo: Path) -> int:
    db = sqlite3.connect(repo / "blocks" / "index.sqlite")
    try:
        packs = db.execute("SELECT pack, count(*) FROM blocks GROUP BY pack").fetchall()
    finally:
        db.close()
    return sum(n for pack, n in packs if not (repo / "blocks" / "packs" / f"{pack}.pack").exists())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 160
    with tempfile.TemporaryDirectory(prefix="trial-gc-") as tmp:
        base = Path(tmp)
        source = base / "source.bin"
        with open(source, "wb") as f:
            for _ in range(size):
                f.write(os.urandom(1 << 20))
        expected = sha256(source)
        seed = daemon(base / "a", base / "a.log")
        failed = dangling_trials = pinned_bad = retry_failed = 0
        try:
            link = run("--repo", base / "a", "add", source, "--peer-hints").stdout.strip()
            for trial in range(trials):
                repo, out = base / f"b{trial}", base / f"out{trial}"
                fetcher = daemon(repo, base / f"b{trial}.log")
                try:
                    get = subprocess.Popen(
                        [SEALBOX, "--repo", str(repo), "get", link, "-o", str(out)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    gcs = 0
                    at: list[int] = []  # percent fetched when each gc started
                    while get.poll() is None:
                        try:
                            fetches = ApiClient(repo).call("GET", "/v1/fetching", timeout=10)["fetches"]
                        except NodeError:
                            fetches = []
                        if fetches:
                            at.append(100 * int(fetches[0]["bytes"]) // (size << 20))
                        run("--repo", repo, "gc", check=False)
                        gcs += 1
                    error = get.stderr.read().strip() if get.stderr else ""
                    pins = json.loads(run("--repo", repo, "ls", "--json").stdout)
                finally:
                    stop(fetcher)
                rows = dangling_rows(repo)
                retry = None
                if get.returncode:  # a second get of the link, gc left alone
                    fetcher = daemon(repo, base / f"b{trial}-again.log")
                    try:
                        retry = run("--repo", repo, "get", link, "-o", out, check=False).returncode == 0
                    finally:
                        stop(fetcher)
                exact = None
                if pins:  # read back what was pinned, now, from the repo alone
                    again = base / f"again{trial}"
                    result = run("--repo", repo, "get", link, "-o", again, check=False)
                    exact = result.returncode == 0 and sha256(again) == expected
                    again.unlink(missing_ok=True)
                failed += get.returncode != 0
                retry_failed += retry is False
                dangling_trials += rows > 0
                pinned_bad += exact is False
                print(
                    f"trial {trial}: {gcs} gc runs (at {min(at, default=0)}-{max(at, default=0)}% fetched),"
                    f" get exit {get.returncode}"
                    f"{' (' + error.splitlines()[-1][:80] + ')' if error else ''}, dangling rows {rows},"
                    f" pinned {bool(pins)}, pinned copy byte-exact {exact}, second get works {retry}",
                    flush=True,
                )
                out.unlink(missing_ok=True)
        finally:
            stop(seed)
        print(
            f"{trials} trials of {size} MB: get failed in {failed}, dangling rows left in {dangling_trials},"
            f" a pinned root not byte-exact in {pinned_bad}, a second get failed in {retry_failed}"
        )


if __name__ == "__main__":
    main()
