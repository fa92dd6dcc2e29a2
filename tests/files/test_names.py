"""Names in manifests come from whoever made the link: unsafe ones are refused and nothing escapes."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from node.files.get import get_link
from node.store.repo import Repo
from protocol.cid import cid_of
from protocol.errors import ManifestError, UnsafeNameError
from protocol.link import ShareLink
from protocol.manifest import Entry, EntryDecoder, Node, decode_node, encode_entry, encode_node
from protocol.names import check_name
from protocol.seal import new_key
from tests.helpers import listing, seal_dir, seal_file

UNSAFE = [
    "",
    ".",
    "..",
    "a/b",
    "/",
    "/etc",
    "../x",
    "a\\b",
    "..\\..\\x",
    "a\x00b",
    "line\nbreak",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "\x1b[31mred",
    "x" * 256,
    "\u00e9" * 128,  # 256 UTF-8 bytes
    "CON",
    "con",
    "con.txt",
    "Con.tar.gz",
    "CON .txt",
    "LPT1",
    "lpt9.log",
    "COM1",
    "nul",
    "NUL.txt",
    "aux",
    "PRN",
    "conin$",
    "\ud800",  # a lone surrogate: not UTF-8
]

SAFE = [
    "a",
    "a..b",
    ".hidden",
    "file.txt",
    "x" * 255,
    "\u00e9" * 127,
    "\u65e5\u672c\u8a9e.txt",
    "\U0001f600",
    "with space",
    "CONSOLE",
    "com10",
    "LPT0",
    "nul_",
    "-rf",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(name)


@pytest.mark.parametrize("name", SAFE)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("value", [None, b"bytes", 1, ["a"]])
def test_check_name_refuses_non_text(value: object) -> None:
    with pytest.raises(UnsafeNameError):
        check_name(value)


def test_unsafe_name_error_is_a_manifest_error() -> None:
    assert issubclass(UnsafeNameError, ManifestError)


def test_entry_decoder_refuses_unsafe_names() -> None:
    cid = cid_of(b"child")
    for name in ("..", "a/b", "nul.txt"):
        raw = msgpack.packb([name, 1, cid], use_bin_type=True)
        with pytest.raises(UnsafeNameError):
            list(EntryDecoder().feed(raw))


def test_root_node_with_unsafe_name_is_refused() -> None:
    node = Node("file", 0, 16 * 1024, 0, (cid_of(b"x"),), False, "../escape")
    with pytest.raises(UnsafeNameError):
        decode_node(encode_node(node), root=True)


# -- end to end: a malicious tree sealed by hand ----------------------------------------------------------


def _raw_entry(name: str, number: int, cid: bytes) -> bytes:
    packed: bytes = msgpack.packb([name, number, cid], use_bin_type=True)
    return packed


def _malicious_listing(
    repo: Repo, master: bytes, names: list[str], numbers: list[int] | None = None
) -> bytes:
    """An entry stream with ``names`` in the given order, each a small file; numbers 1, 2, ... by default."""
    numbers = numbers or list(range(1, len(names) + 1))
    return b"".join(
        _raw_entry(name, number, seal_file(repo, master, number, f"payload {i}".encode()))
        for i, (name, number) in enumerate(zip(names, numbers, strict=True))
    )


MALICIOUS = {
    "dot-dot": (["a", ".."], None, UnsafeNameError),
    "slash": (["a", "a/b"], None, UnsafeNameError),
    "absolute": (["/tmp/x"], None, UnsafeNameError),
    "backslash": (["..\\x"], None, UnsafeNameError),
    "device": (["a", "nul.txt"], None, UnsafeNameError),
    "duplicate": (["a", "b", "b"], None, ManifestError),
    "unsorted": (["b", "a"], None, ManifestError),
    "same-number": (["a", "b"], [1, 1], ManifestError),
    "root-number": (["a"], [0], ManifestError),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_tree_is_refused_and_nothing_is_written(repo: Repo, tmp_path: Path, case: str) -> None:
    names, numbers, error = MALICIOUS[case]
    master = new_key()
    # the bad entry comes after a good one where it can, so a file is written before the refusal
    stream = _malicious_listing(repo, master, names, numbers)
    root = seal_dir(repo, master, 0, stream, name="innocent")
    work = tmp_path / "work"
    dest = work / "inbox" / "out"
    dest.parent.mkdir(parents=True)
    (work / "x").write_text("outside")
    before = listing(work)
    with pytest.raises(error):
        get_link(repo, ShareLink(root, master), dest)
    assert not os.path.lexists(dest)
    assert os.listdir(dest.parent) == []
    assert listing(work) == before
    assert (work / "x").read_text() == "outside"


def test_malicious_nested_tree_is_refused(repo: Repo, tmp_path: Path) -> None:
    master = new_key()
    inner = seal_dir(repo, master, 2, _raw_entry("..", 3, seal_file(repo, master, 3, b"escaped")))
    outer = _raw_entry("a.txt", 1, seal_file(repo, master, 1, b"fine")) + _raw_entry("sub", 2, inner)
    root = seal_dir(repo, master, 0, outer, name="tree")
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    before = listing(work)
    with pytest.raises(UnsafeNameError):
        get_link(repo, ShareLink(root, master), work / "inbox")
    assert listing(work) == before


def test_root_named_unsafely_is_refused(repo: Repo, tmp_path: Path) -> None:
    master = new_key()
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    for name in ("..", "a/b", "nul"):
        root = seal_file(repo, master, 0, b"data", name=name)
        with pytest.raises(UnsafeNameError):
            get_link(repo, ShareLink(root, master), work / "inbox")
        assert listing(work) == {"inbox"}


def test_hand_built_tree_round_trips(repo: Repo, tmp_path: Path) -> None:
    # the same construction with good names works, so the refusals above are about the names
    master = new_key()
    names = ["..a", ".b", "c d", "\u00e9"]
    stream = b"".join(
        encode_entry(Entry(n, i, seal_file(repo, master, i, n.encode()))) for i, n in enumerate(names, 1)
    )
    root = seal_dir(repo, master, 0, stream, name="tree")
    got = get_link(repo, ShareLink(root, master), tmp_path)
    assert got.path == tmp_path / "tree"
    assert sorted(os.listdir(got.path)) == sorted(names)
    for n in names:
        assert (got.path / n).read_bytes() == n.encode()
