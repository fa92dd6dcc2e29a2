"""Corruption tests in the style of tahoe-lafs: damage every byte of every block, and the link, and check
that ``get`` refuses with a Sealbox error and leaves nothing behind. It must never hand back wrong bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.errors import NodeError
from node.files.add import AddResult, add_path
from node.files.get import get_link
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.errors import CorruptBlockError, DecryptError, LinkError, ProtocolError
from protocol.link import ShareLink, parse_link
from protocol.manifest import Entry, EntryDecoder, Node, decode_node, encode_entry, encode_node
from protocol.seal import NodeKeys
from protocol.stream import open_chunk
from protocol.walk import iter_leaves
from tests.helpers import (
    SMALL_CHUNK,
    block_region,
    put_node,
    read_region,
    seal_dir,
    snapshot,
    write_region,
)

REFUSALS = (ProtocolError, NodeError)


def _make_small_tree(root: Path) -> None:
    # a directory, a directory in it and a file in that: every kind of node block, in six blocks (a
    # tree with more files costs an fsync per refused get, and this test runs a get per byte)
    root.mkdir()
    (root / "sub").mkdir()
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 2)


def _assert_refused(repo: Repo, link: ShareLink, out: Path) -> None:
    dest = out / "result"
    with pytest.raises(REFUSALS):
        get_link(repo, link, dest, workers=1)
    assert not os.path.lexists(dest)
    assert os.listdir(out) == []  # no temp file or directory left behind


def _flip_every_byte(repo: Repo, result: AddResult, out: Path) -> int:
    """Flip each byte of each block of ``result``'s pin in turn; returns how many flips were refused."""
    flips = 0
    for cid in repo.pin_blocks(result.pin.root):
        path, offset, length = block_region(repo, cid)
        original = read_region(path, offset, length)
        assert len(original) == length
        fd = os.open(path, os.O_RDWR)
        try:
            for i, byte in enumerate(original):
                os.pwrite(fd, bytes([byte ^ 0x01]), offset + i)
                _assert_refused(repo, result.link, out)
                os.pwrite(fd, bytes([byte]), offset + i)
                flips += 1
        finally:
            os.close(fd)
        assert read_region(path, offset, length) == original
    return flips


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def test_every_byte_of_a_file_is_checked(repo: Repo, tmp_path: Path, out: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(os.urandom(3 * 1024))
    result = add_path(repo, source)
    flips = _flip_every_byte(repo, result, out)
    assert flips == result.pin.stored
    # undamaged again: the exact bytes come back
    get_link(repo, result.link, out / "file.bin")
    assert (out / "file.bin").read_bytes() == source.read_bytes()


def test_every_byte_of_a_directory_is_checked(repo: Repo, tmp_path: Path, out: Path) -> None:
    source = tmp_path / "tree"
    _make_small_tree(source)
    result = add_path(repo, source)
    assert result.pin.blocks == 6
    flips = _flip_every_byte(repo, result, out)
    assert flips == result.pin.stored
    get_link(repo, result.link, out / "tree")
    assert snapshot(out / "tree") == snapshot(source)


def test_every_character_of_the_link_is_checked(repo: Repo, tmp_path: Path) -> None:
    source = tmp_path / "named.txt"
    source.write_bytes(b"hello")
    text = str(add_path(repo, source, display_name="R\u00e9sum\u00e9 2024", with_size=True).link)
    assert parse_link(text).name == "R\u00e9sum\u00e9 2024"
    for i, char in enumerate(text):
        damaged = text[:i] + chr(ord(char) ^ 0x01) + text[i + 1 :]
        with pytest.raises(LinkError):
            parse_link(damaged)
    for cut in range(len(text)):
        with pytest.raises(LinkError):
            parse_link(text[:cut])


def _add_multi_block(repo: Repo, path: Path, size: int, seed: bytes = b"") -> AddResult:
    path.write_bytes((seed + os.urandom(size))[:size])
    result = add_path(repo, path, chunk_size=SMALL_CHUNK)
    assert result.pin.blocks > 2
    return result


def test_truncated_blocks_are_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    result = _add_multi_block(repo, tmp_path / "f", 5 * SMALL_CHUNK + 100)
    for cid in repo.pin_blocks(result.pin.root):
        path, offset, length = block_region(repo, cid)
        pack = path.read_bytes()
        # the pack cut inside this block: the block is one byte short, and every later block is gone
        os.truncate(path, offset + length - 1)
        _assert_refused(repo, result.link, out)
        os.truncate(path, offset)
        _assert_refused(repo, result.link, out)
        path.write_bytes(pack)
    get_link(repo, result.link, out / "f")
    assert (out / "f").read_bytes() == (tmp_path / "f").read_bytes()


def test_a_data_block_damaged_at_rest_is_reported_as_damaged_not_as_a_wrong_key(
    repo: Repo, tmp_path: Path, out: Path
) -> None:
    """``get`` opens data blocks from the repo without hashing them again (the repo hashed each when it
    stored it); a block that then fails to open is hashed, so the error names the damage."""
    result = _add_multi_block(repo, tmp_path / "f", 5 * SMALL_CHUNK + 100)
    keys = NodeKeys(result.link.key, 0)
    node = decode_node(keys.node.open(0, repo.blocks.get(result.link.root)), root=True)
    leaves = list(iter_leaves(node, keys, repo.blocks.get))
    position, cid = leaves[2]
    block = repo.blocks.get(cid)
    assert open_chunk(keys.data, node, position, cid, block, verified=True) == open_chunk(
        keys.data, node, position, cid, block
    )
    damaged = bytes([block[0] ^ 1]) + block[1:]
    with pytest.raises(CorruptBlockError, match="is corrupted"):
        open_chunk(keys.data, node, position, cid, damaged, verified=True)
    with pytest.raises(CorruptBlockError):
        open_chunk(keys.data, node, position, cid, damaged[:-1], verified=True)
    with pytest.raises(DecryptError):  # intact, but the wrong key: the hash matches, the tag does not
        open_chunk(NodeKeys(bytes(32), 0).data, node, position, cid, block, verified=True)
    path, offset, _length = block_region(repo, cid)
    write_region(path, offset, damaged[:1])
    with pytest.raises(CorruptBlockError, match="is corrupted"):
        get_link(repo, result.link, out / "f", workers=1)
    assert os.listdir(out) == []


def test_missing_pack_is_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    result = _add_multi_block(repo, tmp_path / "f", 3 * SMALL_CHUNK)
    (pack,) = {block_region(repo, cid)[0] for cid in repo.pin_blocks(result.pin.root)}
    pack.rename(tmp_path / "moved")
    fresh = Repo.open(repo.path)  # no pack file already open
    try:
        _assert_refused(fresh, result.link, out)
        (tmp_path / "moved").rename(pack)
        get_link(fresh, result.link, out / "f")
    finally:
        fresh.close()
    assert (out / "f").read_bytes() == (tmp_path / "f").read_bytes()


def _swap_regions(repo: Repo, a: bytes, b: bytes) -> tuple[bytes, bytes]:
    """Exchange the stored bytes of blocks ``a`` and ``b`` (of equal length); returns the originals."""
    (path_a, off_a, len_a), (path_b, off_b, len_b) = block_region(repo, a), block_region(repo, b)
    assert len_a == len_b
    block_a, block_b = read_region(path_a, off_a, len_a), read_region(path_b, off_b, len_b)
    write_region(path_a, off_a, block_b)
    write_region(path_b, off_b, block_a)
    return block_a, block_b


def _open_root(repo: Repo, link: ShareLink) -> tuple[Node, NodeKeys]:
    keys = NodeKeys(link.key, 0)
    return decode_node(keys.node.open(0, repo.blocks.get(link.root)), root=True), keys


def _reseal_root(repo: Repo, link: ShareLink, node: Node) -> ShareLink:
    """Store ``node`` as the root under the link's own key: what an attacker holding the key could do."""
    block = NodeKeys(link.key, 0).node.seal(0, encode_node(node))
    repo.blocks.put(cid_of(block), block)
    return ShareLink(cid_of(block), link.key)


def _with_top(node: Node, top: tuple[bytes, ...]) -> Node:
    return Node(node.kind, node.size, node.chunk_size, node.level, top, node.executable, node.name)


def test_swapped_block_files_between_two_files_are_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    size = 4 * SMALL_CHUNK
    a = _add_multi_block(repo, tmp_path / "a", size)
    b = _add_multi_block(repo, tmp_path / "b", size)
    node_a, _ = _open_root(repo, a.link)
    node_b, _ = _open_root(repo, b.link)
    assert node_a.level == node_b.level == 0
    # the bytes of b's block 1 stored where a's block 1 was, and the other way round
    _swap_regions(repo, node_a.top[1], node_b.top[1])
    _assert_refused(repo, a.link, out)
    _assert_refused(repo, b.link, out)
    _swap_regions(repo, node_a.top[1], node_b.top[1])
    # a manifest (resealed under a's key) that points at b's block: it hashes right but will not open
    forged = _reseal_root(repo, a.link, _with_top(node_a, (node_a.top[0], node_b.top[1], *node_a.top[2:])))
    with pytest.raises(DecryptError):
        get_link(repo, forged, out / "result", workers=1)
    assert os.listdir(out) == []


def test_reordered_blocks_of_one_file_are_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    a = _add_multi_block(repo, tmp_path / "a", 4 * SMALL_CHUNK)
    node, _ = _open_root(repo, a.link)
    top = node.top
    # swap the stored bytes of two blocks of the same file
    _swap_regions(repo, top[0], top[1])
    _assert_refused(repo, a.link, out)
    _swap_regions(repo, top[0], top[1])
    # a manifest listing the same blocks in another order: each block is bound to its position
    for reordered in ((top[1], top[0], *top[2:]), (top[0], top[0], *top[2:]), tuple(reversed(top))):
        forged = _reseal_root(repo, a.link, _with_top(node, reordered))
        with pytest.raises(REFUSALS):
            get_link(repo, forged, out / "result", workers=1)
        assert os.listdir(out) == []
    get_link(repo, a.link, out / "a")
    assert (out / "a").read_bytes() == (tmp_path / "a").read_bytes()


def test_reordered_index_blocks_are_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    # more than top_max (256) chunks of 16 KiB: the root lists index blocks, not data blocks
    a = _add_multi_block(repo, tmp_path / "a", 257 * SMALL_CHUNK)
    node, _ = _open_root(repo, a.link)
    assert node.level == 1 and len(node.top) == 1
    b = _add_multi_block(repo, tmp_path / "b", 257 * SMALL_CHUNK)
    node_b, _ = _open_root(repo, b.link)
    # an index block of another file (another key) in place of this file's own
    forged = _reseal_root(repo, a.link, _with_top(node, node_b.top))
    with pytest.raises(DecryptError):
        get_link(repo, forged, out / "result", workers=1)
    assert os.listdir(out) == []
    # the same content claimed under a different size cannot reuse the tree
    bigger = Node(node.kind, node.size + 8 * SMALL_CHUNK, node.chunk_size, 1, node.top, False, node.name)
    with pytest.raises(REFUSALS):
        get_link(repo, _reseal_root(repo, a.link, bigger), out / "result", workers=1)
    assert os.listdir(out) == []


def _open_inner(repo: Repo, keys: NodeKeys, cid: bytes) -> Node:
    return decode_node(keys.node.open(0, repo.blocks.get(cid)), root=False)


def test_blocks_swapped_between_files_of_one_tree_are_refused(repo: Repo, tmp_path: Path, out: Path) -> None:
    # the files of a tree share the master key, but each node has its own subkeys
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one").write_bytes(os.urandom(3 * SMALL_CHUNK))
    (tree / "two").write_bytes(os.urandom(3 * SMALL_CHUNK))
    result = add_path(repo, tree, chunk_size=SMALL_CHUNK)
    master = result.link.key
    root, root_keys = _open_root(repo, result.link)
    assert root.level == 0
    listing = b"".join(
        root_keys.data.open(i, repo.blocks.get(cid))[: root.size] for i, cid in enumerate(root.top)
    )
    entries = list(EntryDecoder().feed(listing))
    assert [(e.name, e.number) for e in entries] == [("one", 1), ("two", 2)]
    one = _open_inner(repo, NodeKeys(master, 1), entries[0].cid)
    two = _open_inner(repo, NodeKeys(master, 2), entries[1].cid)
    assert one.size == two.size and one.level == two.level == 0

    # two's first block stored where one's first block was: refused by its hash
    _swap_regions(repo, one.top[0], two.top[0])
    _assert_refused(repo, result.link, out)
    _swap_regions(repo, one.top[0], two.top[0])

    # a tree forged with the master key whose file 'one' lists two's first block: it will not open
    forged_one = put_node(repo, NodeKeys(master, 1), _with_top(one, (two.top[0], *one.top[1:])))
    forged_listing = encode_entry(Entry("one", 1, forged_one)) + encode_entry(entries[1])
    forged_root = seal_dir(repo, master, 0, forged_listing, name="tree")
    with pytest.raises(DecryptError):
        get_link(repo, ShareLink(forged_root, master), out / "result", workers=1)
    assert os.listdir(out) == []

    # and one whose entries swap the node numbers of 'one' and 'two'
    swapped = encode_entry(Entry("one", 2, entries[0].cid)) + encode_entry(Entry("two", 1, entries[1].cid))
    with pytest.raises(DecryptError):
        get_link(
            repo, ShareLink(seal_dir(repo, master, 0, swapped, name="tree"), master), out / "r", workers=1
        )
    assert os.listdir(out) == []

    get_link(repo, result.link, out / "tree")
    assert snapshot(out / "tree") == snapshot(tree)
