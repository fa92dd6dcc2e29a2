"""An add stopped midway (Ctrl-C, or killed outright) leaves nothing visible and loses nothing stored.

The add runs on a pseudo-terminal so that it draws its progress bar; the test waits for the bar to
show real progress (an event from the process, not a timer) and then interrupts it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from node.store.repo import Repo
from tests.helpers import SEALBOX, RunCli, drain_pty, start_on_pty

PROGRESS = re.compile(rb"\s([1-9][0-9]?)%")


def _start_add_on_pty(repo: Path, path: Path, home: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}
    return start_on_pty([SEALBOX, "--repo", str(repo), "add", str(path)], env)


def _wait_for_progress(leader: int, deadline: float) -> bytes:
    """Read the terminal until the progress bar passes 1%; the read blocks until the process writes."""
    seen = b""
    while not PROGRESS.search(seen):
        assert time.monotonic() < deadline, f"no progress shown: {seen[-300:]!r}"
        chunk = os.read(leader, 4096)
        assert chunk, "the add ended before showing progress"
        seen += chunk
    return seen


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_add_leaves_nothing_visible(how: signal.Signals, tmp_path: Path, run_cli: RunCli) -> None:
    repo_dir = tmp_path / "repo"
    small = tmp_path / "small.txt"
    small.write_bytes(b"kept safe\n")
    first = run_cli("--repo", repo_dir, "add", small)
    assert first.returncode == 0, first.stderr
    link = first.stdout.strip()
    packs_before = sorted(p.name for p in (repo_dir / "blocks" / "packs").iterdir())

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(192):  # large enough that the add is still running when the signal lands
            f.write(os.urandom(1 << 20))
    proc, leader = _start_add_on_pty(repo_dir, big, tmp_path / "home")
    try:
        _wait_for_progress(leader, time.monotonic() + 60)
        proc.send_signal(how)
        stdout, _ = proc.communicate(timeout=60)
        terminal = drain_pty(leader)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stdout == b""  # no link was printed
    if how == signal.SIGINT:
        assert proc.returncode == 130
        assert b"interrupted" in terminal and b"Traceback" not in terminal
    else:
        assert proc.returncode == -signal.SIGKILL

    listed = run_cli("--repo", repo_dir, "ls", "--json")
    assert listed.returncode == 0
    assert [entry["name"] for entry in json.loads(listed.stdout)] == [None]
    repo = Repo.open(repo_dir)
    try:
        assert len(repo.pins()) == 1
    finally:
        repo.close()
    # what was stored before is intact
    got = run_cli("--repo", repo_dir, "get", link, "-o", tmp_path / "out.txt")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out.txt").read_bytes() == b"kept safe\n"
    # Ctrl-C cleans up at once; after kill -9 the orphan pack is gc's to remove
    gc = run_cli("--repo", repo_dir, "gc", "--json")
    assert gc.returncode == 0, gc.stderr
    freed = json.loads(gc.stdout)["bytes_freed"]
    if how == signal.SIGKILL:
        assert freed > 0
    else:
        assert freed == 0
    assert sorted(p.name for p in (repo_dir / "blocks" / "packs").iterdir()) == packs_before
    assert list((repo_dir / "tmp").iterdir()) == []
