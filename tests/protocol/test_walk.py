"""The one walk of a sealed tree (protocol/walk.py), driven block by block with no I/O (blocks in a dict)."""

from __future__ import annotations

import os

import pytest

from protocol.cid import cid_of
from protocol.errors import ManifestError, ProtocolError
from protocol.manifest import MIN_CHUNK, Entry, Node, chunk_count, encode_entry, encode_node, top_max
from protocol.seal import NodeKeys, new_key
from protocol.stream import Chunker, IndexBuilder, seal_chunk
from protocol.tree import Dir, File, Item, open_tree, seal_tree
from protocol.walk import MAX_DEPTH, Ahead, Enter, Exit, Leaves, Need, TreeWalk

CS = MIN_CHUNK
Blocks = dict[bytes, bytes]


def sealed(item: Item, name: str = "top") -> tuple[bytes, bytes, Blocks]:
    master = new_key()
    root, blocks = seal_tree(master, name, item, CS)
    return master, root, blocks


def sample() -> Dir:
    many = (top_max(CS) + 40) * CS  # more data blocks than a node's top holds: an index level
    return Dir(
        {
            "b": Dir({"inner.txt": File(b"inner"), "empty": Dir()}),
            "a.bin": File(os.urandom(many), executable=True),
            "c": File(b""),
        }
    )


def chain(depth: int) -> Item:
    """Directories nested so that the file at the bottom is at ``depth``."""
    item: Item = File(b"deep")
    for _ in range(depth):
        item = Dir({"d": item})
    return item


def hand_node(
    blocks: Blocks, master: bytes, number: int, kind: str, data: bytes, name: str | None = None
) -> bytes:
    """Seal one node exactly as told (no checks of the tree around it) into ``blocks``."""
    keys = NodeKeys(master, number)
    chunker, index = Chunker(CS), IndexBuilder(keys, CS)
    for position, chunk in [*chunker.feed(data), *chunker.finish()]:
        cid, block = seal_chunk(keys.data, position, chunk)
        blocks[cid] = block
        blocks.update(index.add(cid))
    level, top, rest = index.finish()
    blocks.update(rest)
    block = keys.node.seal(0, encode_node(Node(kind, len(data), CS, level, top, False, name)))  # type: ignore[arg-type]
    blocks[cid_of(block)] = block
    return cid_of(block)


def drive_with_gaps(walk: TreeWalk, blocks: Blocks, absent: set[bytes]) -> tuple[list[bytes], int]:
    """Drive ``walk`` as a fetch does: a block in ``absent`` is deferred, then 'fetched' (removed from
    ``absent``) and resumed in the next round. Returns every block named, and the rounds taken."""
    named: list[bytes] = []
    rounds = 0
    while True:
        rounds += 1
        fetched: list[bytes] = []
        while (step := walk.next()) is not None:
            if isinstance(step, Need):
                if step.cid in absent:
                    walk.defer()
                    fetched.append(step.cid)
                else:
                    walk.give(blocks[step.cid])
                    named.append(step.cid)
            elif isinstance(step, Leaves):
                named += step.cids
            elif isinstance(step, Ahead):
                fetched.append(step.cid)
        if not fetched:
            assert walk.done
            return named, rounds
        for cid in fetched:
            absent.discard(cid)
            walk.resume(cid)


def test_steps_come_in_preorder_with_each_files_leaves_in_order() -> None:
    master, root, blocks = sealed(sample())
    order = []
    leaves: dict[str, list[int]] = {}
    for step in TreeWalk(master, root).steps(blocks.__getitem__):
        if isinstance(step, Leaves):
            leaves.setdefault(step.info.name, []).extend(range(step.start, step.start + len(step.cids)))
        else:
            order.append((type(step).__name__, step.info.name, step.info.number, step.info.depth))
    assert order == [
        ("Enter", "top", 0, 0),
        ("Enter", "a.bin", 1, 1),
        ("Exit", "a.bin", 1, 1),
        ("Enter", "b", 2, 1),
        ("Enter", "empty", 3, 2),
        ("Exit", "empty", 3, 2),
        ("Enter", "inner.txt", 4, 2),
        ("Exit", "inner.txt", 4, 2),
        ("Exit", "b", 2, 1),
        ("Enter", "c", 5, 1),
        ("Exit", "c", 5, 1),
        ("Exit", "top", 0, 0),
    ]
    assert leaves["a.bin"] == list(range(chunk_count((top_max(CS) + 40) * CS, CS)))


def test_every_block_is_named_once_and_deferred_parts_walk_on_when_resumed() -> None:
    master, root, blocks = sealed(sample())
    named, rounds = drive_with_gaps(TreeWalk(master, root), blocks, set())
    assert rounds == 1 and sorted(named) == sorted(blocks)
    # nothing held at first: one round per level of metadata, and every block still named once
    named, rounds = drive_with_gaps(TreeWalk(master, root), blocks, set(blocks))
    assert sorted(named) == sorted(blocks)
    # root; its listing; a.bin, b, c; a.bin's index and b's listing; b's entries; empty's listing; none
    assert rounds == 7


def test_a_listing_block_not_yet_readable_is_announced_ahead_and_decoded_in_order() -> None:
    entries: dict[str, Item] = {
        f"file-{i:04d}": File(b"") for i in range(1000)
    }  # a listing of several blocks
    master, root, blocks = sealed(Dir(entries))
    walk = TreeWalk(master, root)
    first = walk.next()
    assert isinstance(first, Need) and first.kind == "node"
    walk.give(blocks[first.cid])
    assert isinstance(walk.next(), Enter)
    listing0 = walk.next()
    assert isinstance(listing0, Need) and listing0.kind == "listing"
    walk.defer()
    ahead = []
    while isinstance(step := walk.next(), Ahead):
        ahead.append(step.cid)
    assert len(ahead) >= 2 and isinstance(step, Exit)  # the root's Exit: all else waits on block 0
    assert walk.next() is None and not walk.done and walk.deferred == 1
    walk.resume(listing0.cid)
    names = []
    for step in walk.steps(blocks.__getitem__):
        if isinstance(step, Enter):
            names.append(step.info.name)
    assert names == sorted(entries)
    assert walk.done


def test_the_reference_opener_gets_back_what_was_sealed() -> None:
    item = sample()
    master, root, blocks = sealed(item)
    assert open_tree(master, root, blocks.__getitem__) == ("top", item)


def test_a_node_at_depth_255_is_read_and_one_at_256_refused_with_or_without_defers() -> None:
    master, root, blocks = sealed(chain(MAX_DEPTH))
    item = open_tree(master, root, blocks.__getitem__)[1]
    for _ in range(MAX_DEPTH):  # (== would recurse too deep here)
        assert isinstance(item, Dir)
        item = item.entries["d"]
    assert item == File(b"deep")
    master, root, blocks = sealed(chain(MAX_DEPTH + 1))
    with pytest.raises(ManifestError, match="nested too deeply"):
        open_tree(master, root, blocks.__getitem__)
    with pytest.raises(ManifestError, match="nested too deeply"):
        drive_with_gaps(TreeWalk(master, root), blocks, set(blocks))
    # an empty directory at 255 is a node at 255 too
    deep: Item = Dir({"d": Dir()})
    for _ in range(MAX_DEPTH - 1):
        deep = Dir({"d": deep})
    master, root, blocks = sealed(deep)
    open_tree(master, root, blocks.__getitem__)


def duplicated_number() -> tuple[bytes, bytes, Blocks]:
    master = new_key()
    blocks: Blocks = {}
    a = hand_node(blocks, master, 1, "file", b"a")
    b = hand_node(blocks, master, 1, "file", b"b")  # the same number, so it opens as well
    listing = encode_entry(Entry("a", 1, a)) + encode_entry(Entry("b", 1, b))
    return master, hand_node(blocks, master, 0, "dir", listing, "top"), blocks


def test_a_node_number_used_twice_is_refused_with_or_without_defers() -> None:
    master, root, blocks = duplicated_number()
    with pytest.raises(ManifestError, match="reuses a node number"):
        open_tree(master, root, blocks.__getitem__)
    with pytest.raises(ManifestError, match="reuses a node number"):
        drive_with_gaps(TreeWalk(master, root), blocks, set(blocks))


def test_a_tree_of_more_than_max_nodes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import protocol.walk

    master, root, blocks = sealed(Dir({"a": File(b""), "b": File(b"")}))
    open_tree(master, root, blocks.__getitem__)
    monkeypatch.setattr(protocol.walk, "MAX_NODES", 2)
    with pytest.raises(ManifestError, match="too many entries"):
        open_tree(master, root, blocks.__getitem__)


def test_a_block_of_the_wrong_place_is_refused() -> None:
    master, root, blocks = sealed(sample())
    walk = TreeWalk(master, root)
    assert isinstance(walk.next(), Need)
    walk.give(blocks[root])
    assert isinstance(walk.next(), Enter)
    need = walk.next()
    assert isinstance(need, Need) and need.kind == "listing"
    with pytest.raises(ProtocolError):
        walk.give(blocks[root])  # not the listing block asked for


def test_the_walk_refuses_to_be_driven_out_of_turn() -> None:
    master, root, blocks = sealed(File(b"x"))
    walk = TreeWalk(master, root)
    with pytest.raises(RuntimeError):
        walk.give(blocks[root])
    assert isinstance(walk.next(), Need)
    with pytest.raises(RuntimeError):
        walk.next()


# -- a narrowed walk: one path in the tree, or its metadata alone ----------------------------------------


def test_a_selected_path_walks_only_the_folders_on_the_way_and_the_entry() -> None:
    tree = sample()
    master, root, blocks = sealed(tree)
    whole, _ = drive_with_gaps(TreeWalk(master, root), blocks, set(blocks))
    for select in (("b", "inner.txt"), ("b",), ("a.bin",)):
        walk = TreeWalk(master, root, select=select)
        named, _ = drive_with_gaps(walk, blocks, set(blocks))
        assert walk.selected is not None and walk.selected.name == select[-1]
        assert walk.selected.depth == len(select)
        assert set(named) < set(whole) and len(named) == len(set(named))
    # the big file's data is left out when another entry is asked for: a small part of the tree
    walk = TreeWalk(master, root, select=("b", "inner.txt"))
    named, _ = drive_with_gaps(walk, blocks, set(blocks))
    assert len(named) < 12 < len(whole)
    steps = list(TreeWalk(master, root, select=("b", "inner.txt")).steps(blocks.__getitem__))
    assert [s.info.name for s in steps if isinstance(s, Enter)] == ["top", "b", "inner.txt"]
    assert [s.info.name for s in steps if isinstance(s, Leaves)] == ["inner.txt"]


def test_a_path_is_matched_exactly_and_one_that_is_not_there_selects_nothing() -> None:
    master, root, blocks = sealed(Dir({"Caf\u00e9": File(b"x"), "f": File(b"data")}))
    for select in (("cafe\u0301",), ("CAF\u00c9",), ("nope",), ("f", "below-a-file"), ("Caf\u00e9", "x")):
        walk = TreeWalk(master, root, select=select)
        list(walk.steps(blocks.__getitem__))
        assert walk.selected is None, select
        assert walk.done
    walk = TreeWalk(master, root, select=("Caf\u00e9",))
    assert [s.info.name for s in walk.steps(blocks.__getitem__) if isinstance(s, Leaves)] == ["Caf\u00e9"]
    assert walk.selected is not None
    # no path: the root is selected
    walk = TreeWalk(master, root)
    list(walk.steps(blocks.__getitem__))
    assert walk.selected is not None and walk.selected.depth == 0


def test_a_walk_without_data_reads_only_nodes_and_folder_listings() -> None:
    tree = sample()
    master, root, blocks = sealed(tree)
    named = []

    def fetch(cid: bytes) -> bytes:
        named.append(cid)
        return blocks[cid]

    steps = list(TreeWalk(master, root, data=False).steps(fetch))
    assert not [s for s in steps if isinstance(s, Leaves)]
    sizes = {s.info.name: s.info.node.size for s in steps if isinstance(s, Enter)}
    assert sizes.keys() == {"top", "a.bin", "b", "empty", "inner.txt", "c"}
    assert (sizes["a.bin"], sizes["inner.txt"], sizes["c"]) == ((top_max(CS) + 40) * CS, 5, 0)
    # six nodes and one listing block per folder (an empty folder's stream is padded to one block
    # too), none of a.bin's index blocks
    assert len(named) == len(set(named)) == 6 + 3


@pytest.mark.parametrize("select", [(), ("b",), ("a.bin",)])
def test_once_sized_the_walk_knows_the_data_bytes_it_will_reach(select: tuple[str, ...]) -> None:
    master, root, blocks = sealed(sample())
    walk = TreeWalk(master, root, select=select)
    assert not walk.sized
    sized_at: int | None = None  # the data bytes seen when the walk said it was sized
    total = data = 0
    while (step := walk.next()) is not None:
        if isinstance(step, Need):
            walk.give(blocks[step.cid])
            if walk.sized and sized_at is None:
                sized_at, total = data, walk.data_bytes
        elif isinstance(step, Leaves):
            data += sum(len(blocks[cid]) for cid in step.cids)
    assert sized_at is not None and walk.data_bytes == total == data > 0
