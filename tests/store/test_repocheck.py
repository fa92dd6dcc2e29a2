"""gc never trusts damaged metadata: a damaged index or pin list stops it before it deletes anything, and
`sealbox repo check` / `repair` find and mend what can be mended. Real repos, the real CLI."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from node.store.repo import Repo
from protocol.cid import CID_LEN, cid_of, cid_to_text
from tests.helpers import RunCli, decode_pin_file, ok, one_error

MIB = 1 << 20


def _repo_with_files(run_cli: RunCli, tmp_path: Path, count: int = 3) -> tuple[Path, list[tuple[str, bytes]]]:
    """A repo with ``count`` added 1 MiB files (the issue's set-up): its path and (link, content) each."""
    repo = tmp_path / "repo"
    added = []
    for i in range(count):
        data = os.urandom(MIB)
        (tmp_path / f"f{i}").write_bytes(data)
        added.append((ok(run_cli("--repo", repo, "add", tmp_path / f"f{i}")).strip(), data))
    return repo, added


def _intact(run_cli: RunCli, repo: Path, added: list[tuple[str, bytes]], out: Path) -> int:
    """How many of the added files still come back byte-exact."""
    good = 0
    for i, (link, data) in enumerate(added):
        dest = out / f"out{i}"
        dest.unlink(missing_ok=True)
        if run_cli("--repo", repo, "get", link, "-o", dest).returncode == 0 and dest.read_bytes() == data:
            good += 1
    return good


def _packs(repo: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (repo / "blocks" / "packs").iterdir()}


def _pins(repo: Path) -> list[Path]:
    return sorted((repo / "pins").glob("*.pin"))


def test_gc_refuses_an_index_whose_last_page_is_cut_short_and_repair_rebuilds_it(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """The issue's trial: on the old code `get` still worked and gc then deleted every pack."""
    repo, added = _repo_with_files(run_cli, tmp_path)
    index = repo / "blocks" / "index.sqlite"
    os.truncate(index, index.stat().st_size - 700)
    packs = _packs(repo)
    line = one_error(run_cli("--repo", repo, "gc"))
    assert "gc refused, nothing was deleted" in line and "sealbox repo repair" in line
    assert _packs(repo) == packs
    assert _intact(run_cli, repo, added, tmp_path) == 3

    checked = run_cli("--repo", repo, "repo", "check")
    assert "problem: the block index fails SQLite's integrity check" in checked.stdout
    assert "1 problem(s) left" in one_error(checked)
    repaired = ok(run_cli("--repo", repo, "repo", "repair"))
    assert "fixed: index rebuilt from the packs: 15 blocks" in repaired
    assert ok(run_cli("--repo", repo, "repo", "check")).strip() == "the repo passes every check"
    assert "removed 0 unpinned blocks" in ok(run_cli("--repo", repo, "gc"))
    assert _packs(repo) == packs
    assert _intact(run_cli, repo, added, tmp_path) == 3


def test_gc_refuses_a_pin_list_with_a_flipped_bit_and_repair_rebuilds_it_from_the_tree(
    run_cli: RunCli, tmp_path: Path
) -> None:
    """The issue's trial: a flipped bit after the CID prefix, then gc: on the old code that root was gone."""
    repo, added = _repo_with_files(run_cli, tmp_path)
    pin = _pins(repo)[0]
    data = bytearray(pin.read_bytes())
    data[CID_LEN * 2 + 17] ^= 0x10  # the third listed block, past its 4-byte prefix
    pin.write_bytes(bytes(data))
    line = one_error(run_cli("--repo", repo, "gc"))
    assert f"pin of {pin.stem} is damaged (its block list fails its checksum)" in line
    assert _intact(run_cli, repo, added, tmp_path) == 3

    assert f"fixed: pin of {pin.stem}: block list rebuilt from its tree" in ok(
        run_cli("--repo", repo, "repo", "repair")
    )
    ok(run_cli("--repo", repo, "gc"))
    assert _intact(run_cli, repo, added, tmp_path) == 3


def _as_version_1(pin: Path, *, key: bool = True) -> None:
    """Rewrite a pin file as the old code wrote it (no checksum), optionally without its key (a root
    fetched from the network)."""
    import msgpack

    parsed, cids = decode_pin_file(pin.read_bytes())
    header = {"v": 1, **parsed.header()}
    if not key:
        header.pop("key")
    raw = msgpack.packb(header, use_bin_type=True)
    pin.write_bytes(b"".join(cids) + raw + len(raw).to_bytes(4, "big") + b"SBP1")


def test_a_flipped_bit_in_a_version_1_list_stops_gc_too(run_cli: RunCli, tmp_path: Path) -> None:
    """A version-1 list has no checksum: gc finds the damage by the block the index lacks."""
    repo, added = _repo_with_files(run_cli, tmp_path)
    pin = _pins(repo)[1]
    _as_version_1(pin)
    data = bytearray(pin.read_bytes())
    data[CID_LEN + 30] ^= 0x01
    pin.write_bytes(bytes(data))
    line = one_error(run_cli("--repo", repo, "gc"))
    assert f"pin of {pin.stem} lists 1 block(s) the index lacks" in line
    assert _intact(run_cli, repo, added, tmp_path) == 3
    ok(run_cli("--repo", repo, "repo", "repair"))
    assert pin.read_bytes().endswith(b"SBP2")  # rebuilt, and with a checksum now
    ok(run_cli("--repo", repo, "gc"))
    assert _intact(run_cli, repo, added, tmp_path) == 3


def test_repair_upgrades_sound_version_1_pins_and_names_what_it_cannot_mend(
    run_cli: RunCli, tmp_path: Path
) -> None:
    repo, added = _repo_with_files(run_cli, tmp_path)
    sound, fetched = _pins(repo)[:2]
    _as_version_1(sound)
    _as_version_1(fetched, key=False)  # as a fetched root: the repo holds no key to walk its tree
    data = bytearray(fetched.read_bytes())
    data[10] ^= 0x01
    fetched.write_bytes(bytes(data))
    checked = run_cli("--repo", repo, "repo", "check")
    assert f"note: pin of {sound.stem} has no checksum (version 1)" in checked.stdout
    one_error(checked)
    repaired = run_cli("--repo", repo, "repo", "repair")
    assert f"fixed: pin of {sound.stem}: checksum added (version 2)" in repaired.stdout
    assert (
        f"problem: pin of {fetched.stem} lists 1 block(s) the index lacks: cannot be rebuilt"
        in repaired.stdout
    )
    assert f"'sealbox rm {fetched.stem}' then 'sealbox get' its link again" in repaired.stdout
    assert "1 problem(s) left" in one_error(repaired)
    assert sound.read_bytes().endswith(b"SBP2")
    one_error(run_cli("--repo", repo, "gc"))  # still refused: the user decides about that root
    ok(run_cli("--repo", repo, "rm", fetched.stem))
    ok(run_cli("--repo", repo, "gc"))
    assert _intact(run_cli, repo, added, tmp_path) == 2  # every root but the one removed


@pytest.mark.parametrize("how", ["deleted", "malformed", "cut by a page"])
def test_a_deleted_or_malformed_index_is_one_line_for_every_command(
    run_cli: RunCli, tmp_path: Path, how: str
) -> None:
    repo, added = _repo_with_files(run_cli, tmp_path, count=1)
    index = repo / "blocks" / "index.sqlite"
    if how == "deleted":
        index.unlink()
    elif how == "malformed":
        with open(index, "r+b") as f:
            f.seek(100)
            f.write(os.urandom(3000))
    else:
        os.truncate(index, index.stat().st_size - 4096)
    packs = _packs(repo)
    (tmp_path / "new").write_bytes(b"new content")
    link = added[0][0]
    for args in (
        ["get", link, "-o", tmp_path / "out"],
        ["add", tmp_path / "new"],
        ["gc"],
        ["repo", "check"],
    ):
        result = run_cli("--repo", repo, *args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, (
            args,
            result.stderr,
        )
    assert _packs(repo) == packs
    ok(run_cli("--repo", repo, "ls"))  # ls reads the pins only
    ok(run_cli("--repo", repo, "repo", "repair"))
    assert _intact(run_cli, repo, added, tmp_path) == 1


def test_gc_refuses_rows_into_a_missing_pack_or_past_its_end_or_off_their_frame(
    repo: Repo, tmp_path: Path
) -> None:
    from node.files.add import add_path
    from node.files.get import get_link
    from node.store import repocheck, reporepair
    from node.store.errors import RepoDamagedError

    (tmp_path / "f").write_bytes(os.urandom(600_000))
    result = add_path(repo, tmp_path / "f")
    index = repo.blocks.root / "index.sqlite"
    with sqlite3.connect(index) as db:
        (pack, offset) = db.execute("SELECT pack, offset FROM blocks ORDER BY offset LIMIT 1").fetchone()
    size = repo.blocks.pack_path(pack).stat().st_size
    for change, expected in [
        (f"UPDATE blocks SET offset = {size} WHERE offset = {offset}", "past the end of pack"),
        (f"UPDATE blocks SET offset = {offset + 1} WHERE offset = {offset}", "point where the pack holds"),
        (f"UPDATE blocks SET pack = 12345 WHERE offset = {offset}", "pack 12345, which is missing"),
        ("DELETE FROM blocks", "lists 4 block"),
    ]:
        db = sqlite3.connect(index, isolation_level=None)
        db.execute(change)
        db.close()
        with pytest.raises(RepoDamagedError, match=expected):
            repo.gc()
        assert repo.pin_layout(result.pin.root).pin == result.pin
        report = reporepair.repair(repo)
        assert report.problems == [] and report.done[0].startswith("index rebuilt from the packs: 4 blocks")
        assert repocheck.check(repo).problems == []
    assert repo.gc() == (0, 0)
    get_link(repo, result.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "f").read_bytes()


def test_repair_skips_a_damaged_frame_and_keeps_every_other_block(repo: Repo, tmp_path: Path) -> None:
    from node.files.add import add_path
    from node.store import reporepair
    from tests.helpers import block_region, write_region

    kept = add_path(repo, _write(tmp_path / "kept", os.urandom(300_000)))
    hurt = add_path(repo, _write(tmp_path / "hurt", os.urandom(300_000)))
    victim = list(repo.pin_blocks(hurt.pin.root))[1]
    path, offset, _length = block_region(repo, victim)
    write_region(path, offset - 30, b"\xff" * 8)  # its frame's length and digest
    (repo.blocks.root / "index.sqlite").unlink()
    repo.blocks.close()
    report = reporepair.repair(repo)
    assert any("1 damaged or unfinished span(s) skipped" in n for n in report.notes)
    assert any(cid_to_text(hurt.pin.root) in p and "cannot be rebuilt" in p for p in report.problems)
    assert not repo.blocks.has(victim)
    assert all(repo.blocks.has(c) for c in repo.pin_blocks(kept.pin.root))
    others = set(repo.pin_blocks(hurt.pin.root)) - {victim}
    assert all(repo.blocks.has(c) for c in others)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_repair_refuses_while_a_daemon_holds_the_repo(run_cli: RunCli, tmp_path: Path) -> None:
    import fcntl

    repo, _added = _repo_with_files(run_cli, tmp_path, count=1)
    fd = os.open(repo / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert "stop it before 'sealbox repo repair'" in one_error(run_cli("--repo", repo, "repo", "repair"))
    finally:
        os.close(fd)


def test_a_pin_whose_header_is_lost_stops_gc_until_it_is_removed(run_cli: RunCli, tmp_path: Path) -> None:
    repo, added = _repo_with_files(run_cli, tmp_path)
    pin = _pins(repo)[2]
    data = bytearray(pin.read_bytes())
    data[-50] ^= 0xFF  # in the header: its checksum refuses it
    pin.write_bytes(bytes(data))
    assert f"pin of {pin.stem} is damaged" in one_error(run_cli("--repo", repo, "gc"))
    repaired = run_cli("--repo", repo, "repo", "repair")
    assert f"cannot be repaired (its header is lost); 'sealbox rm {pin.stem}' lets gc run" in repaired.stdout
    one_error(repaired)
    assert ok(run_cli("--repo", repo, "rm", pin.stem)).strip() == f"unpinned {pin.stem}"
    ok(run_cli("--repo", repo, "gc"))
    assert _intact(run_cli, repo, added, tmp_path) == 2


def _as_unframed_pack(repo: Repo, number: int) -> None:
    """Rewrite every block into one pack as the code before frames wrote it (back to back, no header)."""
    db = sqlite3.connect(repo.blocks.root / "index.sqlite", isolation_level=None)
    rows = db.execute("SELECT digest, pack, offset, length FROM blocks ORDER BY pack, offset").fetchall()
    offset = 0
    with open(repo.blocks.pack_path(number), "wb") as out:
        for digest, pack, at, length in rows:
            with open(repo.blocks.pack_path(pack), "rb") as f:
                f.seek(at)
                out.write(f.read(length))
            db.execute("UPDATE blocks SET pack = ?, offset = ? WHERE digest = ?", (number, offset, digest))
            offset += length
    for pack in {row[1] for row in rows}:
        repo.blocks.pack_path(pack).unlink()
    db.close()
    repo.blocks.close()


def test_a_pack_written_before_frames_is_read_checked_and_recovered_through_the_old_index(
    repo: Repo, tmp_path: Path
) -> None:
    from node.files.add import add_path
    from node.files.get import get_link
    from node.store import repocheck, reporepair

    result = add_path(repo, _write(tmp_path / "f", os.urandom(600_000)))
    _as_unframed_pack(repo, 77)
    assert repocheck.check(repo).problems == []
    get_link(repo, result.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "f").read_bytes()
    # a row lost from the index (as a truncated index loses them): found again between the others
    with sqlite3.connect(repo.blocks.root / "index.sqlite") as db:
        db.execute("DELETE FROM blocks WHERE offset = (SELECT min(offset) FROM blocks WHERE offset > 0)")
    report = reporepair.repair(repo)
    said = "pack 77 predates framing: 3 of its blocks found through the old index (0 rows did not check), 1"
    assert any(note.startswith(said) for note in report.notes), report.notes
    assert report.problems == [] and repocheck.check(repo).problems == []
    get_link(repo, result.link, tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == (tmp_path / "f").read_bytes()
    # with the index gone there is no way back into that pack: said so, and nothing is deleted
    (repo.blocks.root / "index.sqlite").unlink()
    repo.blocks.close()
    report = reporepair.repair(repo)
    assert any("pack 77 predates framing and the old index names none" in p for p in report.problems)
    assert any("cannot be rebuilt" in p for p in report.problems)
    assert repo.blocks.pack_path(77).exists()


def test_a_block_committed_while_the_check_reads_the_index_is_not_damage(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc's check runs while fetches commit: a commit between two of its reads must not look like
    damage (it did: "the block index's two b-trees disagree", under load, with a fetch running)."""
    from node.store import repocheck

    first = os.urandom(1000)
    repo.blocks.put(cid_of(first), first)
    real = repocheck.connect_index
    committed: list[bytes] = []

    class Racing:
        """The check's connection; another one commits a block right after its first count."""

        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            cursor = self.db.execute(sql, *args)
            if "count(*)" in sql and not committed:
                block = os.urandom(1000)
                repo.blocks.put(cid_of(block), block)
                committed.append(block)
            return cursor

        def close(self) -> None:
            self.db.close()

    monkeypatch.setattr(repocheck, "connect_index", lambda store: Racing(real(store)))
    assert repocheck.index_problems(repo.blocks) == []
    assert committed and repo.blocks.stats()[0] == 2
