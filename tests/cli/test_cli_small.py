"""The small things users expect of the real ``sealbox`` command: ``--version``, a description and an
example on every ``--help``, ``add -`` (stdin), several paths in one ``add`` and ``--as-folder``, and
a link the shell cut at an ``&``. The adds run without a daemon and through one."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.cli.main import build_parser
from protocol.link import parse_link
from tests.daemon.test_daemon import Daemon
from tests.helpers import SEALBOX, RunCli, file_sha256, ok, one_error

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_package_version(run_cli: RunCli) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ok(run_cli("--version")).strip() == f"sealbox {version}"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    choices: dict[str, argparse.ArgumentParser] = actions[0].choices
    return choices


def test_every_subcommand_help_has_a_description_and_an_example(run_cli: RunCli) -> None:
    commands = _subcommands()
    assert {"add", "get", "ls", "rm", "gc", "repo", "daemon", "status", "peers"} <= set(commands)
    for name, parser in commands.items():
        assert parser.description, f"sealbox {name} --help has no description"
        assert parser.epilog and "example" in parser.epilog, f"sealbox {name} --help has no example"
        assert f"sealbox {name}" in parser.epilog, f"sealbox {name}'s example does not run it"
    shown = ok(run_cli("add", "--help"))  # the epilog keeps its lines (RawDescriptionHelpFormatter)
    assert "\nexamples:\n  sealbox add photo.jpg\n" in shown


@pytest.fixture
def daemon_repo(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """``start()`` runs a daemon on a repo of its own and returns the repo; stopped at the end."""
    started: list[Daemon] = []

    def start() -> Path:
        (tmp_path / "home").mkdir(exist_ok=True)
        daemon = Daemon(tmp_path / "daemon-repo", tmp_path / "home")
        started.append(daemon)
        daemon.wait_ready()
        return daemon.repo

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.stop()


def _repo(mode: str, tmp_path: Path, daemon_repo: Callable[[], Path]) -> Path:
    return daemon_repo() if mode == "daemon" else tmp_path / "repo"


def _run_bytes(args: list[str], data: bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(home)}
    return subprocess.run([SEALBOX, *args], input=data, env=env, capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("mode", ["no daemon", "daemon"])
def test_add_dash_reads_stdin_byte_exact_and_needs_a_name(
    mode: str, tmp_path: Path, run_cli: RunCli, daemon_repo: Callable[[], Path]
) -> None:
    repo = _repo(mode, tmp_path, daemon_repo)
    data = os.urandom(700_000) + b"\x00\r\n\xff"  # binary, several chunks
    added = _run_bytes(["--repo", str(repo), "add", "-", "--name", "dump.bin"], data, tmp_path / "home")
    assert added.returncode == 0 and added.stderr == b"", added.stderr
    link = added.stdout.decode().strip()
    assert parse_link(link).name == "dump.bin"
    out = tmp_path / "out"
    out.mkdir()
    assert ok(run_cli("--repo", repo, "get", link, "-o", out)).strip() == str(out / "dump.bin")
    assert file_sha256(out / "dump.bin") == hashlib.sha256(data).hexdigest()
    # no name, a name that cannot be a file's, '-' among other paths: one line each, no spool left
    assert "needs --name" in one_error(run_cli("--repo", repo, "add", "-", input="x"))
    assert "cannot add" in one_error(run_cli("--repo", repo, "add", "-", "--name", "a/b", input="x"))
    assert "only PATH" in one_error(run_cli("--repo", repo, "add", "-", str(out), "--name", "n"))
    assert list((repo / "tmp").iterdir()) == []


@pytest.mark.parametrize("mode", ["no daemon", "daemon"])
def test_add_several_paths_gives_one_link_each_or_one_folder(
    mode: str, tmp_path: Path, run_cli: RunCli, daemon_repo: Callable[[], Path]
) -> None:
    repo = _repo(mode, tmp_path, daemon_repo)
    src = tmp_path / "src"
    (src / "photos").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "b.bin").write_bytes(os.urandom(200_000))
    (src / "photos" / "p.jpg").write_bytes(os.urandom(50_000))
    paths = [src / "a.txt", src / "b.bin", src / "photos"]

    links = ok(run_cli("--repo", repo, "add", *paths)).splitlines()
    assert len(links) == 3 and len({parse_link(x).root for x in links}) == 3
    listed = json.loads(ok(run_cli("--repo", repo, "add", *paths, "--json")))
    assert [entry["link"] for entry in listed] == links  # the same content again: the same links
    for link, path in zip(links, paths, strict=True):
        dest = tmp_path / f"one-{path.name}"
        ok(run_cli("--repo", repo, "get", link, "-o", dest))
        got, want = (dest / "p.jpg", path / "p.jpg") if path.is_dir() else (dest, path)
        assert got.read_bytes() == want.read_bytes()

    folder = ok(run_cli("--repo", repo, "add", *paths, "--as-folder", "bundle")).splitlines()
    assert len(folder) == 1
    out = tmp_path / "out"
    out.mkdir()
    assert ok(run_cli("--repo", repo, "get", folder[0], "-o", out)).strip() == str(out / "bundle")
    assert sorted(p.name for p in (out / "bundle").iterdir()) == ["a.txt", "b.bin", "photos"]
    assert file_sha256(out / "bundle" / "b.bin") == file_sha256(src / "b.bin")
    assert (out / "bundle" / "photos" / "p.jpg").read_bytes() == (src / "photos" / "p.jpg").read_bytes()
    # two entries of one name, a missing path: refused in one line
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_bytes(b"beta")
    twice = run_cli("--repo", repo, "add", src / "a.txt", tmp_path / "other" / "a.txt", "--as-folder", "x")
    assert "two of the paths are named 'a.txt'" in one_error(twice)
    missing = run_cli("--repo", repo, "add", src / "a.txt", tmp_path / "nope", "--as-folder", "x")
    assert "no such file or directory" in one_error(missing)
    missing = run_cli("--repo", repo, "add", tmp_path / "other" / "a.txt", tmp_path / "nope")
    assert "no such file or directory" in one_error(missing) and missing.stdout == ""  # none added
    assert "--name names one root" in one_error(run_cli("--repo", repo, "add", *paths, "--name", "n"))


def test_a_link_cut_at_an_ampersand_says_to_quote_it(run_cli: RunCli, tmp_path: Path) -> None:
    sample = tmp_path / "f.txt"
    sample.write_bytes(b"hello")
    repo = tmp_path / "repo"
    link = ok(run_cli("--repo", repo, "add", sample)).strip()
    # what bash makes of the link unquoted: the command runs in the background with 'sealbox:?v=1',
    # and the rest of the link becomes variable assignments
    env = {k: v for k, v in os.environ.items() if k != "SEALBOX_REPO"} | {"HOME": str(tmp_path)}
    script = f"{SEALBOX} --repo {repo} get {link} -o {tmp_path / 'x'}; wait"
    unquoted = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    expected = "the link looks cut at an '&': put the link in single quotes: sealbox get 'sealbox:?...'"
    assert expected in unquoted.stderr, unquoted.stderr
    for command in ("get", "rm"):
        line = one_error(run_cli("--repo", repo, command, link.split("&")[0]))
        assert line == f"sealbox: error: {expected.replace('sealbox get', f'sealbox {command}')}"
    # a link damaged elsewhere keeps protocol/link.py's own message
    assert "copy the whole link" in one_error(run_cli("--repo", repo, "get", link.split("#")[0]))
