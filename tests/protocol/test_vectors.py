"""The spec's test vectors (specs/vectors/*.json): they are current, and this code reads and writes them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from node.files.add import add_path
from node.files.get import get_link
from node.store.repo import Repo
from protocol.cid import cid_from_text, cid_of, cid_to_text
from protocol.errors import LinkError, ManifestError
from protocol.link import ShareLink, format_link, parse_link
from protocol.manifest import decode_node
from protocol.padding import padded_size
from protocol.seal import NodeKeys, subkey
from protocol.tree import Dir, File, Item, open_tree, seal_tree

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "specs" / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def gen_vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_vectors", ROOT / "scripts" / "gen_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_vectors"] = module
    spec.loader.exec_module(module)
    return module


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


@pytest.mark.parametrize("vector", tree_cases(), ids=lambda v: v["case"])
def test_tree_vectors_seal_and_open(vector: dict[str, Any]) -> None:
    content = vector["content"]
    seed_data = None
    if "data_seed" in content:
        seed_data = gen_vectors().data(content["data_seed"], content["length"])
    item = build_item(content, seed_data)
    master = bytes.fromhex(vector["master_key"])
    root, blocks = seal_tree(master, vector["name"], item, vector["chunk_size"])
    assert cid_to_text(root) == vector["root"]
    if "blocks" in vector:
        expected = {cid_from_text(c): bytes.fromhex(b) for c, b in vector["blocks"].items()}
        assert blocks == expected
    else:
        cids = sorted(cid_to_text(c) for c in blocks)
        assert len(cids) == vector["block_count"]
        assert hashlib.sha256("\n".join(cids).encode()).hexdigest() == vector["cids_sha256"]
    name, opened = open_tree(master, root, blocks.__getitem__)
    assert (name, opened) == (vector["name"], item)


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


@pytest.mark.parametrize("row", load("links.json")["invalid"], ids=lambda r: r["error"])
def test_invalid_link_vectors(row: dict[str, str]) -> None:
    with pytest.raises(LinkError, match=row["error"]):
        parse_link(row["link"])


@pytest.mark.parametrize("row", load("invalid-nodes.json"), ids=lambda r: r["case"])
def test_invalid_node_vectors_are_refused(row: dict[str, str], tmp_path: Path) -> None:
    """A root block that hashes and opens but whose map repeats a key (or has a bytes key, or nests too
    deep) is refused by the reference opener and by node/files/get.py, with nothing written."""
    master, root = bytes.fromhex(row["master_key"]), cid_from_text(row["root"])
    block = bytes.fromhex(row["block"])
    assert NodeKeys(master, 0).node.open(0, block) == bytes.fromhex(row["plaintext"])
    with pytest.raises(ManifestError, match=row["error"]):
        decode_node(bytes.fromhex(row["plaintext"]), root=True)
    with pytest.raises(ManifestError, match=row["error"]):
        open_tree(master, root, {root: block}.__getitem__)
    repo = Repo.open(tmp_path / "repo")
    repo.blocks.put(root, block)
    with pytest.raises(ManifestError, match=row["error"]):
        get_link(repo, ShareLink(root, master), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
