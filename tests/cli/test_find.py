"""Finding things again, with the real ``sealbox`` command and no daemon: names in ``ls``, ``link
ROOT``, ``ls LINK``, ``get LINK PATH``, ``get -o -``, ``-o`` into a missing folder, the repo's modes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from node.store.repo import Repo
from protocol.cid import cid_to_text
from protocol.link import parse_link
from tests.helpers import SEALBOX, RunCli, ok, one_error


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """``photos/``: a 3 MiB file, an executable script and ``sub/small.txt``."""
    path = tmp_path / "photos"
    (path / "sub").mkdir(parents=True)
    (path / "big.bin").write_bytes(os.urandom(3 << 20))
    (path / "sub" / "small.txt").write_text("small and alone")
    (path / "run.sh").write_text("#!/bin/sh\n")
    (path / "run.sh").chmod(0o755)
    return path


def test_ls_shows_each_roots_own_name_and_link_prints_its_link_again(
    run_cli: RunCli, tmp_path: Path, folder: Path
) -> None:
    repo = tmp_path / "repo"
    plain = ok(run_cli("--repo", repo, "add", folder / "big.bin")).strip()
    named = ok(run_cli("--repo", repo, "add", folder, "--name", "holiday")).strip()
    rows = ok(run_cli("--repo", repo, "ls")).splitlines()[1:]
    assert [row.split()[1:3] for row in rows] == [["big.bin", "3.1"], ["holiday", "(photos)"]]
    listed = json.loads(ok(run_cli("--repo", repo, "ls", "--json")))
    assert [(p["name"], p["root_name"], p["key_kept"]) for p in listed] == [
        (None, "big.bin", True),
        ("holiday", "photos", True),
    ]
    assert all("key" not in p for p in listed)
    for link in (plain, named):
        root = cid_to_text(parse_link(link).root)
        assert ok(run_cli("--repo", repo, "link", root)).strip() == link
        assert ok(run_cli("--repo", repo, "link", root[:16])).strip() == link  # a unique prefix
        answer = json.loads(ok(run_cli("--repo", repo, "link", root, "--json")))
        assert answer == {"root": root, "link": link}
    assert "at least 12" in one_error(run_cli("--repo", repo, "link", "bafkrei"))
    assert "no pinned root starts with" in one_error(run_cli("--repo", repo, "link", "bafkreiaaaaaaaaaa"))
    error = one_error(run_cli("--repo", repo, "link", plain))
    assert "not a link" in error and plain not in error


def test_a_partial_get_writes_one_entry_and_pins_nothing_new(
    run_cli: RunCli, tmp_path: Path, folder: Path
) -> None:
    repo = tmp_path / "repo"
    link = ok(run_cli("--repo", repo, "add", folder)).strip()
    out = tmp_path / "out"
    out.mkdir()
    assert ok(run_cli("--repo", repo, "get", link, "sub/small.txt", "-o", out)).strip() == str(
        out / "small.txt"
    )
    assert (out / "small.txt").read_text() == "small and alone"
    ok(run_cli("--repo", repo, "get", link, "sub/", "-o", out))
    assert sorted(os.listdir(out / "sub")) == ["small.txt"]
    ok(run_cli("--repo", repo, "get", link, "run.sh", "-o", out))
    assert os.access(out / "run.sh", os.X_OK)
    # the link may come from a file, the PATH after it
    (tmp_path / "link.txt").write_text(link)
    ok(run_cli("--repo", repo, "get", "--link-file", tmp_path / "link.txt", "big.bin", "-o", out))
    assert (out / "big.bin").read_bytes() == (folder / "big.bin").read_bytes()
    for missing in ("nope", "sub/nope", "big.bin/below", "SUB/small.txt"):
        error = one_error(run_cli("--repo", repo, "get", link, missing, "-o", out))
        assert f"no entry '{missing}' in this folder" in error and "'sealbox ls LINK'" in error
        assert link.split("#")[1] not in error
    assert len(json.loads(ok(run_cli("--repo", repo, "ls", "--json")))) == 1


def test_ls_link_lists_the_tree_like_tar(run_cli: RunCli, tmp_path: Path, folder: Path) -> None:
    repo = tmp_path / "repo"
    link = ok(run_cli("--repo", repo, "add", folder)).strip()
    lines = ok(run_cli("--repo", repo, "ls", link)).splitlines()
    assert lines[0] == "photos/: 3 file(s), 3.1 MB"
    assert [line.split() for line in lines[1:]] == [
        ["file", "3.1", "MB", "big.bin"],
        ["exec", "10", "B", "run.sh"],
        ["dir", "-", "sub/"],
        ["file", "15", "B", "sub/small.txt"],
    ]
    data = json.loads(ok(run_cli("--repo", repo, "ls", "-", "--json", input=link)))
    assert data["name"] == "photos" and data["kind"] == "dir"
    assert data["entries"][1] == {"path": "run.sh", "kind": "file", "size": 10, "executable": True}
    single = ok(run_cli("--repo", repo, "add", folder / "run.sh")).strip()
    assert ok(run_cli("--repo", repo, "ls", single)).splitlines()[1].split() == ["exec", "10", "B", "run.sh"]
    # nothing held, nowhere to look: one line, without the link
    error = one_error(run_cli("--repo", tmp_path / "empty", "ls", link))
    assert "nowhere to look" in error and link.split("#")[1] not in error


def test_get_to_stdout_is_byte_exact_and_prints_nothing_else(
    run_cli: RunCli, tmp_path: Path, folder: Path
) -> None:
    repo = tmp_path / "repo"
    data = (folder / "big.bin").read_bytes()
    link = ok(run_cli("--repo", repo, "add", folder / "big.bin", "--with-size")).strip()
    folder_link = ok(run_cli("--repo", repo, "add", folder)).strip()
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(tmp_path)}
    for args in ([link], [folder_link, "big.bin"]):
        got = subprocess.run(
            [SEALBOX, "--repo", str(repo), "get", *args, "-o", "-"],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert got.returncode == 0 and got.stderr == b""
        assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(data).digest()
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    result = run_cli("--repo", repo, "get", folder_link, "-o", "-")
    assert "a folder cannot go to stdout: give -o DIR" in one_error(result) and result.stdout == ""
    assert "--json cannot go with -o -" in one_error(
        run_cli("--repo", repo, "get", link, "-o", "-", "--json")
    )


def test_output_into_a_missing_folder_says_so(run_cli: RunCli, tmp_path: Path, folder: Path) -> None:
    repo = tmp_path / "repo"
    link = ok(run_cli("--repo", repo, "add", folder / "big.bin")).strip()
    gone = tmp_path / "gone"
    assert one_error(run_cli("--repo", repo, "get", link, "-o", gone / "x.bin")).endswith(
        f"no such folder: {gone}"
    )
    assert one_error(run_cli("--repo", repo, "get", link, "-o", f"{gone}/")).endswith(
        f"no such folder: {gone}"
    )
    assert "is not a folder" in one_error(run_cli("--repo", repo, "get", link, "-o", folder / "run.sh" / "x"))
    assert not gone.exists()
    # nothing in the repo either: the destination is refused before anything is fetched
    error = one_error(run_cli("--repo", tmp_path / "other", "get", link, "-o", gone / "x.bin"))
    assert error.endswith(f"no such folder: {gone}")


def test_repo_check_warns_when_others_may_read_the_repo(
    run_cli: RunCli, tmp_path: Path, folder: Path
) -> None:
    repo = tmp_path / "repo"
    ok(run_cli("--repo", repo, "add", folder / "run.sh"))
    assert (repo.stat().st_mode & 0o777) == 0o700
    pins = list((repo / "pins").glob("*.pin"))
    assert [p.stat().st_mode & 0o777 for p in pins] == [0o600]
    assert (repo / "secret").stat().st_mode & 0o777 == 0o600
    assert ok(run_cli("--repo", repo, "repo", "check")).strip() == "the repo passes every check"
    repo.chmod(0o755)
    pins[0].chmod(0o644)
    notes = ok(run_cli("--repo", repo, "repo", "check")).splitlines()
    assert len(notes) == 2 and all(n.startswith("note: ") for n in notes)
    assert "the repo directory is mode 755" in notes[0] and "chmod 700" in notes[0]
    assert f"pins/{pins[0].name}" in notes[1] and "chmod 600" in notes[1]
    # an empty folder made beforehand becomes the repo's own
    made = tmp_path / "made"
    made.mkdir(mode=0o755)
    made.chmod(0o755)
    Repo.open(made).close()
    assert made.stat().st_mode & 0o777 == 0o700
