"""The repo and block store: storing, verifying, pinning, collecting garbage, and add/get round trips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.files.add import add_path
from node.files.errors import DestinationError, InputError
from node.files.get import LOCATE_AHEAD, get_link
from node.store.blockstore import FRAME, LOCATE_BATCH, MAX_BLOCK, PACK_MAGIC
from node.store.errors import NotFoundError, RepoError
from node.store.repo import Repo
from protocol.cid import cid_digest, cid_of
from protocol.errors import CidError, CorruptBlockError
from protocol.manifest import chunk_count, decode_node, level_counts
from protocol.padding import padded_size
from protocol.seal import NodeKeys
from protocol.walk import iter_leaves
from tests.helpers import (
    SMALL_CHUNK,
    block_region,
    block_set,
    listing,
    pack_files,
    read_region,
    snapshot,
    write_region,
)

# -- the block store -----------------------------------------------------------------------------------


def test_put_refuses_a_block_that_does_not_match_its_cid(repo: Repo) -> None:
    block = b"some sealed bytes"
    wrong = cid_of(b"other bytes")
    with pytest.raises(CorruptBlockError):
        repo.blocks.put(wrong, block)
    assert not repo.blocks.has(wrong)
    assert block_set(repo) == set()
    assert pack_files(repo) == set()  # the session's pack was removed
    with pytest.raises(CidError):
        repo.blocks.put(b"\x01\x70\x12\x20" + bytes(32), block)
    assert pack_files(repo) == set()


def test_locate_finds_the_held_blocks_in_batches_and_get_reads_them_there(repo: Repo) -> None:
    blocks = [os.urandom(100 + i) for i in range(LOCATE_BATCH + 7)]  # more than one query's worth
    with repo.blocks.writer() as writer:
        for block in blocks:
            writer.put(cid_of(block), block)
        writer.commit()
    cids = [cid_of(block) for block in blocks]
    absent = cid_of(b"never stored")
    where = repo.blocks.locate([absent, *cids, cids[0]])  # a repeat is fine
    assert set(where) == set(cids)
    for cid, block in zip(cids, blocks, strict=True):
        assert repo.blocks.get(cid, where=where[cid]) == block
        assert where[cid][2] == len(block)
    assert repo.blocks.locate([]) == {}
    with pytest.raises(NotFoundError):
        repo.blocks.get(absent, where=where.get(absent))
    with pytest.raises(CidError):
        repo.blocks.locate([b"\x01\x70\x12\x20" + bytes(32)])


def test_put_is_idempotent_and_get_returns_the_bytes(repo: Repo) -> None:
    block = os.urandom(5000)
    cid = cid_of(block)
    assert repo.blocks.put(cid, block) is True
    packs = pack_files(repo)
    assert len(packs) == 1
    assert repo.blocks.put(cid, block) is False
    assert pack_files(repo) == packs  # nothing more written
    assert repo.blocks.get(cid) == block
    assert repo.blocks.has(cid)
    assert block_set(repo) == {cid}
    assert list(repo.blocks) == [(cid, len(block))]
    assert repo.blocks.stats() == (1, len(block))
    path, offset, length = block_region(repo, cid)
    assert read_region(path, offset, length) == block


def test_a_writer_session_is_visible_only_once_committed(repo: Repo) -> None:
    blocks = [os.urandom(1000 + i) for i in range(3)]
    with repo.blocks.writer() as writer:
        for block in blocks:
            assert writer.put(cid_of(block), block)
        assert not writer.put(cid_of(blocks[0]), blocks[0])  # already in this session
        assert block_set(repo) == set()
        writer.commit()
        assert block_set(repo) == {cid_of(b) for b in blocks}
    with repo.blocks.writer() as writer:
        writer.put(cid_of(b"never committed"), b"never committed")
    assert not repo.blocks.has(cid_of(b"never committed"))
    assert len(pack_files(repo)) == 1
    assert [repo.blocks.get(cid_of(b)) for b in blocks] == blocks


def test_put_refuses_an_oversized_block(repo: Repo) -> None:
    block = bytes(MAX_BLOCK + 1)
    with pytest.raises(RepoError):
        repo.blocks.put(cid_of(block), block)
    assert block_set(repo) == set()
    assert pack_files(repo) == set()


def test_get_of_a_missing_block(repo: Repo) -> None:
    with pytest.raises(NotFoundError):
        repo.blocks.get(cid_of(b"never stored"))
    assert not repo.blocks.has(cid_of(b"never stored"))


def test_get_detects_a_block_damaged_on_disk(repo: Repo) -> None:
    block = os.urandom(2000)
    cid = cid_of(block)
    repo.blocks.put(cid, block)
    path, offset, length = block_region(repo, cid)
    damaged = bytearray(block)
    damaged[1234] ^= 0x80
    write_region(path, offset, bytes(damaged))
    with pytest.raises(CorruptBlockError):
        repo.blocks.get(cid)
    assert repo.blocks.get(cid, verify=False) == damaged  # for callers that verify themselves
    os.truncate(path, offset + length - 1)
    with pytest.raises(CorruptBlockError):
        repo.blocks.get(cid, verify=False)  # a short read is always checked


def test_repo_open(tmp_path: Path) -> None:
    with pytest.raises(RepoError):
        Repo.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()
    repo = Repo.open(tmp_path / "r")
    assert (repo.path / "version").read_text() == "sealbox-repo 1\n"
    assert (repo.path / "secret").stat().st_mode & 0o777 == 0o600
    assert Repo.open(tmp_path / "r", create=False).path == repo.path
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    with pytest.raises(RepoError):
        Repo.open(tmp_path / "busy")
    assert (tmp_path / "busy" / "file").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "version").write_text("something else 9\n")
    with pytest.raises(RepoError):
        Repo.open(tmp_path / "other")


# -- pins, rm and gc --------------------------------------------------------------------------------


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_ls_rm_and_gc_free_exactly_what_was_stored(repo: Repo, tmp_path: Path) -> None:
    result = add_path(repo, _file(tmp_path / "f", os.urandom(100_000)), display_name="report")
    pins = repo.pins()
    assert [(p.root, p.name, p.kind, p.size) for p in pins] == [(result.link.root, "report", "file", 100_000)]
    stored = block_set(repo)
    assert set(repo.pin_blocks(result.link.root)) == stored
    assert len(stored) == result.pin.blocks == result.new_blocks
    assert repo.blocks.stats() == (result.pin.blocks, result.pin.stored)
    assert repo.gc() == (0, 0)  # everything is pinned
    assert block_set(repo) == stored

    unpinned = repo.unpin(result.link.root)
    assert unpinned.root == result.link.root
    assert repo.pins() == []
    with pytest.raises(NotFoundError):
        repo.unpin(result.link.root)
    assert block_set(repo) == stored  # rm only unpins
    framing = len(PACK_MAGIC) + result.pin.blocks * FRAME.size  # gc frees the pack: frames included
    assert repo.gc() == (result.pin.blocks, result.pin.stored + framing)
    assert block_set(repo) == set()
    assert pack_files(repo) == set()
    assert os.listdir(repo.adds_dir) == []
    with pytest.raises(NotFoundError):
        get_link(repo, result.link, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gc_keeps_the_blocks_of_other_pins(repo: Repo, tmp_path: Path) -> None:
    keep = add_path(repo, _file(tmp_path / "keep", os.urandom(70_000)), chunk_size=SMALL_CHUNK)
    drop = add_path(repo, _file(tmp_path / "drop", os.urandom(50_000)), chunk_size=SMALL_CHUNK)
    kept_blocks = set(repo.pin_blocks(keep.link.root))
    assert kept_blocks.isdisjoint(repo.pin_blocks(drop.link.root))
    repo.unpin(drop.link.root)
    framing = len(PACK_MAGIC) + drop.pin.blocks * FRAME.size  # gc frees the pack: frames included
    assert repo.gc() == (drop.pin.blocks, drop.pin.stored + framing)
    assert block_set(repo) == kept_blocks
    assert pack_files(repo) == {block_region(repo, cid)[0].name for cid in kept_blocks}
    get_link(repo, keep.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "keep").read_bytes()


def test_gc_removes_what_a_crashed_add_left(repo: Repo, tmp_path: Path) -> None:
    kept = add_path(repo, _file(tmp_path / "kept", b"kept"))
    packs = pack_files(repo)
    (repo.tmp / ".pin-left-by-a-crash.tmp").write_bytes(b"x" * 10)
    # a writer session that never committed nor closed, in a process that died: its pack holds bytes
    # (and its pack lock died with it)
    crash = (
        "import os, sys; from pathlib import Path; from node.store.repo import Repo\n"
        "from protocol.cid import cid_of\n"
        "w = Repo.open(Path(sys.argv[1])).blocks.writer(); w.put(cid_of(b'y' * 90), b'y' * 90); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", crash, str(repo.path)], check=True, timeout=60)
    assert len(pack_files(repo)) == len(packs) + 1
    assert repo.gc() == (0, 10 + len(PACK_MAGIC) + FRAME.size + 90)
    assert os.listdir(repo.tmp) == []
    assert pack_files(repo) == packs
    get_link(repo, kept.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"kept"


def test_adding_the_same_content_twice(repo: Repo, tmp_path: Path) -> None:
    source = _file(tmp_path / "same.txt", b"same bytes" * 1000)
    first = add_path(repo, source)
    before, packs = block_set(repo), pack_files(repo)
    second = add_path(repo, source)
    assert second.existing is True and first.existing is False
    assert second.new_blocks == 0
    assert str(second.link) == str(first.link)
    assert block_set(repo) == before
    assert pack_files(repo) == packs
    assert len(repo.pins()) == 1
    assert os.listdir(repo.tmp) == []
    # a new display name renames the pin, and the link still opens the same root
    third = add_path(repo, source, display_name="renamed")
    assert third.existing and third.link.root == first.link.root and third.link.key == first.link.key
    assert [p.name for p in repo.pins()] == ["renamed"]
    assert block_set(repo) == before
    assert set(repo.pin_blocks(first.link.root)) == before
    # other content, or the same bytes under another name, is a new add
    other = add_path(repo, _file(tmp_path / "other.txt", b"same bytes" * 1000))
    assert not other.existing and other.link.root != first.link.root


def test_the_add_fingerprint_covers_every_chunk(repo: Repo, tmp_path: Path) -> None:
    data = bytearray(os.urandom(5 * SMALL_CHUNK + 7))
    first = add_path(repo, _file(tmp_path / "f", bytes(data)), chunk_size=SMALL_CHUNK)
    for offset in (0, 3 * SMALL_CHUNK + 1, len(data) - 1):  # the first, a middle and the last chunk
        changed = bytearray(data)
        changed[offset] ^= 1
        (tmp_path / "f").unlink()
        again = add_path(repo, _file(tmp_path / "f", bytes(changed)), chunk_size=SMALL_CHUNK)
        assert not again.existing and again.link.root != first.link.root
    (tmp_path / "f").unlink()
    same = add_path(repo, _file(tmp_path / "f", bytes(data)), chunk_size=SMALL_CHUNK)
    assert same.existing and str(same.link) == str(first.link)


ENDS_IN_PADDING = 1_049_276  # padded past its last chunk of content: its last chunk is padding only


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNK, 3 * SMALL_CHUNK + 5, ENDS_IN_PADDING])
def test_an_add_hashes_only_when_an_earlier_one_may_hold_the_same_content(
    repo: Repo, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    first = add_path(repo, _file(tmp_path / "f", data), chunk_size=SMALL_CHUNK)
    assert first.pin.fingerprint is None and os.listdir(repo.adds_dir) == []  # nothing alike: no digest
    # other bytes of the same size: now both are hashed, the first from its stored blocks
    other = add_path(repo, _file(tmp_path / "g", os.urandom(size)), chunk_size=SMALL_CHUNK)
    assert not other.existing and other.pin.fingerprint is not None
    earlier = repo.read_pin(first.link.root)
    assert earlier.fingerprint is not None and earlier.fingerprint != other.pin.fingerprint
    # the digest made from blocks is the one add makes: the same bytes again are the first add
    (tmp_path / "f").unlink()
    again = add_path(repo, _file(tmp_path / "f", data), chunk_size=SMALL_CHUNK)
    assert again.existing and str(again.link) == str(first.link)
    assert len(repo.pins()) == 2 and os.listdir(repo.tmp) == []
    assert size != ENDS_IN_PADDING or padded_size(size) // SMALL_CHUNK > -(-size // SMALL_CHUNK)


def test_a_tree_added_without_a_digest_is_recognised_later(repo: Repo, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    _file(tree / "a", os.urandom(3 * SMALL_CHUNK + 1))
    _file(tree / "sub" / "b", b"")
    _file(tree / "sub" / "deeper" / "c", b"c" * 100).chmod(0o755)
    first = add_path(repo, tree, chunk_size=SMALL_CHUNK)
    assert first.pin.fingerprint is None
    again = add_path(repo, tree, chunk_size=SMALL_CHUNK)
    assert again.existing and str(again.link) == str(first.link) and again.new_blocks == 0
    # the same sizes, but one mode bit differs: a new add
    (tree / "sub" / "deeper" / "c").chmod(0o644)
    changed = add_path(repo, tree, chunk_size=SMALL_CHUNK)
    assert not changed.existing and changed.link.root != first.link.root


def test_an_earlier_add_that_cannot_be_read_is_not_reused(repo: Repo, tmp_path: Path) -> None:
    data = os.urandom(2 * SMALL_CHUNK)
    first = add_path(repo, _file(tmp_path / "f", data), chunk_size=SMALL_CHUNK)
    keys = NodeKeys(first.link.key, 0)
    node = decode_node(keys.node.open(0, repo.blocks.get(first.link.root)), root=True)
    _, leaf = next(iter_leaves(node, keys, repo.blocks.get))
    pack, offset, _length = block_region(repo, leaf)
    write_region(pack, offset, bytes([read_region(pack, offset, 1)[0] ^ 1]))  # damaged on disk
    again = add_path(repo, tmp_path / "f", chunk_size=SMALL_CHUNK)
    assert not again.existing and again.link.root != first.link.root
    assert repo.read_pin(first.link.root).fingerprint is None  # nothing was recorded for it
    out = tmp_path / "out"
    get_link(repo, again.link, out)
    assert out.read_bytes() == data


def test_failed_add_leaves_nothing_behind(repo: Repo, tmp_path: Path) -> None:
    kept = add_path(repo, _file(tmp_path / "kept", b"kept"))
    before_blocks, before_pins, before_packs = block_set(repo), repo.pins(), pack_files(repo)
    before_adds = sorted(os.listdir(repo.adds_dir))
    tree = tmp_path / "tree"
    tree.mkdir()
    _file(tree / "a.txt", os.urandom(40_000))  # sealed and stored before the bad name is reached
    (tree / "b").mkdir()
    _file(tree / "b" / "c.txt", b"c")
    _file(tree / "nul.txt", b"a device name on Windows")
    with pytest.raises(InputError, match=r"nul\.txt"):
        add_path(repo, tree, chunk_size=SMALL_CHUNK)
    assert block_set(repo) == before_blocks
    assert pack_files(repo) == before_packs
    assert repo.pins() == before_pins
    assert sorted(os.listdir(repo.adds_dir)) == before_adds
    assert os.listdir(repo.tmp) == []
    get_link(repo, kept.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"kept"


def test_add_refuses_missing_and_unsafe_paths(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        add_path(repo, tmp_path / "absent")
    with pytest.raises(InputError):
        add_path(repo, _file(tmp_path / "CON", b"x"))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError):
        add_path(repo, tmp_path / "fifo")
    assert block_set(repo) == set() and repo.pins() == []


# -- round trips -------------------------------------------------------------------------------------


def test_tree_round_trip(repo: Repo, tmp_path: Path) -> None:
    tree = tmp_path / "project"
    (tree / "src" / "deep" / "deeper").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    (tree / "docs" / "empty-too").mkdir(parents=True)
    _file(tree / "README", b"read me\n")
    _file(tree / "empty-file", b"")
    _file(tree / "src" / "deep" / "deeper" / "data.bin", os.urandom(40_000))
    _file(tree / "docs" / "\u00e9t\u00e9 \U0001f600.txt", b"unicode names")
    _file(tree / ".hidden", b"dot file")
    _file(tree / "a..b", b"dots")
    run = _file(tree / "src" / "run.sh", b"#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    os.symlink("README", tree / "link-to-readme")  # skipped, with a warning
    warnings: list[str] = []
    result = add_path(repo, tree, chunk_size=SMALL_CHUNK, warn=warnings.append)
    assert len(warnings) == 1 and "link-to-readme" in warnings[0]
    assert result.pin.kind == "dir"
    out = tmp_path / "out"
    got = get_link(repo, result.link, out)
    assert got.path == out and got.kind == "dir" and got.files == 7
    assert got.size == sum(len(v[1]) for v in snapshot(tree).values())
    expected = snapshot(tree)
    del expected["./link-to-readme"]
    assert snapshot(out) == expected
    assert os.access(out / "src" / "run.sh", os.X_OK)
    assert not (out / "README").stat().st_mode & 0o111


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 2 * SMALL_CHUNK])
def test_file_on_chunk_boundaries_round_trips(repo: Repo, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    result = add_path(repo, _file(tmp_path / "f", data), chunk_size=SMALL_CHUNK, with_size=True)
    assert result.link.size == size
    assert result.pin.blocks == chunk_count(size, SMALL_CHUNK) + 1  # data blocks and the node block
    got = get_link(repo, result.link, tmp_path / "out")
    assert got.size == size and got.files == 1
    assert (tmp_path / "out").read_bytes() == data


def test_multi_level_index_round_trips(repo: Repo, tmp_path: Path) -> None:
    size = 300 * SMALL_CHUNK  # more chunks than a node's top holds (256): one index level
    data = os.urandom(size)
    result = add_path(repo, _file(tmp_path / "big", data), chunk_size=SMALL_CHUNK)
    keys = NodeKeys(result.link.key, 0)
    node = decode_node(keys.node.open(0, repo.blocks.get(result.link.root)), root=True)
    counts = level_counts(chunk_count(size, SMALL_CHUNK), SMALL_CHUNK)
    assert node.level == 1 == len(counts) - 1
    assert result.pin.blocks == sum(counts) + 1
    get_link(repo, result.link, tmp_path / "out")  # leaves are located in batches of LOCATE_AHEAD
    assert (tmp_path / "out").read_bytes() == data
    # a leaf missing from the repo, past the first batches, still fails the get and leaves nothing
    leaves = list(iter_leaves(node, keys, repo.blocks.get))
    assert len(leaves) > 3 * LOCATE_AHEAD
    _, gone = leaves[3 * LOCATE_AHEAD + 1]
    repo.blocks.db.execute("DELETE FROM blocks WHERE digest = ?", (cid_digest(gone),))
    with pytest.raises(NotFoundError):
        get_link(repo, result.link, tmp_path / "again")
    assert sorted(os.listdir(tmp_path)) == ["big", "out", "repo"]


def test_get_refuses_to_overwrite(repo: Repo, tmp_path: Path) -> None:
    result = add_path(repo, _file(tmp_path / "f.txt", b"new content"))
    existing = _file(tmp_path / "existing", b"precious")
    before = listing(tmp_path)
    with pytest.raises(DestinationError):
        get_link(repo, result.link, existing)
    assert existing.read_bytes() == b"precious"
    # into a directory that already holds the name
    (tmp_path / "dir").mkdir()
    _file(tmp_path / "dir" / "f.txt", b"also precious")
    with pytest.raises(DestinationError):
        get_link(repo, result.link, tmp_path / "dir")
    assert (tmp_path / "dir" / "f.txt").read_bytes() == b"also precious"
    # into a directory that does not exist
    with pytest.raises(DestinationError):
        get_link(repo, result.link, tmp_path / "no" / "such" / "dir" / "f")
    assert listing(tmp_path) == before | {"dir", "dir/f.txt"}


def test_get_into_an_existing_directory(repo: Repo, tmp_path: Path) -> None:
    result = add_path(repo, _file(tmp_path / "f.txt", b"content"))
    dest = tmp_path / "downloads"
    dest.mkdir()
    got = get_link(repo, result.link, dest)
    assert got.path == dest / "f.txt"
    assert os.listdir(dest) == ["f.txt"]
    assert (dest / "f.txt").read_bytes() == b"content"
