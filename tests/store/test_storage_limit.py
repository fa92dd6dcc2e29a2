"""storage_limit is enforced as blocks are written: an add or a fetch that would cross it fails with one
line, leaves no pin and nothing uncommitted, and what was stored before is untouched."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from node.daemon.api_client import ApiClient
from node.daemon.errors import ApiError
from node.files.add import add_path
from node.store.errors import StorageLimitError
from node.store.repo import Repo
from protocol.cid import cid_of
from tests.daemon.test_daemon import Daemon, daemons  # noqa: F401  (the fixture)
from tests.helpers import RunCli, ok, one_error, pack_files

LIMIT = 300_000


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_a_writer_session_cannot_cross_the_limit_and_keeps_nothing_when_it_tries(repo: Repo) -> None:
    repo.blocks.set_limit(10_000)
    blocks = [os.urandom(3_000) for _ in range(4)]
    with repo.blocks.writer() as writer:
        for block in blocks[:3]:
            writer.put(cid_of(block), block)
        with pytest.raises(StorageLimitError, match="storage limit reached: the repo may hold 10000 bytes"):
            writer.put(cid_of(blocks[3]), blocks[3])
    assert repo.blocks.stats() == (0, 0) and pack_files(repo) == set()
    # a session that commits counts; one that drops what it wrote gives the room back
    with repo.blocks.writer() as writer:
        for block in blocks[:3]:
            writer.put(cid_of(block), block)
        writer.commit()
    assert repo.blocks.stats() == (3, 9_000)
    with pytest.raises(StorageLimitError):
        repo.blocks.put(cid_of(blocks[3]), blocks[3])
    small = os.urandom(900)
    assert repo.blocks.put(cid_of(small), small)
    # gc's compaction only moves blocks: never refused
    repo.blocks.set_limit(1)
    with repo.blocks.writer(counted=False) as writer:
        writer.put(cid_of(blocks[0]), blocks[0], force=True)


def test_an_add_that_would_cross_the_limit_leaves_no_pin_and_nothing_stored(
    repo: Repo, tmp_path: Path
) -> None:
    kept = add_path(repo, _file(tmp_path / "kept", 50_000))
    before = (repo.blocks.stats(), pack_files(repo))
    repo.blocks.set_limit(LIMIT)
    with pytest.raises(StorageLimitError, match="storage limit reached"):
        add_path(repo, _file(tmp_path / "big", 2 * LIMIT))
    assert [p.root for p in repo.pins()] == [kept.pin.root]
    assert (repo.blocks.stats(), pack_files(repo)) == before
    assert os.listdir(repo.tmp) == []


def test_a_daemon_holds_an_add_and_a_fetch_to_its_limit(
    tmp_path: Path,
    run_cli: RunCli,
    daemons: Callable[..., Daemon],  # noqa: F811
) -> None:
    """Before: the limit was checked only when an add or fetch started, so both crossed it by any amount."""
    seed_repo, limited = tmp_path / "seed", tmp_path / "limited"
    Repo.open(limited).close()
    (limited / "config.toml").write_text(f"storage_limit = {LIMIT}\n")
    seed = daemons(seed_repo)
    seed.wait_ready()
    node = daemons(limited)
    node.wait_ready()
    small = _file(tmp_path / "small", 20_000)
    small_link = ok(run_cli("--repo", limited, "add", small)).strip()
    before = json.loads(ok(run_cli("--repo", limited, "status", "--json")))
    assert 0 < before["stored_bytes"] < LIMIT

    # an add through the daemon: HTTP 507, one line with the limit, nothing kept
    big = _file(tmp_path / "big", 2 * LIMIT)
    line = one_error(run_cli("--repo", limited, "add", big))
    assert f"storage limit reached: the repo may hold {LIMIT} bytes" in line
    with pytest.raises(ApiError) as refused:
        ApiClient(limited).call("POST", "/v1/add", {"path": str(big)}, timeout=60)
    assert refused.value.status == 507

    # a fetch of a file past the limit from the seed: refused while it runs, nothing pinned
    link = ok(run_cli("--repo", seed_repo, "add", big, "--peer-hints")).strip()
    line = one_error(run_cli("--repo", limited, "get", link, "-o", tmp_path / "out"))
    assert f"storage limit reached: the repo may hold {LIMIT} bytes" in line
    assert not (tmp_path / "out").exists()
    after = json.loads(ok(run_cli("--repo", limited, "status", "--json")))
    assert after["roots"] == 1 and after["stored_bytes"] <= LIMIT
    listed = json.loads(ok(run_cli("--repo", limited, "ls", "--json")))
    assert [p["size"] for p in listed] == [20_000]
    # what was stored before is intact, and a small fetch still fits
    tiny = _file(tmp_path / "tiny", 5_000)
    tiny_link = ok(run_cli("--repo", seed_repo, "add", tiny, "--peer-hints")).strip()
    ok(run_cli("--repo", limited, "get", tiny_link, "-o", tmp_path / "tiny.out"))
    assert (tmp_path / "tiny.out").read_bytes() == tiny.read_bytes()
    ok(run_cli("--repo", limited, "get", small_link, "-o", tmp_path / "small.out"))
    assert (tmp_path / "small.out").read_bytes() == small.read_bytes()


def test_an_add_without_a_daemon_keeps_the_configs_limit_too(tmp_path: Path, run_cli: RunCli) -> None:
    """No daemon runs: the CLI reads storage_limit itself (without the network stack) and keeps it."""
    repo = tmp_path / "repo"
    kept = ok(run_cli("--repo", repo, "add", _file(tmp_path / "kept", 50_000))).strip()
    (repo / "config.toml").write_text(f"storage_limit = {LIMIT}\n")
    before = pack_files(Repo.open(repo, create=False))
    error = one_error(run_cli("--repo", repo, "add", _file(tmp_path / "big", 2 * LIMIT)))
    assert "storage limit reached" in error and str(LIMIT) in error
    after = Repo.open(repo, create=False)
    assert len(after.pins()) == 1  # only the first add
    assert pack_files(after) == before
    out = tmp_path / "out"
    ok(run_cli("--repo", repo, "get", kept, "-o", out))
    assert out.read_bytes() == (tmp_path / "kept").read_bytes()
    # a config whose limit is not a number is one line, naming the file
    (repo / "config.toml").write_text('storage_limit = "lots"\n')
    assert "storage_limit must be a positive number" in one_error(
        run_cli("--repo", repo, "add", _file(tmp_path / "more", 10))
    )
