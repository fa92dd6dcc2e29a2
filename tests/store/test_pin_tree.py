"""What a fetch keeps (node/store/pin_tree.py) and walks (node/store/tree_walk.py's Frontier with a
Selection): the key of a fetched root unless told not to, and only the part of a tree asked for."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.files.add import add_path
from node.files.get import get_link, stream_link
from node.files.listing import list_tree, root_name
from node.store.pin_tree import pin_fetched, remember_key
from node.store.repo import Repo
from node.store.tree_walk import WHOLE, Frontier, Selection
from protocol.errors import LinkError
from protocol.link import ShareLink
from tests.helpers import SMALL_CHUNK, block_set


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[Repo, ShareLink]]:
    """A repo that added a folder: ``big.bin`` (1 MiB), ``sub/small.txt`` and an executable script."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "big.bin").write_bytes(os.urandom(1 << 20))
    (folder / "sub" / "small.txt").write_bytes(b"small and alone")
    (folder / "run.sh").write_bytes(b"#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    source = Repo.open(tmp_path / "source")
    result = add_path(source, folder, chunk_size=SMALL_CHUNK)
    yield source, result.link
    source.close()


def fetch_into(source: Repo, target: Repo, link: ShareLink, selection: Selection = WHOLE) -> int:
    """Copy what a Frontier over ``target`` asks for from ``source``, round by round, as a fetch does;
    returns the bytes copied."""
    frontier = Frontier(target.blocks, link, selection=selection)
    copied = 0
    while missing := frontier.round(64):
        with target.blocks.writer() as writer:
            for cid in missing:
                block = source.blocks.get(cid)
                writer.put(cid, block)
                copied += len(block)
            writer.commit()
    assert frontier.complete
    return copied


def test_a_fetched_root_keeps_its_key_unless_told_not_to(
    tmp_path: Path, shared: tuple[Repo, ShareLink]
) -> None:
    source, link = shared
    kept, bare = Repo.open(tmp_path / "kept"), Repo.open(tmp_path / "bare")
    for target in (kept, bare):
        fetch_into(source, target, link)
    assert pin_fetched(kept, link).key == link.key
    assert kept.read_pin(link.root).key == link.key
    assert root_name(kept, kept.read_pin(link.root)) == "photos"
    assert pin_fetched(bare, link, keep_key=False).key is None
    assert root_name(bare, bare.read_pin(link.root)) is None
    # a later get that keeps keys gives the pin its key; one that does not never takes a key away
    assert pin_fetched(bare, link, keep_key=False).key is None
    again = pin_fetched(bare, link)
    assert again.key == link.key and bare.read_pin(link.root) == again
    assert list(bare.pin_blocks(link.root)) == list(kept.pin_blocks(link.root))
    assert pin_fetched(bare, link, keep_key=False).key == link.key
    # the repo an add made keeps its own pin as it was
    assert pin_fetched(source, link) == source.read_pin(link.root)
    # a get that found the whole tree held (no fetch, no pin_fetched) keeps the key too
    other = Repo.open(tmp_path / "other")
    fetch_into(source, other, link)
    pin_fetched(other, link, keep_key=False)
    remember_key(other, link)
    assert other.read_pin(link.root).key == link.key
    remember_key(Repo.open(tmp_path / "none"), link)  # nothing pinned: nothing to do


def test_a_selection_fetches_only_the_folders_on_its_way_and_its_entry(
    tmp_path: Path, shared: tuple[Repo, ShareLink]
) -> None:
    source, link = shared
    whole = sum(len(source.blocks.get(cid)) for cid in block_set(source))
    part = Repo.open(tmp_path / "part")
    partial = fetch_into(source, part, link, Selection(("sub", "small.txt")))
    assert partial < whole // 20  # the 1 MiB file's data stayed where it was
    out = tmp_path / "small.txt"
    assert get_link(part, link, out, path=("sub", "small.txt")).size == len(b"small and alone")
    assert out.read_bytes() == b"small and alone"
    with open(tmp_path / "streamed", "wb") as f:
        stream_link(part, link, f, path=("sub", "small.txt"))
    assert (tmp_path / "streamed").read_bytes() == b"small and alone"
    # metadata alone: every entry with its size and mode, no file data
    meta = Repo.open(tmp_path / "meta")
    copied = fetch_into(source, meta, link, Selection(data=False))
    assert copied < whole // 20
    listing = list_tree(meta, link)
    assert (listing.name, listing.kind, listing.size) == ("photos", "dir", (1 << 20) + 15 + 10)
    with pytest.raises(LinkError, match="size does not match"):
        list_tree(meta, dataclasses.replace(link, size=listing.size + 1))
    rows = [(e.path, e.kind, e.size, e.executable) for e in listing.entries]
    assert rows == [
        ("big.bin", "file", 1 << 20, False),
        ("run.sh", "file", 10, True),
        ("sub", "dir", 0, False),
        ("sub/small.txt", "file", 15, False),
    ]
    # the rest comes later, on top of what is there: a whole fetch then pins the tree
    assert partial + fetch_into(source, part, link) == whole
    pin_fetched(part, link)
    assert part.read_pin(link.root).blocks == source.read_pin(link.root).blocks
