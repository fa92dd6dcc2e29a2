"""Links and names kept out of the command line other local users can read (``ps``, /proc/PID/cmdline):
``get -``, ``--link-file``, ``add --name-file``, and the process title scrubbed for the unsafe forms.
The real ``sealbox`` command as a subprocess throughout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli.repo_commands import EMPTY_LS
from node.cli.secrets import scrubbed
from node.net.identity import load_or_create_identity
from protocol.cid import cid_to_text
from protocol.link import parse_link
from tests.helpers import SEALBOX, RunCli, ok, one_error, peer_id_of


@pytest.fixture
def added(tmp_path: Path, run_cli: RunCli) -> tuple[Path, Path, str]:
    """A repo holding one file: (repo, the file, its link)."""
    repo = tmp_path / "repo"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(50_000))
    link = ok(run_cli("--repo", repo, "add", sample)).strip()
    return repo, sample, link


def test_get_reads_the_link_from_stdin(
    tmp_path: Path, run_cli: RunCli, added: tuple[Path, Path, str]
) -> None:
    repo, sample, link = added
    out = tmp_path / "from-stdin.bin"
    ok(run_cli("--repo", repo, "get", "-", "-o", out, input=link + "\n"))
    assert out.read_bytes() == sample.read_bytes()
    unterminated = tmp_path / "unterminated.bin"
    ok(run_cli("--repo", repo, "get", "-", "-o", unterminated, input=link))
    assert unterminated.read_bytes() == sample.read_bytes()
    # nothing, two links, or no key: one line, and the link is never echoed
    assert "expected one link" in one_error(run_cli("--repo", repo, "get", "-", input=""))
    assert "expected one link" in one_error(run_cli("--repo", repo, "get", "-", input=f"{link} {link}\n"))
    refused = one_error(run_cli("--repo", repo, "get", "-", input=link.partition("#")[0] + "\n"))
    assert link.partition("#")[0] not in refused


def test_get_and_rm_read_the_link_from_a_file(
    tmp_path: Path, run_cli: RunCli, added: tuple[Path, Path, str]
) -> None:
    repo, sample, link = added
    link_file = tmp_path / "link.txt"
    link_file.write_text(link + "\n")
    link_file.chmod(0o600)
    out = tmp_path / "from-file.bin"
    ok(run_cli("--repo", repo, "get", "--link-file", link_file, "-o", out))
    assert out.read_bytes() == sample.read_bytes()

    assert "needs one link" in one_error(run_cli("--repo", repo, "get"))
    assert "needs one link" in one_error(run_cli("--repo", repo, "get", link, "--link-file", link_file))
    missing = one_error(run_cli("--repo", repo, "get", "--link-file", tmp_path / "secret-dir-name" / "l"))
    assert "cannot read the link" in missing and "secret-dir-name" not in missing
    too_long = tmp_path / "long.txt"
    too_long.write_text("x" * 100_000)
    assert "longer than" in one_error(run_cli("--repo", repo, "get", "--link-file", too_long))

    removed = json.loads(ok(run_cli("--repo", repo, "rm", "--link-file", link_file, "--json")))
    assert removed["unpinned"] == [cid_to_text(parse_link(link).root)]
    assert ok(run_cli("--repo", repo, "ls")) == EMPTY_LS + "\n"
    assert "needs a LINK or ROOT" in one_error(run_cli("--repo", repo, "rm"))
    # through stdin this time, two links at once
    first = ok(run_cli("--repo", repo, "add", sample)).strip()
    second = ok(run_cli("--repo", repo, "add", link_file)).strip()
    removed = json.loads(ok(run_cli("--repo", repo, "rm", "-", "--json", input=f"{first}\n{second}\n")))
    assert len(removed["unpinned"]) == 2
    assert ok(run_cli("--repo", repo, "ls")) == EMPTY_LS + "\n"


def test_add_reads_the_name_from_a_file_or_stdin(tmp_path: Path, run_cli: RunCli) -> None:
    repo = tmp_path / "repo"
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"named")
    name_file = tmp_path / "name.txt"
    name_file.write_text("Tax return 2026\n")
    first = json.loads(ok(run_cli("--repo", repo, "add", sample, "--name-file", name_file, "--json")))
    assert first["name"] == "Tax return 2026"
    second = json.loads(
        ok(run_cli("--repo", repo, "add", sample, "--name-file", "-", "--json", input="Other"))
    )
    assert second["name"] == "Other"
    both = run_cli("--repo", repo, "add", sample, "--name", "x", "--name-file", name_file)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_the_process_title_of_a_running_get_holds_no_key(
    tmp_path: Path, added: tuple[Path, Path, str]
) -> None:
    """A ``get LINK`` blocked on a peer that accepts the dial and never answers: while it waits, its
    /proc/PID/cmdline (what ps shows other users) holds neither the key nor the link."""
    _repo, _sample, link = added
    (tmp_path / "silent").mkdir()
    peer = peer_id_of(load_or_create_identity(tmp_path / "silent"))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(60)
        hint = f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/p2p/{peer}"
        hinted = str(dataclasses.replace(parse_link(link), peers=(hint,)))
        key = hinted.partition("#k=")[2][:43]
        assert len(key) == 43
        env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(tmp_path)}
        other = tmp_path / "other"
        proc = subprocess.Popen(
            [SEALBOX, "--repo", str(other), "get", hinted, "-o", str(tmp_path / "never")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            conn, _ = silent.accept()  # the event: the CLI runs its main and dials the hint
            with conn:
                cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                assert proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
    assert b"get" in cmdline and b"<link>" in cmdline, cmdline
    assert key.encode() not in cmdline and hinted.encode() not in cmdline
    assert b"#k=" not in cmdline and b"sealbox:?" not in cmdline


def test_scrubbed_replaces_links_and_names_and_nothing_else() -> None:
    argv = [sys.executable, SEALBOX, "add", "f.txt", "--name", "Secret", "--with-size"]
    assert scrubbed(argv) == [sys.executable, SEALBOX, "add", "f.txt", "--name", "<name>", "--with-size"]
    assert scrubbed(["sealbox", "add", "f", "--na=Secret", "--name-file", "n.txt"]) == [
        "sealbox",
        "add",
        "f",
        "--na=<name>",
        "--name-file",
        "n.txt",
    ]
    assert scrubbed(["sealbox", "rm", "sealbox:?v=1&xt=x#k=y", "bafyroot"]) == [
        "sealbox",
        "rm",
        "<link>",
        "bafyroot",
    ]
    assert scrubbed(["sealbox", "status", "--json"]) == ["sealbox", "status", "--json"]
