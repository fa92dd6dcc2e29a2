"""The spec's test vectors (specs/vectors/*.json): they are current, and this code reads and writes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from node.files.add import add_path
from node.files.get import get_link
from node.store.repo import Repo
from protocol.cid import CID_LEN, cid_from_text, cid_of, cid_to_text
from protocol.errors import LinkError, ManifestError, ProtocolError, UnsafeNameError
from protocol.link import ShareLink, format_link, parse_link
from protocol.manifest import Entry, EntryDecoder, decode_node, encode_entry, fanout, open_node
from protocol.names import FolderNames, check_name, colliding_names, fold_name
from protocol.padding import padded_size
from protocol.seal import NodeKeys, subkey
from protocol.stream import open_content
from protocol.tree import Dir, File, Item, open_tree, seal_tree
from protocol.walk import iter_leaves
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "specs" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def gen_vectors() -> ModuleType:
    return load_script("gen_vectors")


def test_vector_files_are_current() -> None:
    built = gen_vectors().build()
    for filename, value in built.items():
        assert json.loads((VECTORS / filename).read_text()) == value, f"{filename} is stale"


@pytest.mark.parametrize("row", load("padding.json"), ids=lambda r: str(r["length"]))
def test_padding_vectors(row: dict[str, int]) -> None:
    assert padded_size(row["length"]) == row["padded"]


def test_key_and_seal_vectors() -> None:
    vectors = load("keys.json")
    master = bytes.fromhex(vectors["master_key"])
    for row in vectors["subkeys"]:
        assert subkey(master, row["label"], row["number"], row.get("level")).hex() == row["subkey"]
    for row in vectors["seals"]:
        keys = NodeKeys(master, row["number"])
        block = bytes.fromhex(row["block"])
        assert keys.data.seal(row["position"], bytes.fromhex(row["plaintext"])) == block
        assert keys.data.open(row["position"], block) == bytes.fromhex(row["plaintext"])
        assert cid_to_text(cid_of(block)) == row["cid"]
        assert len(block) == len(row["plaintext"]) // 2 + 16


def build_item(desc: dict[str, Any], seed_data: bytes | None = None) -> Item:
    if desc["kind"] == "file":
        data = seed_data if seed_data is not None else bytes.fromhex(desc["data"])
        return File(data, desc["executable"])
    return Dir({name: build_item(child) for name, child in desc["entries"].items()})


def tree_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load("trees.json")
    return cases


def vector_content(content: dict[str, Any]) -> bytes:
    """The bytes of a generated file: ``data(seed, length)``, or ``length`` zeros."""
    if "data_seed" in content:
        generated: bytes = gen_vectors().data(content["data_seed"], content["length"])
        return generated
    assert content["zeros"] is True
    return bytes(content["length"])


@pytest.mark.parametrize(
    "vector",
    [v for v in tree_cases() if not v["content"].get("zeros")],  # the 1.9 GB one: by the generator only
    ids=lambda v: v["case"],
)
def test_tree_vectors_seal_and_open(vector: dict[str, Any]) -> None:
    content = vector["content"]
    item = File(vector_content(content)) if "length" in content else build_item(content)
    master = bytes.fromhex(vector["master_key"])
    root, blocks = seal_tree(master, vector["name"], item, vector["chunk_size"])
    assert cid_to_text(root) == vector["root"]
    if "blocks" in vector:
        expected = {cid_from_text(c): bytes.fromhex(b) for c, b in vector["blocks"].items()}
        assert blocks == expected
    else:
        cids = sorted(cid_to_text(c) for c in blocks)
        assert len(cids) == vector["block_count"]
        assert sum(len(b) for b in blocks.values()) == vector["block_bytes"]
        assert hashlib.sha256("\n".join(cids).encode()).hexdigest() == vector["cids_sha256"]
        node, keys = open_node(master, 0, root, blocks[root], root=True)
        leaves = b"".join(cid for _, cid in iter_leaves(node, keys, blocks.__getitem__))
        assert hashlib.sha256(leaves).hexdigest() == vector["leaves_sha256"]
        for row in vector["sample_blocks"]:
            assert blocks[cid_from_text(row["cid"])] == bytes.fromhex(row["block"])
    name, opened = open_tree(master, root, blocks.__getitem__)
    assert (name, opened) == (vector["name"], item)


@pytest.mark.parametrize("vector", [v for v in tree_cases() if "sample_blocks" in v], ids=lambda v: v["case"])
def test_sample_blocks_open_from_the_root_down(vector: dict[str, Any]) -> None:
    """A decoder given only the shipped blocks reaches every sampled data block from the root through
    the index blocks (each found in its parent, of the right length, opened at its level and position)
    and reads the file's bytes there."""
    master, root = bytes.fromhex(vector["master_key"]), cid_from_text(vector["root"])
    shipped = {cid_from_text(row["cid"]): bytes.fromhex(row["block"]) for row in vector["sample_blocks"]}
    node, keys = open_node(master, 0, root, shipped[root], root=True)
    assert node.counts() == vector["levels"] and node.level == len(vector["levels"]) - 1 >= 1
    assert (node.name, node.size, node.chunk_size) == (vector["name"], vector["content"]["length"], 16384)
    fan, cs = fanout(node.chunk_size), node.chunk_size
    content = vector_content(vector["content"])
    data_rows = [row for row in vector["sample_blocks"] if row["stream"] == "data"]
    assert len(data_rows) >= 3
    for row in data_rows:
        position = row["position"]
        cid = node.top[position // fan**node.level]
        for level in range(node.level, 0, -1):
            index_position = position // fan**level
            plain = keys.index(level).open(index_position, shipped[cid])
            assert len(plain) == CID_LEN * min(fan, vector["levels"][level - 1] - index_position * fan)
            child = (position // fan ** (level - 1)) % fan
            cid = plain[child * CID_LEN : (child + 1) * CID_LEN]
        assert cid_to_text(cid) == row["cid"]
        got = open_content(keys.data, node, position, cid, shipped[cid])
        assert got == content[position * cs : (position + 1) * cs]


def write_item(path: Path, item: Item) -> None:
    if isinstance(item, File):
        path.write_bytes(item.data)
        path.chmod(0o755 if item.executable else 0o644)
    else:
        path.mkdir()
        for name, child in item.entries.items():
            write_item(path / name, child)


def read_item(path: Path) -> Item:
    if path.is_dir():
        return Dir({p.name: read_item(p) for p in path.iterdir()})
    return File(path.read_bytes(), bool(path.stat().st_mode & 0o100))


@pytest.mark.parametrize("vector", [v for v in tree_cases() if "blocks" in v], ids=lambda v: v["case"])
def test_node_get_reads_vector_blocks(vector: dict[str, Any], tmp_path: Path) -> None:
    """The streaming reader (node/files/get.py) rebuilds each vector from its blocks alone."""
    repo = Repo.open(tmp_path / "repo")
    for cid, block in vector["blocks"].items():
        repo.blocks.put(cid_from_text(cid), bytes.fromhex(block))
    link = ShareLink(cid_from_text(vector["root"]), bytes.fromhex(vector["master_key"]))
    result = get_link(repo, link, tmp_path / "out")
    assert read_item(result.path) == build_item(vector["content"])


def test_streaming_adder_writes_the_reference_format(tmp_path: Path) -> None:
    """What node/files/add.py stores from disk opens with the reference opener, byte for byte."""
    tree = Dir(
        {
            "a": File(b"x" * 70_000, executable=True),
            "b": Dir({"c": File(b""), "d": Dir()}),
            "\u00e9": File(b"accent"),
        }
    )
    write_item(tmp_path / "tree", tree)
    repo = Repo.open(tmp_path / "repo")
    result = add_path(repo, tmp_path / "tree", chunk_size=16 * 1024)
    name, opened = open_tree(result.link.key, result.link.root, repo.blocks.get)
    assert (name, opened) == ("tree", tree)
    # and the reference sealer, given the same key, makes the very same blocks
    root, blocks = seal_tree(result.link.key, "tree", tree, 16 * 1024)
    assert root == result.link.root
    assert set(blocks) == set(repo.pin_blocks(root))


@pytest.mark.parametrize("row", load("links.json")["valid"], ids=lambda r: r["link"][-8:])
def test_valid_link_vectors(row: dict[str, Any]) -> None:
    link = parse_link(row["link"])
    assert cid_to_text(link.root) == row["root"]
    assert link.key.hex() == row["key"]
    assert (link.name, link.size, list(link.peers)) == (row["name"], row["size"], row["peers"])
    assert format_link(link) == row["link"]


@pytest.mark.parametrize("row", load("links.json")["invalid"], ids=lambda r: r["why"])
def test_invalid_link_vectors(row: dict[str, str]) -> None:
    with pytest.raises(LinkError) as refused:
        parse_link(row["link"])
    assert refused.value.category == row["category"]


@pytest.mark.parametrize("row", load("invalid-nodes.json"), ids=lambda r: r["case"])
def test_invalid_node_vectors_are_refused(row: dict[str, str], tmp_path: Path) -> None:
    """A root block that hashes and opens but whose map repeats a key (or has a bytes key, or nests too
    deep) is refused by the reference opener and by node/files/get.py, with nothing written."""
    master, root = bytes.fromhex(row["master_key"]), cid_from_text(row["root"])
    block = bytes.fromhex(row["block"])
    assert NodeKeys(master, 0).node.open(0, block) == bytes.fromhex(row["plaintext"])
    for refuse in (
        lambda: decode_node(bytes.fromhex(row["plaintext"]), root=True),
        lambda: open_tree(master, root, {root: block}.__getitem__),
    ):
        with pytest.raises(ManifestError) as refused:
            refuse()
        assert refused.value.category == row["category"]
    repo = Repo.open(tmp_path / "repo")
    repo.blocks.put(root, block)
    with pytest.raises(ManifestError) as refused:
        get_link(repo, ShareLink(root, master), tmp_path / "out")
    assert refused.value.category == row["category"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("row", load("invalid-trees.json"), ids=lambda r: r["case"])
def test_invalid_tree_vectors_are_refused(row: dict[str, Any], tmp_path: Path) -> None:
    """Whole trees whose folder breaks a rule of its entries (names that fold alike, unsafe names,
    order): the reference opener and node/files/get.py refuse them with the vector's category, and
    get writes nothing."""
    master, root = bytes.fromhex(row["master_key"]), cid_from_text(row["root"])
    blocks = {cid_from_text(c): bytes.fromhex(b) for c, b in row["blocks"].items()}
    with pytest.raises(ProtocolError) as refused:
        open_tree(master, root, blocks.__getitem__)
    assert refused.value.category == row["category"]
    repo = Repo.open(tmp_path / "repo")
    for cid, block in blocks.items():
        repo.blocks.put(cid, block)
    (tmp_path / "out").mkdir()
    with pytest.raises(ProtocolError) as refused:
        get_link(repo, ShareLink(root, master), tmp_path / "out")
    assert refused.value.category == row["category"]
    assert list((tmp_path / "out").iterdir()) == []


def test_name_vectors() -> None:
    names = load("names.json")
    for row in names["safe"]:
        assert row["name"].encode().hex() == row["utf8"]
        assert check_name(row["name"]) == row["name"]
    for row in names["unsafe"]:
        assert row["name"].encode().hex() == row["utf8"]
        with pytest.raises(UnsafeNameError) as refused:
            check_name(row["name"])
        assert refused.value.category == row["category"]
    for row in names["colliding"] + names["distinct"]:
        assert [fold_name(n).encode().hex() for n in row["names"]] == row["folded"]
        collides = "category" in row
        assert (colliding_names(row["names"]) is not None) == collides
        # the decoder's view: the names as one folder's entries, in UTF-8 order
        decoder = EntryDecoder()
        ordered = sorted(row["names"], key=lambda n: n.encode())
        stream = b"".join(encode_entry(Entry(n, i, cid_of(n.encode()))) for i, n in enumerate(ordered, 1))
        if collides:
            with pytest.raises(UnsafeNameError) as refused:
                list(decoder.feed(stream))
            assert refused.value.category == row["category"]
        else:
            assert [e.name for e in decoder.feed(stream)] == ordered
        folder = FolderNames()
        folder.add(row["names"][0])
        if collides:
            with pytest.raises(UnsafeNameError):
                folder.add(row["names"][1])
