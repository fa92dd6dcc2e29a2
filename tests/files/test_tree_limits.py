"""The tree's limits hold the same everywhere a tree is read or made: the local get, the add digest, a
fetch's walk, repo repair and the adder (one walk: protocol/walk.py; one depth rule: specs/format.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from node.files.add import add_path
from node.files.errors import InputError
from node.files.get import added_digest, get_link
from node.store.repo import Repo
from node.store.reporepair import _tree_blocks
from node.store.tree_walk import Frontier
from protocol.errors import ManifestError
from protocol.link import ShareLink
from protocol.manifest import Entry, encode_entry
from protocol.seal import new_key
from protocol.tree import Dir, File, Item, seal_tree
from protocol.walk import MAX_DEPTH
from tests.helpers import SMALL_CHUNK, seal_dir, seal_file


def chain(depth: int) -> Item:
    item: Item = File(b"deep")
    for _ in range(depth):
        item = Dir({"d": item})
    return item


def stored_tree(repo: Repo, item: Item) -> ShareLink:
    master = new_key()
    root, blocks = seal_tree(master, "top", item, SMALL_CHUNK)
    for cid, block in blocks.items():
        repo.blocks.put(cid, block)
    return ShareLink(root, master)


def duplicated_number(repo: Repo) -> ShareLink:
    master = new_key()
    a = seal_file(repo, master, 1, b"a")
    b = seal_file(repo, master, 1, b"b")  # the same number: it opens as well
    listing = encode_entry(Entry("a", 1, a)) + encode_entry(Entry("b", 1, b))
    return ShareLink(seal_dir(repo, master, 0, listing, "top"), master)


def read_ways(repo: Repo, tmp_path: Path) -> list[Callable[[ShareLink], object]]:
    return [
        lambda link: get_link(repo, link, tmp_path / "out"),
        lambda link: added_digest(repo, link.root, link.key),
        lambda link: Frontier(repo.blocks, link).round(1 << 30),
        lambda link: _tree_blocks(repo.blocks, link.root, link.key),
    ]


def test_a_node_at_depth_256_is_refused_by_every_reader_with_one_error(repo: Repo, tmp_path: Path) -> None:
    fine, deep = stored_tree(repo, chain(MAX_DEPTH)), stored_tree(repo, chain(MAX_DEPTH + 1))
    for read in read_ways(repo, tmp_path):
        read(fine)
        with pytest.raises(ManifestError, match=r"^directory tree is nested too deeply$"):
            read(deep)
    assert get_link(repo, fine, tmp_path / "again").files == 1


def test_a_node_number_used_twice_is_refused_by_every_reader(repo: Repo, tmp_path: Path) -> None:
    link = duplicated_number(repo)
    for read in read_ways(repo, tmp_path):
        with pytest.raises(ManifestError, match="reuses a node number"):
            read(link)


def test_the_adder_makes_a_node_at_depth_255_and_refuses_one_at_256(repo: Repo, tmp_path: Path) -> None:
    # under Python's default recursion limit (1000 frames, some 4 a level): add_path makes room
    sys.setrecursionlimit(1000)
    _adder_depths(repo, tmp_path)


def _adder_depths(repo: Repo, tmp_path: Path) -> None:
    top = tmp_path / "top"
    bottom = top
    for _ in range(MAX_DEPTH - 1):
        bottom = bottom / "d"
    bottom.mkdir(parents=True)
    (bottom / "f").write_bytes(b"deep")  # at depth 255: the root is top, at 0
    link = add_path(repo, top).link
    assert get_link(repo, link, tmp_path / "out").files == 1
    (bottom / "f").unlink()
    (bottom / "f").mkdir()  # an empty directory at 255 is a node at 255 too
    add_path(repo, top)
    (bottom / "f" / "g").write_bytes(b"too deep")
    with pytest.raises(InputError, match="nested too deeply"):
        add_path(repo, top)
