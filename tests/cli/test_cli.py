"""The real ``sealbox`` command, run as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from node.cli.repo_commands import EMPTY_LS
from node.store.blockstore import FRAME, PACK_MAGIC
from node.store.repo import Repo
from protocol.cid import cid_of, cid_to_text
from protocol.link import ShareLink, format_link, parse_link
from protocol.seal import new_key
from tests.helpers import SEALBOX, RunCli, block_region, ok, one_error, read_region, snapshot, write_region


def _run_in_private_mount(script: str, env: dict[str, str], *, timeout: int) -> None:
    """Run a shell script in a mount namespace of its own (its tmpfs vanishes with it); skip where
    that cannot be had (the script exits 99 when the mount fails)."""
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def test_add_prints_one_link_and_get_rebuilds_the_file(
    run_cli: RunCli, repo_dir: Path, sample: Path, tmp_path: Path
) -> None:
    added = run_cli("--repo", repo_dir, "add", sample)
    stdout = ok(added)
    assert added.stderr == ""
    lines = stdout.splitlines()
    assert len(lines) == 1
    link = lines[0]
    assert link.startswith("sealbox:?v=1")
    assert parse_link(link).name is None  # names and sizes are opt-in
    out = tmp_path / "copy.bin"
    got = run_cli("--repo", repo_dir, "get", link, "-o", out)
    assert ok(got).strip() == str(out)
    assert out.read_bytes() == sample.read_bytes()
    # again, into a directory: DEST/NAME
    (tmp_path / "into").mkdir()
    ok(run_cli("--repo", repo_dir, "get", link, "-o", tmp_path / "into"))
    assert (tmp_path / "into" / "sample.bin").read_bytes() == sample.read_bytes()


def test_directory_round_trip(run_cli: RunCli, repo_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    (tree / "sub" / "run").write_text("#!/bin/sh\n")
    (tree / "sub" / "run").chmod(0o755)
    (tree / "empty.txt").write_bytes(b"")
    link = ok(run_cli("--repo", repo_dir, "add", tree, "--chunk-size", "16KiB")).strip()
    ok(run_cli("--repo", repo_dir, "get", link, "-o", tmp_path / "copy"))
    assert snapshot(tmp_path / "copy") == snapshot(tree)


def test_ls_shows_root_and_display_name(run_cli: RunCli, repo_dir: Path, sample: Path) -> None:
    assert ok(run_cli("--repo", repo_dir, "ls")) == EMPTY_LS + "\n"  # an empty repo lists nothing
    link = parse_link(ok(run_cli("--repo", repo_dir, "add", sample, "--name", "Quarterly report")).strip())
    assert link.name == "Quarterly report"
    lines = ok(run_cli("--repo", repo_dir, "ls")).splitlines()
    assert len(lines) == 2 and lines[0].startswith("ROOT")
    assert cid_to_text(link.root) in lines[1]
    assert "Quarterly report" in lines[1]


def test_json_output(run_cli: RunCli, repo_dir: Path, sample: Path, tmp_path: Path) -> None:
    added = json.loads(ok(run_cli("--repo", repo_dir, "add", "--json", sample, "--with-size")))
    keys = {"root", "name", "kind", "size", "blocks", "stored_bytes", "added", "link", "new_blocks"}
    assert keys <= set(added)
    assert added["already_added"] is False
    assert added["kind"] == "file" and added["size"] == 300_000
    link = parse_link(added["link"])
    assert cid_to_text(link.root) == added["root"] and link.size == 300_000
    again = json.loads(ok(run_cli("--json", "--repo", repo_dir, "add", sample, "--with-size")))
    assert again["already_added"] is True and again["new_blocks"] == 0 and again["link"] == added["link"]

    # --json before and after the subcommand
    both: list[list[str | Path]] = [
        ["--json", "--repo", repo_dir, "ls"],
        ["--repo", repo_dir, "ls", "--json"],
    ]
    for args in both:
        pins = json.loads(ok(run_cli(*args)))
        assert [p["root"] for p in pins] == [added["root"]]
        assert {"root", "name", "kind", "size", "blocks", "stored_bytes", "added"} <= set(pins[0])

    out = tmp_path / "out.bin"
    got = json.loads(ok(run_cli("--repo", repo_dir, "get", added["link"], "-o", out, "--json")))
    assert got == {"root": added["root"], "path": str(out), "kind": "file", "size": 300_000, "files": 1}

    removed = json.loads(ok(run_cli("--json", "--repo", repo_dir, "rm", added["link"])))
    assert removed == {"unpinned": [added["root"]]}
    collected = json.loads(ok(run_cli("--repo", repo_dir, "gc", "--json")))
    framing = len(PACK_MAGIC) + added["blocks"] * FRAME.size  # gc frees the pack: frames included
    assert collected == {"blocks_removed": added["blocks"], "bytes_freed": added["stored_bytes"] + framing}
    assert json.loads(ok(run_cli("--repo", repo_dir, "--json", "ls"))) == []

    failed = run_cli("--repo", repo_dir, "--json", "get", added["link"], "-o", tmp_path / "gone")
    one_error(failed)
    assert "error" in json.loads(failed.stdout)


def test_rm_and_gc_text(run_cli: RunCli, repo_dir: Path, sample: Path) -> None:
    link = parse_link(ok(run_cli("--repo", repo_dir, "add", sample)).strip())
    root = cid_to_text(link.root)
    assert ok(run_cli("--repo", repo_dir, "rm", root)).strip() == f"unpinned {root}"
    assert ok(run_cli("--repo", repo_dir, "gc")).startswith("removed ")
    assert list((repo_dir / "blocks" / "packs").iterdir()) == []
    assert json.loads(ok(run_cli("--repo", repo_dir, "ls", "--json"))) == []


def test_sealbox_repo_environment_variable(run_cli: RunCli, tmp_path: Path, sample: Path) -> None:
    env_repo = tmp_path / "env-repo"
    link = ok(run_cli("add", sample, env={"SEALBOX_REPO": str(env_repo)})).strip()
    assert (env_repo / "version").is_file()
    assert not (tmp_path / "home" / ".sealbox").exists()
    pins = json.loads(ok(run_cli("ls", "--json", env={"SEALBOX_REPO": str(env_repo)})))
    assert [p["root"] for p in pins] == [cid_to_text(parse_link(link).root)]
    # --repo wins over the environment
    other = tmp_path / "other-repo"
    assert json.loads(ok(run_cli("--repo", other, "ls", "--json", env={"SEALBOX_REPO": str(env_repo)}))) == []


def test_errors_are_one_clear_line(run_cli: RunCli, repo_dir: Path, sample: Path, tmp_path: Path) -> None:
    link_text = ok(run_cli("--repo", repo_dir, "add", sample)).strip()
    link = parse_link(link_text)

    missing = one_error(run_cli("--repo", repo_dir, "add", tmp_path / "no-such-file"))
    assert "no-such-file" in missing

    one_error(run_cli("--repo", repo_dir, "get", "sealbox:?v=1&xt=garbage", "-o", tmp_path / "x"))
    damaged = link_text[:-1] + ("1" if link_text.endswith("0") else "0")
    assert "damaged" in one_error(run_cli("--repo", repo_dir, "get", damaged, "-o", tmp_path / "x"))
    one_error(run_cli("--repo", repo_dir, "get", cid_to_text(link.root), "-o", tmp_path / "x"))

    # a well-formed link (valid checksum) whose key is wrong: the key must not leak into the message
    wrong = format_link(ShareLink(link.root, new_key()))
    parse_link(wrong)
    result = run_cli("--repo", repo_dir, "get", wrong, "-o", tmp_path / "x")
    line = one_error(result)
    assert "key" in line
    assert wrong not in result.stderr and wrong.split("#")[1] not in result.stderr
    assert wrong.split("k=")[1][:43] not in result.stderr
    assert link_text.split("k=")[1][:43] not in result.stderr

    absent = format_link(ShareLink(cid_of(b"not in this repo"), new_key()))
    assert "not in this repo" in one_error(run_cli("--repo", repo_dir, "get", absent, "-o", tmp_path / "x"))

    assert "not pinned" in one_error(run_cli("--repo", repo_dir, "rm", cid_to_text(cid_of(b"unknown"))))
    one_error(run_cli("--repo", repo_dir, "rm", "not-a-root"))
    one_error(run_cli("--repo", tmp_path / "no-repo", "gc"))
    assert not (tmp_path / "no-repo").exists()

    existing = tmp_path / "existing"
    existing.write_text("keep me")
    assert "already exists" in one_error(run_cli("--repo", repo_dir, "get", link_text, "-o", existing))
    assert existing.read_text() == "keep me"

    # a block damaged on disk
    repo = Repo.open(repo_dir, create=False)
    try:
        path, offset, _length = block_region(repo, link.root)
    finally:
        repo.close()
    byte = read_region(path, offset + 100, 1)
    write_region(path, offset + 100, bytes([byte[0] ^ 0x01]))
    assert "corrupted" in one_error(run_cli("--repo", repo_dir, "get", link_text, "-o", tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["existing", "home", "repo", "sample.bin"])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_full_disk(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    small = tmp_path / "small.txt"
    small.write_bytes(os.urandom(2000))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    script = """
        mount -t tmpfs -o size=1m tmpfs "$MNT" || exit 99
        R="$MNT/repo"
        "$SEALBOX" --repo "$R" add "$SMALL" > "$OUT/link" || exit 98
        "$SEALBOX" --repo "$R" add "$BIG" > "$OUT/big.stdout" 2> "$OUT/big.stderr"
        echo $? > "$OUT/big.rc"
        "$SEALBOX" --repo "$R" get "$(cat "$OUT/link")" -o "$OUT/small.copy" > /dev/null || exit 97
        "$SEALBOX" --repo "$R" ls --json > "$OUT/ls.json" || exit 96
        ls -A "$R/tmp" > "$OUT/tmp.list"
    """
    env = dict(os.environ, MNT=str(mnt), SEALBOX=SEALBOX, SMALL=str(small), BIG=str(big), OUT=str(tmp_path))
    _run_in_private_mount(script, env, timeout=60)
    assert (tmp_path / "big.rc").read_text().strip() == "1"
    assert (tmp_path / "big.stdout").read_text() == ""
    stderr = (tmp_path / "big.stderr").read_text()
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sealbox: error: ")
    assert "no space" in lines[0].lower()
    # the failed add left nothing behind, and what was there before still works
    assert (tmp_path / "small.copy").read_bytes() == small.read_bytes()
    pins = json.loads((tmp_path / "ls.json").read_text())
    assert [p["size"] for p in pins] == [2000]
    assert (tmp_path / "tmp.list").read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_full_disk_at_every_step(tmp_path: Path) -> None:
    # Fill a tmpfs so that only KEEP pages are free, then add a small tree: as KEEP grows the add runs
    # out of space at later and later steps (opening the block index, a block, the block list, the adds
    # record, the index commit, the pin). Every add either succeeds and gets back exactly, or fails with
    # one clear line and leaves the repo's files as they were.
    steps = [*range(10), 32]  # every step where a small add can run out of room, then room enough
    for keep in steps:
        tree = tmp_path / "trees" / str(keep) / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "a.txt").write_text(f"tree {keep}")
        (tree / "sub" / "b.txt").write_text("b")
    (tmp_path / "warm.txt").write_text("added before the disk filled up")
    out = tmp_path / "out"
    out.mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = """
        mount -t tmpfs -o size=512k tmpfs "$MNT" || exit 99
        R="$MNT/repo"
        "$SEALBOX" --repo "$R" add "$WARM" > "$OUT/warm.link" || exit 98
        # the repo's files, but not the lock or SQLite's own journal files
        files() { (cd "$R" && find . -type f ! -name lock ! -name '*-wal' ! -name '*-shm' | sort); }
        for keep in $STEPS; do
            rm -f "$MNT/filler"
            avail=$(df -B4096 --output=avail "$MNT" | tail -n 1)
            dd if=/dev/zero of="$MNT/filler" bs=4096 count=$((avail - keep)) 2> /dev/null
            files > "$OUT/$keep.before"
            "$SEALBOX" --repo "$R" add "$TREES/$keep/tree" > "$OUT/$keep.stdout" 2> "$OUT/$keep.stderr"
            echo $? > "$OUT/$keep.rc"
            files > "$OUT/$keep.after"
        done
        rm -f "$MNT/filler"
        "$SEALBOX" --repo "$R" get "$(cat "$OUT/warm.link")" -o "$OUT/warm.copy" > /dev/null || exit 97
        for keep in $STEPS; do
            if [ "$(cat "$OUT/$keep.rc")" = 0 ]; then
                link=$(cat "$OUT/$keep.stdout")
                "$SEALBOX" --repo "$R" get "$link" -o "$OUT/$keep.copy" > /dev/null || exit 96
            fi
        done
        "$SEALBOX" --repo "$R" gc --json > "$OUT/gc.json" || exit 95
    """
    env = dict(
        os.environ,
        MNT=str(mnt),
        SEALBOX=SEALBOX,
        TREES=str(tmp_path / "trees"),
        WARM=str(tmp_path / "warm.txt"),
        OUT=str(out),
        STEPS=" ".join(map(str, steps)),
    )
    _run_in_private_mount(script, env, timeout=120)
    outcomes = []
    for keep in steps:
        rc = int((out / f"{keep}.rc").read_text())
        stderr = (out / f"{keep}.stderr").read_text()
        assert "Traceback" not in stderr
        if rc == 0:
            assert snapshot(out / f"{keep}.copy") == snapshot(tmp_path / "trees" / str(keep) / "tree")
        else:
            assert rc == 1
            lines = stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("sealbox: error: "), stderr
            assert "no space" in lines[0].lower()
            assert (out / f"{keep}.stdout").read_text() == ""
            # nothing was changed: no new pack, pin, adds record or temp file
            assert (out / f"{keep}.after").read_text() == (out / f"{keep}.before").read_text(), keep
        outcomes.append(rc)
    assert outcomes[0] == 1 and outcomes[-1] == 0, outcomes
    assert (out / "warm.copy").read_text() == "added before the disk filled up"
    # no failed add left blocks behind: gc finds nothing to remove
    assert json.loads((out / "gc.json").read_text())["blocks_removed"] == 0
